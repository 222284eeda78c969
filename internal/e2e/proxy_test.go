package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestBehindReverseProxy: with KILN_PUBLIC_URL naming a reverse proxy that
// mounts kiln under a path prefix, every URL kiln hands out goes through
// the proxy, and a player that only knows the proxy plays the asset.
func TestBehindReverseProxy(t *testing.T) {
	s := needStack(t)
	t.Parallel()
	work := t.TempDir()
	httpAddr, natsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)

	backend, _ := url.Parse("http://" + httpAddr)
	rp := httputil.NewSingleHostReverseProxy(backend)
	proxy := httptest.NewServer(http.StripPrefix("/video", rp))
	defer proxy.Close()
	public := proxy.URL + "/video"

	startKiln(t, "serve-proxied", append(isolatedEnv(s, "proxy", 4, work, httpAddr, natsAddr),
		"KILN_PUBLIC_URL="+public, "KILN_CONCURRENCY=1", "KILN_PLAYBACK_DELIVERY=proxy"), "serve")
	waitReady(t, "http://"+httpAddr)

	api := stack{APIURL: public, APIKey: isolatedKey("proxy")}
	code, up, e := api.upload(t, openFile(t, makeClip(t, "proxied.mp4", 3, "320x180")), "video/mp4", "?filename=proxied.mp4")
	if code != http.StatusAccepted {
		t.Fatalf("upload through the proxy: %d %+v", code, e)
	}
	if !strings.HasPrefix(up.StatusURL, public+"/v1/jobs/") {
		t.Errorf("status_url %q is not under %s", up.StatusURL, public)
	}
	if job := api.waitJob(t, up.JobID, jobTimeout); job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}

	// Every absolute URL in the asset JSON is under the public URL.
	var raw map[string]any
	api.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &raw)
	urls := 0
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		case string:
			if strings.HasPrefix(x, "http://") || strings.HasPrefix(x, "https://") {
				urls++
				if !strings.HasPrefix(x, public+"/") {
					t.Errorf("URL %q is not under the public URL %s", x, public)
				}
			}
		}
	}
	walk(raw)
	if urls < 3 {
		b, _ := json.Marshal(raw)
		t.Fatalf("only %d URLs in the asset: %s", urls, b)
	}

	// A player that only reaches the proxy plays HLS and the MP4 (proxy
	// delivery: segments never come from S3 directly).
	var asset assetView
	api.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset)
	decode(t, asset.Playback.HLS, "-map", "0")
	decode(t, asset.Playback.MP4)
}
