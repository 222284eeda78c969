package e2e

import (
	"bufio"
	"bytes"
	"image/jpeg"
	"math"
	"net/http"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
)

// TestChunkedFramesAndSync: a source past the test stack's chunk threshold
// (KILN_CHUNK_THRESHOLD=30s, KILN_CHUNK_LENGTH=12s: chunks of 6, 12, 12 and
// 10 s) is encoded in chunks by the fleet. Every rendition decodes to the
// source's exact frame count with one frame's step between timestamps
// everywhere (no frame lost or repeated at a boundary), every frame of the
// top rendition is the source's frame at that place (PSNR against the
// source: a frame off by one at a boundary scores far lower on this moving
// picture), and the one audio track spans the video within a frame.
func TestChunkedFramesAndSync(t *testing.T) {
	s := needStack(t)
	const seconds, fps = 40, 30
	clip := makeClip(t, "chunked.mp4", seconds, "640x360")
	code, up, e := s.uploadMultipart(t, clip, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, e)
	}
	if j := s.waitJob(t, up.JobID, jobTimeout); j.State != "ready" {
		t.Fatalf("job %s ended %q (%+v)", up.JobID, j.State, j.Error)
	}
	var job struct {
		Plan struct {
			Decisions []string `json:"decisions"`
		} `json:"plan"`
	}
	s.do(t, http.MethodGet, "/v1/jobs/"+up.JobID, nil, "", &job)
	if !strings.Contains(strings.Join(job.Plan.Decisions, "\n"), "chunked: 4 chunks") {
		t.Fatalf("plan decisions %q: not chunked in 4", job.Plan.Decisions)
	}
	var asset assetView
	if code := s.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset); code != http.StatusOK || asset.Playback == nil {
		t.Fatalf("GET asset: %d %+v", code, asset)
	}
	master := string(fetch(t, asset.Playback.HLS, 1<<20))
	variants, err := variantURLs(asset.Playback.HLS, master)
	if err != nil || len(variants) < 2 {
		t.Fatalf("variants of\n%s: %v", master, err)
	}
	for _, v := range variants {
		pts := framePTS(t, v, "v:0")
		if len(pts) != seconds*fps {
			t.Errorf("%s: %d frames, want %d", v, len(pts), seconds*fps)
		}
		for i := 1; i < len(pts); i++ {
			if step := pts[i] - pts[i-1]; math.Abs(step-1.0/fps) > 0.25/fps {
				t.Errorf("%s: frame %d at %.4f s, %.4f s after frame %d (want %.4f): a boundary lost or repeated a frame", v, i, pts[i], step, i-1, 1.0/fps)
				break
			}
		}
	}
	top := variants[len(variants)-1]
	// The top rung is the source's size: compare picture by picture.
	out, err := exec.CommandContext(t.Context(), "ffmpeg", "-v", "error", "-i", top, "-i", clip,
		"-lavfi", "[0:v]setpts=PTS-STARTPTS[a];[1:v]setpts=PTS-STARTPTS[b];[a][b]psnr=stats_file=-", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("psnr: %v\n%s", err, out)
	}
	worst, frames := math.Inf(1), 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		for f := range strings.FieldsSeq(sc.Text()) {
			if v, ok := strings.CutPrefix(f, "psnr_avg:"); ok {
				p, err := strconv.ParseFloat(v, 64)
				if v == "inf" {
					p, err = 100, nil
				}
				if err == nil {
					worst, frames = min(worst, p), frames+1
				}
			}
		}
	}
	if frames != seconds*fps || worst < 25 {
		t.Errorf("top rendition against the source: %d frames compared, worst PSNR %.1f dB (want %d frames, every one ≥ 25 dB)", frames, worst, seconds*fps)
	}
	t.Logf("chunked: %d frames per rendition, worst PSNR of the top one %.1f dB", seconds*fps, worst)

	// The audio: one track from 0 to the video's end.
	audio := framePTS(t, audioURL(t, asset.Playback.HLS, master), "a:0")
	if len(audio) == 0 {
		t.Fatal("no audio frames")
	}
	if audio[0] > 1.0/fps {
		t.Errorf("audio starts at %.4f s, the video at 0", audio[0])
	}
	if end := audio[len(audio)-1]; math.Abs(end-float64(seconds)) > 2.0/fps+0.03 {
		t.Errorf("the audio's last frame at %.4f s, the video ends at %d s", end, seconds)
	}

	// The stills, taken by the chunks: a thumbnail a second, the sprite
	// tiling all of them, the storyboard, the poster; and no poster
	// candidate left but the chosen one.
	var stills struct {
		Thumbnails struct {
			Poster        string   `json:"poster"`
			StoryboardVTT string   `json:"storyboard_vtt"`
			Sprite        string   `json:"sprite"`
			Images        []string `json:"images"`
		} `json:"thumbnails"`
	}
	s.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &stills)
	th := stills.Thumbnails
	if len(th.Images) != seconds {
		t.Fatalf("%d thumbnails, want %d (one a second)", len(th.Images), seconds)
	}
	for _, img := range []struct {
		url  string
		w, h int
	}{{th.Poster, 640, 360}, {th.Sprite, 10 * 160, seconds / 10 * 90}, {th.Images[len(th.Images)-1], 160, 90}} {
		cfg, err := jpeg.DecodeConfig(bytes.NewReader(fetch(t, img.url, 8<<20)))
		if err != nil || cfg.Width != img.w || cfg.Height != img.h {
			t.Errorf("%s: %dx%d (%v), want a %dx%d JPEG", img.url, cfg.Width, cfg.Height, err, img.w, img.h)
		}
	}
	if vtt := string(fetch(t, th.StoryboardVTT, 1<<20)); strings.Count(vtt, "sprite.jpg#xywh=") != seconds {
		t.Errorf("storyboard with %d cues, want %d:\n%s", strings.Count(vtt, "sprite.jpg#xywh="), seconds, vtt)
	}
	objects, err := objstore.New(s.S3)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := objects.List(t.Context(), s.Outputs, layout.ThumbnailDir(up.AssetID)+"/poster")
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 1 || !strings.HasSuffix(th.Poster, path.Base(stored[0].Key)) {
		t.Errorf("poster objects %v, want only the poster %s", stored, th.Poster)
	}
}

// framePTS are the presentation times of every frame of stream sel of the
// HLS playlist u, in seconds, in decoding order.
func framePTS(t *testing.T, u, sel string) []float64 {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ffprobe", "-v", "error", "-select_streams", sel, "-show_entries", "frame=pts_time",
		"-of", "csv=p=0", u).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", u, err)
	}
	var pts []float64
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if v, err := strconv.ParseFloat(strings.Trim(line, ", "), 64); err == nil {
			pts = append(pts, v)
		}
	}
	return pts
}

// audioURL is the audio rendition's playlist URL named by the master.
func audioURL(t *testing.T, base, master string) string {
	t.Helper()
	for line := range strings.SplitSeq(master, "\n") {
		if !strings.HasPrefix(line, "#EXT-X-MEDIA:TYPE=AUDIO") {
			continue
		}
		_, rest, ok := strings.Cut(line, `URI="`)
		uri, _, _ := strings.Cut(rest, `"`)
		if ok {
			u, err := variantURLs(base, "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n"+uri+"\n")
			if err == nil && len(u) == 1 {
				return u[0]
			}
		}
	}
	t.Fatalf("no audio rendition in\n%s", master)
	return ""
}

// TestChunkedJobLeavesRoom: a long video does not starve short ones. The
// test stack's worker runs two transcode tasks at once and
// KILN_CHUNK_SHARE is 0.5, so a chunked job holds at most one chunk in
// the queue at a time: a short upload made once the long one is
// transcoding is ready while most of the long one's chunks are still to
// do. (Were every chunk queued at once, the short job's transcode would
// wait behind all six.)
func TestChunkedJobLeavesRoom(t *testing.T) {
	s := needStack(t)
	long := makeClip(t, "long.mp4", 60, "640x360") // 6 chunks
	short := makeClip(t, "short.mp4", 4, "320x180")
	code, upLong, e := s.uploadMultipart(t, long, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, e)
	}
	var job struct {
		State  string `json:"state"`
		Chunks *struct {
			Done  int `json:"done"`
			Total int `json:"total"`
		} `json:"chunks"`
	}
	deadline := time.Now().Add(jobTimeout)
	for s.do(t, http.MethodGet, "/v1/jobs/"+upLong.JobID, nil, "", &job); job.State != "transcoding"; s.do(t, http.MethodGet, "/v1/jobs/"+upLong.JobID, nil, "", &job) {
		if time.Now().After(deadline) || job.State == "ready" || job.State == "failed" {
			t.Fatalf("the long job is %q, never transcoding", job.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, upShort, e := s.uploadMultipart(t, short, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, e)
	}
	if j := s.waitJob(t, upShort.JobID, jobTimeout); j.State != "ready" {
		t.Fatalf("short job %s ended %q (%+v)", upShort.JobID, j.State, j.Error)
	}
	s.do(t, http.MethodGet, "/v1/jobs/"+upLong.JobID, nil, "", &job)
	if job.Chunks == nil || job.Chunks.Total != 6 || job.Chunks.Done > 3 || job.State == "ready" {
		t.Errorf("when the short job was ready the long one was %q with chunks %+v: want at most 3 of 6 done", job.State, job.Chunks)
	} else {
		t.Logf("the short job was ready with %d of the long job's %d chunks done", job.Chunks.Done, job.Chunks.Total)
	}
	if j := s.waitJob(t, upLong.JobID, jobTimeout); j.State != "ready" {
		t.Fatalf("long job %s ended %q (%+v)", upLong.JobID, j.State, j.Error)
	}
}
