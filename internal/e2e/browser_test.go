package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdpmedia "github.com/chromedp/cdproto/media"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// chromiumPath is Debian's chromium; `go tool task test` installs it.
const chromiumPath = "/usr/bin/chromium"

// playTimeout bounds how long a page may take to play past playedSeconds.
const (
	playTimeout   = 60 * time.Second
	playedSeconds = 2.0
)

// browser starts a headless chromium for the test and returns a context for
// one tab in it; console messages and page exceptions are logged when the
// test fails (or runs with -v). Without chromium the test skips, or fails under
// KILN_TEST_REQUIRE_SERVICES=1.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		testenv.Missing(t, "browser tests need %s (apt-get install chromium): %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})

	// Start the browser before anything else uses the tab: the console
	// listener below and the test's first action would otherwise race to
	// launch two on one profile ("SingletonLock: File exists").
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var lines, media []string
	add := func(to *[]string, line string) {
		mu.Lock()
		*to = append(*to, line)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			add(&lines, fmt.Sprintf("[%s] %s (%s:%d)", m.Type, m.Text, m.URL, m.Line))
		}
	})
	// What the media pipeline says (the reason behind a bare "media error
	// 4"), and every response that is not a success: a player's failure is
	// read from these.
	messages := chromedp.Events(ctx, cdpmedia.PlayerMessagesLogged)
	errs := chromedp.Events(ctx, cdpmedia.PlayerErrorsRaised)
	responses := chromedp.Events(ctx, network.ResponseReceived)
	wg.Go(func() {
		for ev, err := range messages {
			if err != nil {
				return
			}
			for _, m := range ev.Messages {
				add(&media, fmt.Sprintf("[%s] %s", m.Level, m.Message))
			}
		}
	})
	wg.Go(func() {
		for ev, err := range errs {
			if err != nil {
				return
			}
			for _, e := range ev.Errors {
				add(&media, fmt.Sprintf("[error] %s %d %s", e.ErrorType, e.Code, e.Data))
			}
		}
	})
	wg.Go(func() {
		for ev, err := range responses {
			if err != nil {
				return
			}
			if r := ev.Response; r.Status >= 300 {
				add(&media, fmt.Sprintf("[http] %d %s", r.Status, r.URL))
			}
		}
	})
	if err := chromedp.Do(ctx, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, cdpmedia.Enable, cdp.Empty{})
		return chromedp.Void{}, err
	}); err != nil {
		t.Fatalf("enable the media domain: %v", err)
	}
	t.Cleanup(func() {
		cancelTab()
		wg.Wait()
		if t.Failed() || testing.Verbose() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("browser console (%d messages):\n%s", len(lines), strings.Join(lines, "\n"))
			t.Logf("media log and failed requests (%d lines):\n%s", len(media), strings.Join(media, "\n"))
		}
	})
	return ctx
}

// playerState is window.kilnPlayer, kept up to date by the UI's player.js.
type playerState struct {
	Ready       bool    `json:"ready"`
	Playing     bool    `json:"playing"`
	Error       string  `json:"error"`
	CurrentTime float64 `json:"currentTime"`
	Duration    float64 `json:"duration"`
	Engine      string  `json:"engine"`
	Warnings    int     `json:"warnings"`
}

const readPlayer = `window.kilnPlayer ? {
	ready: !!kilnPlayer.ready, playing: !!kilnPlayer.playing, error: kilnPlayer.error || "",
	currentTime: kilnPlayer.currentTime || 0, duration: kilnPlayer.duration || 0,
	engine: kilnPlayer.engine || "", warnings: kilnPlayer.warnings || 0,
} : {}`

// waitPlayed waits until the page's player has played past playedSeconds,
// failing at once on a player error.
func waitPlayed(t *testing.T, ctx context.Context) playerState {
	t.Helper()
	deadline := time.Now().Add(playTimeout)
	var st playerState
	for {
		var err error
		st, err = chromedp.Run(ctx, chromedp.Evaluate[playerState](readPlayer))
		if err != nil {
			t.Fatalf("read window.kilnPlayer: %v", err)
		}
		if st.Error != "" {
			// The media log reaches the test in batches: give the one
			// that explains the error time to arrive before failing.
			time.Sleep(2 * time.Second)
			t.Fatalf("player error: %s (state %+v)\npage: %s", st.Error, st, pageText(ctx))
		}
		if st.CurrentTime > playedSeconds {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("video did not play past %.0f s within %s: %+v\npage: %s", playedSeconds, playTimeout, st, pageText(ctx))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func pageText(ctx context.Context) string {
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	for _, dir := range []string{t.TempDir(), os.Getenv("KILN_TEST_SCREENSHOT_DIR")} {
		if dir == "" {
			continue
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Errorf("screenshot: %v", err)
			continue
		}
		t.Logf("screenshot: %s (%d bytes)", path, len(png))
	}
}

// readyAsset uploads a clip through the API and returns the ready asset.
func readyAsset(t *testing.T, s stack, seconds int) assetView {
	t.Helper()
	clip := makeClip(t, "browser.mp4", seconds, "640x360")
	code, up, e := s.uploadMultipart(t, clip, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: status %d %+v", code, e)
	}
	return s.readyAssetOf(t, up)
}

// readyAssetOf waits until the upload's job is ready (waitJob: and its
// MP4 download built) and returns its asset, which must have playback URLs.
func (s stack) readyAssetOf(t *testing.T, up uploadResponse) assetView {
	t.Helper()
	if job := s.waitJob(t, up.JobID, jobTimeout); job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}
	var asset assetView
	if code := s.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset); code != http.StatusOK || asset.Playback == nil {
		t.Fatalf("GET asset: %d %+v", code, asset)
	}
	return asset
}

// TestBrowserPlayer plays kiln's HLS and MP4 outputs in chromium through the
// UI's bare player page (/ui/player.html?src=…).
func TestBrowserPlayer(t *testing.T) {
	s := needStack(t)
	ctx := browser(t)
	asset := readyAsset(t, s, 6)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.APIURL+"/ui/player.html")); err != nil {
		t.Fatal(err)
	}
	native, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.createElement("video").canPlayType("application/vnd.apple.mpegurl")`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("chromium canPlayType(HLS) = %q", native)

	for _, tc := range []struct {
		name, src, engine, wantEngine string
	}{
		// The page picks hls.js wherever MediaSource exists (chromium does).
		{"hls", asset.Playback.HLS, "", "hls.js"},
		// Chromium's built-in HLS player, through the page's native engine:
		// segments on the storage origin need its CORS mode.
		{"native", asset.Playback.HLS, "native", "native"},
		{"mp4", asset.Playback.MP4, "", "mp4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"src": {tc.src}}
			if tc.engine != "" {
				q.Set("engine", tc.engine)
			}
			start := time.Now()
			if err := chromedp.Do(ctx, chromedp.Navigate(s.APIURL+"/ui/player.html?"+q.Encode())); err != nil {
				t.Fatal(err)
			}
			st := waitPlayed(t, ctx)
			if tc.wantEngine != "" && st.Engine != tc.wantEngine {
				t.Errorf("engine %q, want %q", st.Engine, tc.wantEngine)
			}
			if st.Duration < 5 || st.Duration > 7 {
				t.Errorf("duration %.2f s, want about 6", st.Duration)
			}
			t.Logf("engine %s played %.1f s of %.1f s within %s (%d non-fatal warnings)",
				st.Engine, st.CurrentTime, st.Duration, time.Since(start).Round(time.Millisecond), st.Warnings)
		})
	}
}

// TestBrowserUploadPage drives the simple upload page like a user: types the API
// key, picks a file, uploads, waits for "ready" and for the embedded player
// to play.
func TestBrowserUploadPage(t *testing.T) {
	s := needStack(t)
	ctx := browser(t)
	clip := makeClip(t, "page upload.mp4", 6, "640x360")

	// The root redirects to the UI.
	if err := chromedp.Do(ctx, chromedp.Navigate(s.APIURL+"/")); err != nil {
		t.Fatal(err)
	}
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || loc != s.APIURL+"/ui/" {
		t.Fatalf("location after GET / = %q, %v; want %s/ui/", loc, err, s.APIURL)
	}
	// The console is there; this test drives the simple upload page.
	if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.ID("view-signin")), chromedp.Navigate(s.APIURL+"/ui/upload.html")); err != nil {
		t.Fatal(err)
	}

	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.ID("api-key")),
		chromedp.SendKeys(chromedp.ID("api-key"), s.APIKey),
		chromedp.SetUploadFiles(chromedp.ID("file"), []string{clip}),
		chromedp.Click(chromedp.ID("upload")),
	); err != nil {
		t.Fatal(err)
	}

	type uiState struct {
		JobID string `json:"jobId"`
		State string `json:"state"`
		Shown string `json:"shown"`
		Error string `json:"error"`
	}
	deadline := time.Now().Add(jobTimeout)
	var ui uiState
	for ui.Shown != "ready" {
		var err error
		ui, err = chromedp.Run(ctx, chromedp.Evaluate[uiState](`({
			jobId: kilnUI.jobId, state: kilnUI.state, error: kilnUI.error || "",
			shown: document.getElementById("job").hidden ? "" : document.getElementById("job-state").textContent,
		})`))
		if err != nil {
			t.Fatal(err)
		}
		if ui.Error != "" || ui.State == "failed" {
			t.Fatalf("upload page shows an error: %+v\npage: %s", ui, pageText(ctx))
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload page not ready after %s: %+v\npage: %s", jobTimeout, ui, pageText(ctx))
		}
		time.Sleep(500 * time.Millisecond)
	}
	st := waitPlayed(t, ctx)
	t.Logf("job %s ready; embedded player (%s) at %.1f s", ui.JobID, st.Engine, st.CurrentTime)

	type assetShown struct {
		Rows        int    `json:"rows"`
		PosterWidth int    `json:"posterWidth"`
		MP4         string `json:"mp4"`
		HLS         string `json:"hls"`
	}
	// The MP4 link appears once the download is built, after READY.
	var shown assetShown
	var err error
	for start := time.Now(); ; {
		shown, err = chromedp.Run(ctx, chromedp.Evaluate[assetShown](`({
			rows: document.querySelectorAll("#renditions tbody tr").length,
			posterWidth: document.getElementById("poster").naturalWidth,
			mp4: document.getElementById("mp4-link").href,
			hls: document.getElementById("hls-link").href,
		})`))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(shown.MP4, "/download.mp4") || time.Since(start) > 30*time.Second {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if shown.Rows != 4 || shown.PosterWidth == 0 || !strings.HasSuffix(shown.MP4, "/download.mp4") || !strings.HasSuffix(shown.HLS, "/master.m3u8") {
		t.Errorf("asset section: %+v", shown)
	}
	screenshot(t, ctx, "upload-page.png")

	// The key stays in local storage, and the job id in the address: a
	// reload follows the same job.
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("job-state"))); err != nil {
		t.Fatal(err)
	}
	key, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("api-key")))
	if err != nil || key != s.APIKey {
		t.Errorf("API key after reload = %q, %v", key, err)
	}
	if id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`kilnUI.jobId`)); err != nil || id != ui.JobID {
		t.Errorf("job after reload = %q, %v; want %s", id, err, ui.JobID)
	}
}
