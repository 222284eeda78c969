package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/grafov/m3u8"
	"github.com/kilnvideo/kiln/packager/hlscheck"
)

// playableJob is what a player's caller reads of a job while it encodes.
type playableJob struct {
	State      string               `json:"state"`
	PlayableAt *time.Time           `json:"playable_at"`
	Timestamps map[string]time.Time `json:"timestamps"`
}

// waitPlayable polls the job until it is playable and returns it; the job
// must still be encoding then, or the test proves nothing.
func (s stack) waitPlayable(t *testing.T, jobID string) playableJob {
	t.Helper()
	deadline := time.Now().Add(jobTimeout)
	for time.Now().Before(deadline) {
		var j playableJob
		if code := s.do(t, http.MethodGet, "/v1/jobs/"+jobID, nil, "", &j); code == http.StatusOK {
			switch {
			case j.PlayableAt != nil && j.State == "transcoding":
				return j
			case j.State == "ready" || j.State == "failed" || j.State == "canceled":
				t.Fatalf("job %s reached %s without being seen playable while it encoded (playable_at %v)", jobID, j.State, j.PlayableAt)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %s not playable within %s", jobID, jobTimeout)
	return playableJob{}
}

// TestPlayWhileEncoding: a 60 s upload is playable long before it is
// ready. While it still encodes, its master playlist and EVENT media
// playlists pass kiln's HLS validator, and ffmpeg, started then from the
// first segment, follows the growing playlists to the end and decodes
// every frame; once ready the playlists are VOD with the same segments.
func TestPlayWhileEncoding(t *testing.T) {
	s := needStack(t)
	const seconds = 60
	clip := makeClip(t, "long.mp4", seconds, "640x360")
	code, up, e := s.uploadMultipart(t, clip, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, e)
	}
	playable := s.waitPlayable(t, up.JobID)
	var asset assetView
	if code := s.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset); code != http.StatusOK || asset.Playback == nil || asset.Playback.HLS == "" {
		t.Fatalf("GET asset of a playable job: %d %+v", code, asset)
	}
	master := string(fetch(t, asset.Playback.HLS, 1<<20))
	if !strings.Contains(master, `#EXT-X-MEDIA:TYPE=AUDIO`) || !strings.Contains(master, `AUDIO="`) {
		t.Errorf("master playlist without its audio group:\n%s", master)
	}

	// ffmpeg joins now, from the first segment, and follows the EVENT
	// playlist (it reloads a playlist without EXT-X-ENDLIST) until READY
	// closes it.
	variants, err := variantURLs(asset.Playback.HLS, master)
	if err != nil || len(variants) == 0 {
		t.Fatalf("variants of\n%s: %v", master, err)
	}
	top := variants[len(variants)-1]
	ctx, cancel := context.WithTimeout(t.Context(), jobTimeout)
	defer cancel()
	type result struct {
		frames int
		out    string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-live_start_index", "0", "-select_streams", "v:0", "-count_frames",
			"-show_entries", "stream=nb_read_frames", "-of", "default=noprint_wrappers=1:nokey=1", top).CombinedOutput()
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		n, _ := strconv.Atoi(strings.TrimSpace(first))
		done <- result{n, string(out), err}
	}()

	// Meanwhile the playlists validate as they are: EVENT, growing.
	report, err := hlscheck.CheckMaster(t.Context(), hlscheck.Config{Fetcher: hlscheck.HTTPFetcher{Client: &http.Client{Timeout: 30 * time.Second}}, AllowEvent: true}, asset.Playback.HLS)
	if err != nil {
		t.Fatal(err)
	}
	if err := report.Err(); err != nil {
		t.Errorf("while encoding: %v", err)
	}
	media := string(fetch(t, top, 1<<20))
	var j playableJob
	s.do(t, http.MethodGet, "/v1/jobs/"+up.JobID, nil, "", &j)
	if j.State == "transcoding" && (!strings.Contains(media, "#EXT-X-PLAYLIST-TYPE:EVENT") || strings.Contains(media, "#EXT-X-ENDLIST")) {
		t.Errorf("media playlist of a job still encoding:\n%s", media)
	}
	firstURIs := segmentLines(media)

	r := <-done
	if r.err != nil || r.frames != seconds*30 {
		t.Errorf("ffprobe following the playlist from playable: %d frames (%v), want %d\n%s", r.frames, r.err, seconds*30, r.out)
	}
	job := s.waitJob(t, up.JobID, jobTimeout)
	if job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}
	final := string(fetch(t, top, 1<<20))
	if !strings.Contains(final, "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.Contains(final, "#EXT-X-ENDLIST") {
		t.Errorf("media playlist of the ready job:\n%s", final)
	}
	// What was listed while encoding is listed the same once ready (the
	// segment names; their presigned URLs may be fresh).
	finalURIs := segmentLines(final)
	for i, u := range firstURIs {
		if i >= len(finalURIs) || objectPath(u) != objectPath(finalURIs[i]) {
			t.Errorf("segment %d was %s while encoding, %v when ready", i, objectPath(u), finalURIs)
			break
		}
	}
	var ready playableJob
	s.do(t, http.MethodGet, "/v1/jobs/"+up.JobID, nil, "", &ready)
	readyAt, ok := ready.Timestamps["ready"]
	if ready.PlayableAt == nil || !ok || !ready.PlayableAt.Before(readyAt) {
		t.Fatalf("playable_at %v, timestamps %v: want playable first", ready.PlayableAt, ready.Timestamps)
	}
	t.Logf("playable %s before ready (job seen playable at %v)", readyAt.Sub(*ready.PlayableAt).Round(time.Millisecond), playable.PlayableAt)
}

// segmentLines are the URI lines of a media playlist.
func segmentLines(playlist string) []string {
	var out []string
	for _, line := range strings.Split(playlist, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// objectPath is a URL without its query (a presigned URL's signature).
func objectPath(u string) string { p, _, _ := strings.Cut(u, "?"); return p }

// variantURLs are the absolute URLs of a master playlist's variants, in
// its order (lowest bandwidth first).
func variantURLs(base, master string) ([]string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	p := m3u8.NewMasterPlaylist()
	if err := p.DecodeFrom(strings.NewReader(master), false); err != nil {
		return nil, err
	}
	var out []string
	for _, v := range p.Variants {
		u, err := b.Parse(v.URI)
		if err != nil {
			return nil, err
		}
		out = append(out, u.String())
	}
	return out, nil
}

// TestBrowserPlaysWhileEncoding: a 90 s upload plays in headless Chromium
// while it is still encoding — with hls.js from the playable moment (one
// segment of every rendition), and in Chromium's built-in player (a plain
// <video src=…m3u8>) once the playlists hold the three target durations
// (18 s) it starts from, before their end.
func TestBrowserPlaysWhileEncoding(t *testing.T) {
	s := needStack(t)
	ctx := browser(t)
	clip := makeClip(t, "long-browser.mp4", 90, "640x360")
	code, up, e := s.uploadMultipart(t, clip, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, e)
	}
	s.waitPlayable(t, up.JobID)
	var asset assetView
	if code := s.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset); code != http.StatusOK || asset.Playback == nil {
		t.Fatalf("GET asset: %d %+v", code, asset)
	}
	defer watchPlaylists(t, asset.Playback.HLS)() // reports when the test ends, also on t.Fatal
	stillEncoding := func(what string) {
		t.Helper()
		var j playableJob
		s.do(t, http.MethodGet, "/v1/jobs/"+up.JobID, nil, "", &j)
		if j.State != "transcoding" {
			t.Fatalf("%s only once the job was %s: the test proves nothing", what, j.State)
		}
	}
	play := func(engine string) playerState {
		t.Helper()
		q := url.Values{"src": {asset.Playback.HLS}}
		if engine != "" {
			q.Set("engine", engine)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(s.APIURL+"/ui/player.html?"+q.Encode())); err != nil {
			t.Fatal(err)
		}
		return waitPlayed(t, ctx)
	}
	st := play("")
	stillEncoding("hls.js played")
	if st.Engine != "hls.js" || st.CurrentTime < playedSeconds || st.CurrentTime > 20 {
		t.Errorf("hls.js: %+v, want it playing from the start", st)
	}

	// The built-in player, once three target durations are listed.
	variants, err := variantURLs(asset.Playback.HLS, string(fetch(t, asset.Playback.HLS, 1<<20)))
	if err != nil || len(variants) == 0 {
		t.Fatalf("variants: %v", err)
	}
	for deadline := time.Now().Add(jobTimeout); listedSeconds(t, string(fetch(t, variants[0], 1<<20))) < 18; {
		if time.Now().After(deadline) {
			t.Fatal("never 18 s listed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	stillEncoding("18 s were listed")
	st = play("native")
	stillEncoding("the built-in player played")
	if st.Engine != "native" || st.CurrentTime < playedSeconds {
		t.Errorf("built-in player: %+v", st)
	}
	t.Logf("played while encoding: hls.js, then the built-in player at %.1f s", st.CurrentTime)
	screenshot(t, ctx, "playing-while-encoding.png")
}

// listedSeconds is the sum of a media playlist's EXTINF durations.
func listedSeconds(t *testing.T, playlist string) float64 {
	t.Helper()
	total := 0.0
	for _, line := range strings.Split(playlist, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "#EXTINF:"); ok {
			d, err := strconv.ParseFloat(strings.TrimSuffix(v, ","), 64)
			if err != nil {
				t.Fatalf("EXTINF %q: %v", line, err)
			}
			total += d
		}
	}
	return total
}

// watchPlaylists reads a growing asset's master and every media playlist
// it names, every 100 ms until the returned stop is called, and reports
// what a player must never see while an asset encodes: an answer that is
// not 200, a master with fewer variants than before, a media playlist
// that lists fewer segments than before or changes its target duration.
func watchPlaylists(t *testing.T, masterURL string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan []string)
	go func() {
		var problems []string
		report := func(format string, args ...any) {
			if len(problems) < 20 {
				problems = append(problems, fmt.Sprintf(format, args...))
			}
		}
		get := func(u string) (string, bool) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					report("GET %s: %v", u, err)
				}
				return "", false
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if resp.StatusCode != http.StatusOK || err != nil {
				if ctx.Err() == nil {
					report("GET %s: %d %v %q", u, resp.StatusCode, err, b)
				}
				return "", false
			}
			return string(b), true
		}
		base, _ := url.Parse(masterURL)
		variants := 0
		type media struct{ segments, target int }
		seen := map[string]media{}
		for ctx.Err() == nil {
			if master, ok := get(masterURL); ok {
				n := strings.Count(master, "#EXT-X-STREAM-INF:")
				if n < variants {
					report("the master lists %d variants, had %d:\n%s", n, variants, master)
				}
				variants = max(variants, n)
				for _, line := range strings.Split(master, "\n") {
					uri := strings.TrimSpace(line)
					if _, quoted, ok := strings.Cut(uri, `URI="`); ok {
						uri, _, _ = strings.Cut(quoted, `"`)
					} else if uri == "" || strings.HasPrefix(uri, "#") {
						continue
					}
					u, err := base.Parse(uri)
					if err != nil {
						report("master URI %q: %v", uri, err)
						continue
					}
					body, ok := get(u.String())
					if !ok {
						continue
					}
					var m media
					m.segments = strings.Count(body, "#EXTINF:")
					if _, v, ok := strings.Cut(body, "#EXT-X-TARGETDURATION:"); ok {
						v, _, _ = strings.Cut(v, "\n")
						m.target, _ = strconv.Atoi(strings.TrimSpace(v))
					}
					key := u.Path
					if was, ok := seen[key]; ok && (m.segments < was.segments || m.target != was.target) {
						report("%s lists %d segments (target %d), had %d (target %d):\n%s", key, m.segments, m.target, was.segments, was.target, body)
					}
					if m.segments >= seen[key].segments {
						seen[key] = m
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		done <- problems
	}()
	return func() {
		t.Helper()
		cancel()
		for _, p := range <-done {
			t.Errorf("while encoding: %s", p)
		}
	}
}
