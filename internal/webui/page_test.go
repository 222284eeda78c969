package webui

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// chromiumPath is Debian's chromium; `go tool task test` installs it.
const chromiumPath = "/usr/bin/chromium"

// headless starts a headless chromium for the test and returns a tab.
func headless(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		testenv.Missing(t, "the upload page test needs %s (apt-get install chromium): %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true))
	alloc, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// TestUploadPagePlaysWhenPlayable: the simple upload page starts its player the
// moment the job it follows is playable (playable_at, still transcoding),
// keeps that player at ready, and shows the MP4 link once the download
// is built after ready.
func TestUploadPagePlaysWhenPlayable(t *testing.T) {
	ctx := headless(t)
	var phase, assetGets atomic.Int32 // phase: 0 transcoding, 1 playable, 2 ready, 3 download built
	mux := http.NewServeMux()
	mux.Handle(Prefix, Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	const playableAt = `"playable_at":"2026-01-01T00:00:00Z"`
	mux.HandleFunc("GET /v1/jobs/job_1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch phase.Load() {
		case 0:
			fmt.Fprint(w, `{"id":"job_1","asset_id":"ast_1","state":"transcoding","progress":0.1}`)
		case 1:
			fmt.Fprint(w, `{"id":"job_1","asset_id":"ast_1","state":"transcoding","progress":0.3,`+playableAt+`}`)
		default:
			fmt.Fprint(w, `{"id":"job_1","asset_id":"ast_1","state":"ready","progress":1,`+playableAt+`}`)
		}
	})
	mux.HandleFunc("GET /v1/assets/ast_1", func(w http.ResponseWriter, r *http.Request) {
		assetGets.Add(1)
		w.Header().Set("Content-Type", "application/json")
		hls := srv.URL + "/v1/play/ast_1/master.m3u8"
		switch phase.Load() {
		case 0:
			fmt.Fprint(w, `{"id":"ast_1","state":"transcoding","renditions":[],"playback":null}`)
		case 1:
			fmt.Fprintf(w, `{"id":"ast_1","state":"transcoding",%s,"renditions":[{"name":"360p","width":640,"height":360,"state":"playable"}],"playback":{"hls":%q}}`, playableAt, hls)
		case 2:
			fmt.Fprintf(w, `{"id":"ast_1","state":"ready","renditions":[],"playback":{"hls":%q}}`, hls)
		default:
			fmt.Fprintf(w, `{"id":"ast_1","state":"ready","renditions":[],"playback":{"hls":%q,"mp4":%q}}`, hls, srv.URL+"/v1/play/ast_1/download.mp4")
		}
	})
	// The playlists themselves are not the point here: the player may fail
	// on them, it must have started.
	mux.HandleFunc("GET /v1/play/", http.NotFound)

	eval := func(expr string) bool {
		t.Helper()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return ok
	}
	waitFor := func(what, expr string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !eval(expr) {
			if time.Now().After(deadline) {
				ui, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.kilnUI)`))
				t.Fatalf("timed out waiting for %s; kilnUI = %s", what, ui)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/ui/")); err != nil {
		t.Fatal(err)
	}
	eval(`localStorage.setItem('kiln.apiKey', 'kiln_page_test_key'), true`)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/ui/upload.html?follow#job=job_1")); err != nil {
		t.Fatal(err)
	}
	// Count the players the page starts.
	eval(`(function () {
		var attach = window.KilnPlayer.attach;
		window.attached = 0;
		window.KilnPlayer.attach = function () { window.attached++; return attach.apply(this, arguments); };
		return true;
	})()`)
	waitFor("the job followed", `kilnUI.state === 'transcoding'`)
	if eval(`window.kilnPlayer !== undefined || window.attached > 0`) {
		t.Fatal("the player started before the job was playable")
	}

	phase.Store(1)
	waitFor("the player started while transcoding", `window.attached === 1 && kilnUI.playerStartedIn === 'transcoding' && window.kilnPlayer !== undefined`)

	phase.Store(2)
	waitFor("ready", `kilnUI.state === 'ready' && kilnUI.asset && kilnUI.asset.state === 'ready'`)
	if !eval(`window.attached === 1 && document.getElementById('mp4-link').hidden`) {
		t.Fatal("at ready: a second player started, or an MP4 link without a download")
	}
	phase.Store(3)
	waitFor("the MP4 link once the download is built", `!document.getElementById('mp4-link').hidden && window.attached === 1`)
	if n := assetGets.Load(); n < 3 {
		t.Errorf("%d asset requests, want the playable one, the ready one and the download's", n)
	}
}
