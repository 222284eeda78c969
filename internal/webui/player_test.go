package webui

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// hlsRendition writes a 31 s HLS fMP4 rendition (6 s segments: five of
// 6 s, one of 1 s) of spec into root/name.
func hlsRendition(t *testing.T, root, name string, spec testenv.ClipSpec) {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	spec.Path, spec.Seconds, spec.Rate, spec.SampleRate = filepath.Join(dir, "index.m3u8"), 31, "30", 48000
	spec.Video = []string{"-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-level", "3.0", "-pix_fmt", "yuv420p",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0"}
	spec.Audio = []string{"-c:a", "aac", "-b:a", "64k", "-ac", "2"}
	spec.ExtraArgs = []string{"-f", "hls", "-hls_time", "6", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
		"-hls_flags", "independent_segments", "-hls_fmp4_init_filename", "init.mp4",
		"-hls_segment_filename", filepath.Join(dir, "seg_%05d.m4s")}
	testenv.Clip(t, spec)
}

// TestPlayerAudioGroup plays, in Chromium, through the UI's player page
// with hls.js and with the built-in player, what kiln serves since it
// encodes the audio once: video-only variants and the audio group of
// kiln's master playlist writer — ended (VOD), and still being encoded
// (EVENT media playlists without EXT-X-ENDLIST, which both must start from
// the beginning).
//
// While encoding, the playlists have five segments (30 s: hls.js, which
// takes them for live, would start 3 target durations before their end
// without the player's startPosition 0). Chromium's built-in player (156)
// refuses a playlist without EXT-X-ENDLIST of fewer than three segments
// (MEDIA_ERR_SRC_NOT_SUPPORTED, "DEMUXER_ERROR_COULD_NOT_PARSE", whatever
// the segments' length); hls.js plays one of a single segment.
func TestPlayerAudioGroup(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg")
	ctx := headless(t)
	root := t.TempDir()
	hlsRendition(t, filepath.Join(root, "vod"), "180p", testenv.ClipSpec{Width: 320, Height: 180, NoAudio: true})
	hlsRendition(t, filepath.Join(root, "vod"), "audio", testenv.ClipSpec{NoVideo: true})
	master := playlist.Master([]playlist.Variant{
		{Name: "180p", Width: 320, Height: 180, FrameRate: 30, Bandwidth: 400_000, AverageBandwidth: 300_000, Codecs: "avc1.4d401e"},
		{Name: "audio", Bandwidth: 70_000, AverageBandwidth: 64_000, Codecs: "mp4a.40.2"},
	})
	if err := os.WriteFile(filepath.Join(root, "vod", "master.m3u8"), master, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(root, "event"), os.DirFS(filepath.Join(root, "vod"))); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"180p", "audio"} {
		file := filepath.Join(root, "event", name, "index.m3u8")
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		live := strings.Replace(strings.TrimSuffix(string(b), "#EXT-X-ENDLIST\n"), "PLAYLIST-TYPE:VOD", "PLAYLIST-TYPE:EVENT", 1)
		segments := strings.Split(live, "#EXTINF:")
		if live == string(b) || len(segments) != 7 {
			t.Fatalf("%s: not a VOD playlist of 6 segments to turn into an EVENT one:\n%s", name, b)
		}
		live = strings.Join(segments[:6], "#EXTINF:") // the first five: the encode goes on
		if err := os.WriteFile(file, []byte(live), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle(Prefix, Handler())
	mux.Handle("/media/", http.StripPrefix("/media/", http.FileServer(http.Dir(root))))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	type state struct {
		Engine      string  `json:"engine"`
		Error       string  `json:"error"`
		CurrentTime float64 `json:"currentTime"`
		Start       float64 `json:"start"`
	}
	for _, tc := range []struct{ name, dir, engine string }{
		{"vod hls.js", "vod", "hls.js"},
		{"vod native", "vod", "native"},
		{"event hls.js", "event", "hls.js"},
		{"event native", "event", "native"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := url.Values{"src": {srv.URL + "/media/" + tc.dir + "/master.m3u8"}, "engine": {tc.engine}}
			if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/ui/player.html?"+q.Encode())); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for {
				st, err := chromedp.Run(ctx, chromedp.Evaluate[state](`({engine: kilnPlayer.engine || "", error: kilnPlayer.error || "",
					currentTime: kilnPlayer.currentTime || 0,
					start: (function (p) { return p.length ? p.start(0) : -1; })(document.getElementById('video').played)})`))
				if err != nil {
					t.Fatal(err)
				}
				if st.Error != "" || st.Engine != tc.engine {
					t.Fatalf("player %+v, want engine %s without error", st, tc.engine)
				}
				if st.CurrentTime >= 2 {
					if st.Start < 0 || st.Start > 1 {
						t.Errorf("%s started at %.2f s, not at the beginning", tc.engine, st.Start)
					}
					t.Logf("%s played to %.1f s (started at %.2f s)", tc.engine, st.CurrentTime, st.Start)
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("not played 2 s within a minute: %+v", st)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
