package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// Direct delivery: media playlists list absolute segment URLs on the
// storage origin (presigned) or a CDN, so players fetch segments without a
// redirect. The proof is a browser: Chromium's built-in HLS player
// (a plain <video src=master.m3u8>, no hls.js) and hls.js, for a public
// and a signed asset, and ffmpeg, which can then keep its connection.
//
// Chromium 156's built-in player (canPlayType answers "maybe") plays HLS
// whose playlists and media share one origin. Media from another origin
// (absolute URLs or a redirect alike) plays only in CORS mode: the <video>
// needs crossorigin="anonymous" and the storage CORS headers. Without the
// attribute it fails with MEDIA_ERR_SRC_NOT_SUPPORTED. So the built-in
// player is tested both ways: in CORS mode against presigned URLs on
// MinIO, and without the attribute against a CDN on the catalog's origin.

// reuseWarning is what ffmpeg logs when its next segment is on another host
// than the connection it holds (every redirected segment).
const reuseWarning = "Cannot reuse HTTP connection for different host"

// playerPage serves the test's player page from an origin of its own (a
// site embedding kiln's video): ?src=<HLS URL>&engine=native|hls.js
// [&cors=1 for <video crossorigin=anonymous>]. Its state is window.st.
func playerPage(t *testing.T, hlsJS string) string {
	t.Helper()
	page := `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<video id="v" muted autoplay playsinline></video>
<script src="` + hlsJS + `"></script>
<script>
'use strict';
const q = new URLSearchParams(location.search), v = document.getElementById('v'), src = q.get('src');
window.st = {error: '', engine: q.get('engine')};
v.addEventListener('error', () => { st.error = 'media error ' + (v.error && v.error.code) + ': ' + (v.error && v.error.message); });
const play = () => v.play().catch(e => { if (e.name !== 'AbortError') st.error = st.error || 'play: ' + e; });
if (st.engine === 'hls.js') {
	const h = new Hls();
	h.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) st.error = 'hls.js ' + d.type + ': ' + d.details + (d.response ? ' (HTTP ' + d.response.code + ')' : ''); });
	h.on(Hls.Events.MANIFEST_PARSED, play);
	h.loadSource(src);
	h.attachMedia(v);
} else {
	if (q.get('cors')) v.crossOrigin = 'anonymous';
	v.src = src;
	play();
}
</script>`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type pageState struct {
	Error       string  `json:"error"`
	CurrentTime float64 `json:"currentTime"`
	Duration    float64 `json:"duration"`
	ReadyState  int     `json:"readyState"`
}

// playIn opens the player page on src and waits until playback passes 1 s
// (returning the state), or fails (returning the error).
func playIn(t *testing.T, ctx context.Context, page, src, engine string, cors bool) (pageState, error) {
	t.Helper()
	q := url.Values{"src": {src}, "engine": {engine}}
	if cors {
		q.Set("cors", "1")
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(page+"/?"+q.Encode())); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(playTimeout)
	for {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](`({error: st.error, currentTime: v.currentTime,
			duration: isFinite(v.duration) ? v.duration : 0, readyState: v.readyState})`))
		if err != nil {
			t.Fatalf("read page state: %v", err)
		}
		switch {
		case st.Error != "":
			return st, errors.New(st.Error)
		case st.CurrentTime > 1:
			return st, nil
		case time.Now().After(deadline):
			return st, fmt.Errorf("did not play past 1 s within %s", playTimeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mustPlay plays src in the page and fails the test unless it advances.
func mustPlay(t *testing.T, ctx context.Context, page, src, engine string, cors bool) {
	t.Helper()
	start := time.Now()
	st, err := playIn(t, ctx, page, src, engine, cors)
	if err != nil {
		t.Fatalf("%s (crossorigin %v) could not play %s: %v (state %+v)", engine, cors, src, err, st)
	}
	t.Logf("%s (crossorigin %v) played %.1f s of %.1f s within %s", engine, cors, st.CurrentTime, st.Duration, time.Since(start).Round(time.Millisecond))
}

// uploadReady uploads a 20 s clip (four segments per variant: ffmpeg gives
// up reusing its connection from the third redirected segment on) with the
// query and returns the ready asset.
func uploadReady(t *testing.T, s stack, name, query string) assetView {
	t.Helper()
	code, up, bad := s.upload(t, openFile(t, makeClip(t, name, 20, "320x180")), "video/mp4", query)
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, bad)
	}
	return s.readyAssetOf(t, up)
}

// mediaPlaylistURL is the URL of the asset's first media playlist, with the
// master's query (its token).
func mediaPlaylistURL(t *testing.T, asset assetView) string {
	t.Helper()
	u, err := url.Parse(asset.Playback.HLS)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = strings.TrimSuffix(u.Path, "master.m3u8") + asset.Renditions[0].Name + "/index.m3u8"
	return u.String()
}

var mapURI = regexp.MustCompile(`URI="([^"]+)"`)

// checkDirectPlaylist fetches a media playlist and checks that every
// segment and EXT-X-MAP URI is absolute, on host, under the asset's prefix,
// and expires no later than maxExpires (0: not presigned).
func checkDirectPlaylist(t *testing.T, playlistURL, host string, asset assetView, maxExpires time.Duration) {
	t.Helper()
	resp, body := playbackGet(t, playlistURL)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", playlistURL, resp.StatusCode, body)
	}
	var uris []string
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "#EXT-X-MAP:"):
			uris = append(uris, mapURI.FindStringSubmatch(line)[1])
		case line != "" && !strings.HasPrefix(line, "#"):
			uris = append(uris, line)
		}
	}
	if len(uris) < 2 {
		t.Fatalf("media playlist with %d URIs:\n%s", len(uris), body)
	}
	for _, raw := range uris {
		u, err := url.Parse(raw)
		if err != nil || !u.IsAbs() || u.Host != host || !strings.Contains(u.Path, "/"+layout.AssetPrefix(asset.ID)) {
			t.Fatalf("URI %q is not an absolute URL of the asset's objects on %s:\n%s", raw, host, body)
		}
		exp := u.Query().Get("X-Amz-Expires")
		if maxExpires == 0 {
			if exp != "" {
				t.Errorf("URI %q is presigned, want a plain CDN URL", raw)
			}
			continue
		}
		secs, err := strconv.Atoi(exp)
		if err != nil || time.Duration(secs)*time.Second > maxExpires {
			t.Errorf("URI %q expires in %s s, want at most %s", raw, exp, maxExpires)
		}
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "max-age=") {
		t.Errorf("Cache-Control %q", cc)
	}
}

// ffmpegReads plays url with ffmpeg at the info level (every variant) and
// checks that it reused its connections (no reuseWarning) and opened every
// segment on segmentHost.
func ffmpegReads(t *testing.T, rawURL, segmentHost string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ffmpeg", "-hide_banner", "-nostdin", "-v", "info",
		"-i", rawURL, "-map", "0", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", rawURL, err, out)
	}
	log := string(out)
	if n := strings.Count(log, reuseWarning); n > 0 {
		t.Errorf("ffmpeg logged %q %d times:\n%s", reuseWarning, n, log)
	}
	opened := regexp.MustCompile(`Opening '([^']+\.m4s[^']*)' for reading`).FindAllStringSubmatch(log, -1)
	if len(opened) == 0 {
		t.Fatalf("ffmpeg opened no segment:\n%s", log)
	}
	for _, m := range opened {
		if u, err := url.Parse(m[1]); err != nil || u.Host != segmentHost {
			t.Errorf("ffmpeg read segment %s, want it on %s", m[1], segmentHost)
		}
	}
	if !t.Failed() {
		t.Logf("ffmpeg read %d segments from %s with no %q", len(opened), segmentHost, reuseWarning)
	}
}

// TestDirectPlayback plays a public and a signed asset of the running stack
// (direct delivery, segments presigned on MinIO) in Chromium's built-in
// HLS player and with hls.js, and with ffmpeg.
func TestDirectPlayback(t *testing.T) {
	s := needStack(t)
	ctx := browser(t)
	page := playerPage(t, s.APIURL+"/ui/vendor/hls.min.js?v=1.7.4")
	public := uploadReady(t, s, "direct-public.mp4", "?filename=direct-public.mp4")
	signed := uploadReady(t, s, "direct-signed.mp4", "?filename=direct-signed.mp4&playback_policy=signed")
	if signed.TokenExpiresAt == nil || !strings.Contains(signed.Playback.HLS, "?token=") {
		t.Fatalf("signed asset without a token: %+v", signed.Playback)
	}
	native, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.createElement("video").canPlayType("application/vnd.apple.mpegurl")`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("chromium canPlayType(application/vnd.apple.mpegurl) = %q", native)

	for _, tc := range []struct {
		name  string
		asset assetView
	}{{"public", public}, {"signed", signed}} {
		t.Run(tc.name, func(t *testing.T) {
			maxExpires := time.Hour + 21*time.Second // PresignTTL beyond the 20 s clip
			if tc.asset.TokenExpiresAt != nil {
				maxExpires = min(maxExpires, time.Until(*tc.asset.TokenExpiresAt)+time.Second)
			}
			t.Run("playlist", func(t *testing.T) {
				checkDirectPlaylist(t, mediaPlaylistURL(t, tc.asset), s.S3.Endpoint, tc.asset, maxExpires)
			})
			t.Run("built-in", func(t *testing.T) { mustPlay(t, ctx, page, tc.asset.Playback.HLS, "native", true) })
			t.Run("hls.js", func(t *testing.T) { mustPlay(t, ctx, page, tc.asset.Playback.HLS, "hls.js", false) })
			t.Run("ffmpeg", func(t *testing.T) { ffmpegReads(t, tc.asset.Playback.HLS, s.S3.Endpoint) })
		})
	}
	// What CORS mode is for: without crossorigin the built-in player
	// refuses media from another origin than its playlists (logged, as a
	// fact about Chromium rather than about kiln).
	if _, err := playIn(t, ctx, page, public.Playback.HLS, "native", false); err != nil {
		t.Logf("built-in player without crossorigin, segments on the storage origin: %v", err)
	} else {
		t.Logf("built-in player without crossorigin, segments on the storage origin: plays")
	}
}

// TestCDNPlayback: with KILN_CDN_URL on the catalog's own origin (one front
// door: a reverse proxy sending /video to kiln and /cdn to the outputs
// bucket, as a CDN with origin access does), a public asset's playlists
// and segments share one origin, and Chromium's built-in player plays it
// from a plain <video src> without crossorigin; hls.js and ffmpeg too.
func TestCDNPlayback(t *testing.T) {
	s := needStack(t)
	t.Parallel()
	work := t.TempDir()
	httpAddr, natsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	const name = "cdn"
	outputs := "kiln-" + name + "-outputs"
	objects, err := objstore.New(s.S3)
	if err != nil {
		t.Fatal(err)
	}
	backend, _ := url.Parse("http://" + httpAddr)
	mux := http.NewServeMux()
	mux.Handle("/video/", http.StripPrefix("/video", httputil.NewSingleHostReverseProxy(backend)))
	// The CDN: reads the outputs bucket with kiln's credentials, serves
	// ranges, and caches nothing (the test needs no more).
	mux.HandleFunc("GET /cdn/{key...}", func(w http.ResponseWriter, r *http.Request) {
		obj, info, err := objects.Open(r.Context(), outputs, r.PathValue("key"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		defer obj.Close()
		w.Header().Set("Access-Control-Allow-Origin", "*") // for hls.js on another origin
		w.Header().Set("Content-Type", info.ContentType)
		http.ServeContent(w, r, "", info.LastModified, obj)
	})
	front := httptest.NewServer(mux)
	defer front.Close()
	public, cdn := front.URL+"/video", front.URL+"/cdn"

	startKiln(t, "serve-cdn", append(isolatedEnv(s, name, 6, work, httpAddr, natsAddr),
		"KILN_PUBLIC_URL="+public, "KILN_CDN_URL="+cdn, "KILN_CONCURRENCY=1"), "serve")
	waitReady(t, "http://"+httpAddr)
	api := stack{APIURL: public, APIKey: isolatedKey(name), S3: s.S3}
	asset := uploadReady(t, api, "cdn.mp4", "?filename=cdn.mp4")
	frontHost := strings.TrimPrefix(front.URL, "http://")
	t.Run("playlist", func(t *testing.T) { checkDirectPlaylist(t, mediaPlaylistURL(t, asset), frontHost, asset, 0) })

	ctx := browser(t)
	page := playerPage(t, public+"/ui/vendor/hls.min.js?v=1.7.4")
	t.Run("built-in", func(t *testing.T) { mustPlay(t, ctx, page, asset.Playback.HLS, "native", false) })
	t.Run("hls.js", func(t *testing.T) { mustPlay(t, ctx, page, asset.Playback.HLS, "hls.js", false) })
	t.Run("ffmpeg", func(t *testing.T) { ffmpegReads(t, asset.Playback.HLS, frontHost) })
}
