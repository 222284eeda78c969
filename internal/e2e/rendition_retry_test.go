package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestRetryFailedRendition: a rendition whose packaging fails for good does
// not sink the asset — it is ready with the others and lists the failure —
// and that one rendition can be retried on its own. The failure is real
// ffmpeg refusing to run: the workers' ffmpeg is a wrapper that fails the
// 240p packaging until the test removes the fault.
func TestRetryFailedRendition(t *testing.T) {
	s := needStack(t)
	t.Parallel()
	work := t.TempDir()
	real, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatal(err)
	}
	fault := filepath.Join(work, "fault")
	if err := os.WriteFile(fault, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(work, "ffmpeg")
	script := fmt.Sprintf(`#!/bin/sh
case "$*" in
*/240p/index.m3u8*) if [ -e %q ]; then echo "injected failure: 240p packaging" >&2; exit 1; fi ;;
esac
exec %q "$@"
`, fault, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	httpAddr, natsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	startKiln(t, "serve-faulty", append(isolatedEnv(s, "retry", 5, work, httpAddr, natsAddr),
		"KILN_FFMPEG="+wrapper, "KILN_CONCURRENCY=1"), "serve")
	base := "http://" + httpAddr
	waitReady(t, base)
	api := stack{APIURL: base, APIKey: isolatedKey("retry")}

	code, up, e := api.upload(t, openFile(t, makeClip(t, "retry.mp4", 3, "640x360")), "video/mp4", "?filename=retry.mp4")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, e)
	}
	if job := api.waitJob(t, up.JobID, jobTimeout); job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}
	type rendition struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	var asset struct {
		Renditions []rendition `json:"renditions"`
		Playback   *struct {
			HLS string `json:"hls"`
		} `json:"playback"`
	}
	states := func() string {
		api.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset)
		var out []string
		for _, r := range asset.Renditions {
			out = append(out, r.Name+"="+r.State)
		}
		return strings.Join(out, ",")
	}
	if got := states(); !strings.Contains(got, "240p=failed") || !strings.Contains(got, "360p=ready") || !strings.Contains(got, "144p=ready") {
		t.Fatalf("renditions %s, want 240p failed and the others ready", got)
	}
	master := fetch(t, asset.Playback.HLS, 1<<20)
	if strings.Contains(string(master), "240p/") {
		t.Fatalf("the master lists the failed rendition:\n%s", master)
	}
	decode(t, asset.Playback.HLS, "-map", "0") // the rest plays

	// A ready rendition cannot be retried; the failed one can, once.
	if c := api.do(t, http.MethodPost, "/v1/assets/"+up.AssetID+"/renditions/360p/retry", nil, "", nil); c != http.StatusConflict {
		t.Errorf("retry of a ready rendition: %d, want 409", c)
	}
	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	if c := api.do(t, http.MethodPost, "/v1/assets/"+up.AssetID+"/renditions/240p/retry", nil, "", nil); c != http.StatusAccepted {
		t.Fatalf("retry of the failed rendition: %d, want 202", c)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(states(), "240p=ready") {
		if time.Now().After(deadline) {
			t.Fatalf("240p still not ready after its retry: %s", states())
		}
		time.Sleep(250 * time.Millisecond)
	}
	master = fetch(t, asset.Playback.HLS, 1<<20)
	if !strings.Contains(string(master), "240p/index.m3u8") {
		t.Fatalf("the master does not list the retried rendition:\n%s", master)
	}
	decode(t, strings.TrimSuffix(asset.Playback.HLS, "master.m3u8")+"240p/index.m3u8")
}
