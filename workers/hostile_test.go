package workers_test

// Hostile sources through the real probe, plan and transcode (ffmpeg and
// ffprobe reading over HTTP, and MinIO for the source swap): files built to
// make kiln check one thing and encode another.

import (
	"bytes"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

func ffprobeOut(t *testing.T, file string, args ...string) string {
	t.Helper()
	full := append(append([]string{"-v", "error"}, args...), "-of", "csv=p=0", file)
	out, err := exec.CommandContext(t.Context(), "ffprobe", full...).Output()
	if err != nil {
		t.Fatalf("ffprobe %q: %v", full, err)
	}
	return strings.TrimSpace(string(out))
}

func ffprobeFloat(t *testing.T, file string, args ...string) float64 {
	t.Helper()
	s := ffprobeOut(t, file, args...)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("ffprobe %s: %q", file, s)
	}
	return f
}

// serve serves file over HTTP (with ranges) until the test ends.
func serve(t *testing.T, file string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) }))
	t.Cleanup(srv.Close)
	return srv.URL + "/" + filepath.Base(file)
}

// probeThenTranscode runs the real probe of the source at url with cfg's
// limits, then the transcode it hands over to; it returns the transcode's
// error and its READY event (nil on failure).
func probeThenTranscode(t *testing.T, url string, limits workers.Limits) (error, *fakes.Objects, *kilnv1.JobEvent) {
	t.Helper()
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	objects, queue, events := &fakes.Objects{}, &fakes.Queue{}, &fakes.Events{}
	h := workers.New(workers.Config{
		FFmpeg:  ffmpeg.New(ffmpeg.Config{Logger: zaptest.NewLogger(t)}),
		Objects: presignTo{objects, url}, Events: events, Queue: queue,
		OutputsBucket: outputsBucket, WorkDir: t.TempDir(), Threads: 1, Limits: limits, X264Preset: "ultrafast",
	})
	if err := h.Probe(t.Context(), probeTask(t, "")); err != nil {
		t.Fatalf("probe: %v", err)
	}
	transcode := queue.Enqueued()[0].Task
	if err := h.Transcode(t.Context(), transcode); err != nil {
		return err, objects, nil
	}
	evs := events.Events()
	if ready := evs[len(evs)-1]; ready.GetState() == kilnv1.JobState_JOB_STATE_READY {
		return nil, objects, ready
	}
	t.Fatalf("the transcode's last event is %v, want READY", evs[len(evs)-1])
	return nil, nil, nil
}

// rungFile writes the stored rendition name (its init segment and
// segments end to end, as its media playlist lists them) to a file to
// probe.
func rungFile(t *testing.T, objects *fakes.Objects, name string) string {
	t.Helper()
	var pl, body []byte
	for _, p := range objects.Puts() {
		if strings.HasSuffix(p.Key, "/hls/"+name+"/index.m3u8") {
			pl = []byte(p.Body)
		}
	}
	segs, err := playlist.ParseSegments(pl)
	if err != nil || len(segs) == 0 {
		t.Fatalf("rendition %s: no stored playlist with segments (%v): %v", name, err, objects.Puts())
	}
	for _, file := range append([]string{"init.mp4"}, uris(segs)...) {
		p, ok := objects.Latest(layout.SegmentKey(assetOf(objects, name), name, file))
		if !ok {
			t.Fatalf("rendition %s: %s not stored", name, file)
		}
		body = append(body, p.Body...)
	}
	path := filepath.Join(t.TempDir(), name+".mp4")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func uris(segs []playlist.Segment) []string {
	var out []string
	for _, s := range segs {
		out = append(out, s.URI)
	}
	return out
}

// assetOf is the asset of the stored rendition name (the key's second
// part: assets/<asset>/hls/<name>/…).
func assetOf(objects *fakes.Objects, name string) string {
	for _, p := range objects.Puts() {
		if parts := strings.Split(p.Key, "/"); len(parts) > 3 && parts[0] == "assets" && parts[2] == "hls" && parts[3] == name {
			return parts[1]
		}
	}
	return ""
}

// TestCoverArtFirstEncodesTheProbedStream: an MP4 whose first video stream
// is a 2000x2000 PNG cover. The probe checks the limits on the real
// 320x180 stream; the transcode must encode that stream (it used to map
// [0:v:0], the PNG, and came out with renditions without video).
func TestCoverArtFirstEncodesTheProbedStream(t *testing.T) {
	err, objects, next := probeThenTranscode(t, serve(t, testenv.CoverFirstMP4(t)), workers.Limits{})
	if err != nil {
		t.Fatalf("transcode: %v", err)
	}
	if v := next.GetPlan().GetVideoStream(); v != 1 || next.GetMedia().GetVideo().GetWidth() != 320 {
		t.Errorf("plan maps video stream %d of a %dpx-wide video, want stream 1, 320 px", v, next.GetMedia().GetVideo().GetWidth())
	}
	for _, r := range next.GetPlan().GetRungs() {
		file := rungFile(t, objects, r.GetName())
		if got, want := ffprobeOut(t, file, "-select_streams", "v", "-show_entries", "stream=codec_name,width,height"),
			"h264,"+strconv.Itoa(int(r.GetWidth()))+","+strconv.Itoa(int(r.GetHeight())); got != want {
			t.Errorf("rung %s video %q, want %q (the probed stream, not the cover)", r.GetName(), got, want)
		}
		if n := ffprobeFloat(t, file, "-count_packets", "-select_streams", "v", "-show_entries", "stream=nb_read_packets"); n < 50 {
			t.Errorf("rung %s has %v video frames, want the 2 s clip's 60", r.GetName(), n)
		}
	}
}

// TestCoverArtDecoderRefused: the decoder whitelist and -max_pixels hold
// even for a plan that names the cover (a plan from before indices, or a
// forged one): ffmpeg refuses to decode it.
func TestCoverArtDecoderRefused(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg")
	plan := smallPlan()
	plan.VideoStream, plan.HasAudio = new(int32), false // stream 0: the PNG
	out := workers.Outputs{Root: t.TempDir()}
	if err := out.Prepare(plan); err != nil {
		t.Fatal(err)
	}
	args := workers.TranscodeArgs(workers.Input{URL: serve(t, testenv.CoverFirstMP4(t))}, plan, out, workers.EncodeOptions{X264Preset: "ultrafast"})
	err := ffmpeg.New(ffmpeg.Config{}).Run(t.Context(), args, nil)
	var ee *ffmpeg.ExitError
	if err == nil || !errors.As(err, &ee) || !strings.Contains(ee.Stderr, "not on whitelist") {
		t.Fatalf("got %v, want the png decoder refused", err)
	}
}

// TestLyingDurationIsBoundedAndMeasured: an MP4 whose headers claim 1 s
// while it holds 12 s, with a 5 s limit. The probe accepts the 1 s; the
// encode must stop at the probed duration (and its tolerance), and the
// duration handed on (to the catalog, via the READY event) must be the one
// decoded, not the header's. It used to come out a 12 s asset recorded as
// lasting 1 s.
func TestLyingDurationIsBoundedAndMeasured(t *testing.T) {
	err, objects, next := probeThenTranscode(t, serve(t, testenv.LyingMP4(t, 12, 1)), workers.Limits{MaxDuration: 5 * time.Second})
	if err != nil {
		t.Fatalf("transcode: %v", err)
	}
	if d := next.GetMedia().GetDurationSeconds(); math.Abs(d-1) > 0.1 {
		t.Fatalf("probed %v s, want the header's 1 s", d)
	}
	file := rungFile(t, objects, next.GetPlan().GetRungs()[0].GetName())
	real := ffprobeFloat(t, file, "-show_entries", "format=duration")
	if bound := 1 + workers.DurationTolerance(1); real > bound+0.2 {
		t.Errorf("the rendition lasts %.2f s: the encode was not bounded to the probed 1 s (+%.2f s)", real, workers.DurationTolerance(1))
	}
	if got := next.GetMedia().GetDecodedDurationSeconds(); math.Abs(got-real) > 0.25 {
		t.Errorf("decoded duration handed on %.2f s, the rendition lasts %.2f s", got, real)
	}
}

// TestUnknownDurationMeasuredAgainstTheLimit: a Matroska file written to a
// pipe has no duration in its header (like a browser's MediaRecorder
// WebM); the limits cannot refuse it by its header, the measured decode
// must: 8 s with a 5 s limit fails too_long.
func TestUnknownDurationMeasuredAgainstTheLimit(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	path := filepath.Join(t.TempDir(), "piped.mkv")
	spec := testenv.ClipSpec{Seconds: 8, Width: 160, Height: 90, Rate: "10", Path: "pipe:1"}
	args := spec.Args("pipe:1")
	cmd := exec.CommandContext(t.Context(), "ffmpeg", append(args[:len(args)-1], "-f", "matroska", "pipe:1")...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := ffprobeOut(t, path, "-show_entries", "format=duration"); got != "N/A" {
		t.Fatalf("piped mkv duration %q, want N/A", got)
	}
	err, objects, _ := probeThenTranscode(t, serve(t, path), workers.Limits{MaxDuration: 5 * time.Second})
	fakes.WantPermanent(t, err, failure.TooLong)
	if len(objects.Puts()) > 0 {
		t.Errorf("stored %d objects of a source over the limit", len(objects.Puts()))
	}
}

// TestSourceReplacedAfterProbe, with the test stack's MinIO: the source is
// overwritten (as a direct-upload URL still allows) between the probe and
// the transcode. Every read is pinned to the probed ETag, so the transcode
// fails with source_changed instead of encoding bytes nobody checked.
func TestSourceReplacedAfterProbe(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	s3 := testenv.S3(t)
	store, err := objstore.New(s3.Config)
	if err != nil {
		t.Fatal(err)
	}
	bucket := "kiln-test-workers-pin"
	if err := store.EnsureBuckets(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	key := "uploads/" + strconv.FormatInt(time.Now().UnixNano(), 36) + "/clip.mp4"
	put := func(spec testenv.ClipSpec) objstore.Info {
		t.Helper()
		b, err := os.ReadFile(testenv.Clip(t, spec))
		if err != nil {
			t.Fatal(err)
		}
		info, err := store.Put(t.Context(), bucket, key, bytes.NewReader(b), int64(len(b)), "video/mp4", nil)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	first := put(testenv.ClipSpec{Seconds: 2, Width: 320, Height: 180})
	t.Cleanup(func() { _ = store.Remove(t.Context(), bucket, key) })

	queue := &fakes.Queue{}
	h := workers.New(workers.Config{
		FFmpeg: ffmpeg.New(ffmpeg.Config{Logger: zaptest.NewLogger(t)}), Objects: store, Events: &fakes.Events{}, Queue: queue,
		OutputsBucket: bucket, WorkDir: t.TempDir(), Threads: 1, X264Preset: "ultrafast",
	})
	probe, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: jobID, AssetId: assetID, Attempt: attempt,
		Source: &kilnv1.ObjectRef{Bucket: bucket, Key: key, Etag: first.ETag, Size: first.Size}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Probe(t.Context(), probe.Task); err != nil {
		t.Fatal(err)
	}
	transcode := queue.Enqueued()[0].Task

	second := put(testenv.ClipSpec{Seconds: 2, Width: 640, Height: 360, Source: "testsrc"})
	if second.ETag == first.ETag {
		t.Fatal("the overwrite kept the ETag")
	}
	err = h.Transcode(t.Context(), transcode)
	fakes.WantPermanent(t, err, failure.SourceChanged)
	if code, msg := failure.CodeOf(err); code != failure.SourceChanged || msg != workers.MessageSourceChanged {
		t.Errorf("failure %s %q", code, msg)
	}
	if got := queue.Enqueued(); len(got) != 1 {
		t.Errorf("enqueued %d tasks, want only the transcode", len(got))
	}

	// A probe of the job's first ETag fails the same way now.
	err = h.Probe(t.Context(), probe.Task)
	fakes.WantPermanent(t, err, failure.SourceChanged)

	// The job of the new object (its own ETag) goes through.
	again, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: "job2", AssetId: assetID, Attempt: attempt,
		Source: &kilnv1.ObjectRef{Bucket: bucket, Key: key, Etag: second.ETag, Size: second.Size}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Probe(t.Context(), again.Task); err != nil {
		t.Fatal(err)
	}
	next := queue.Enqueued()[len(queue.Enqueued())-1].Task
	if next.Type() != tasks.TypeTranscode {
		t.Fatalf("enqueued %s", next.Type())
	}
	if err := h.Transcode(t.Context(), next); err != nil {
		t.Fatalf("transcode of the new object: %v", err)
	}
}

// TestLimitsRefuseAbsurdAspectRatios: a SAR far from square (legal in
// H.264 up to 65535:1) or one that displays the picture larger than the
// limits fails the probe with a clear code instead of planning renditions
// half a billion pixels wide.
func TestLimitsRefuseAbsurdAspectRatios(t *testing.T) {
	for _, tt := range []struct {
		sar  string
		w, h int
		code string // "": accepted
	}{
		{"65535:1", 8192, 1080, failure.InvalidMedia},
		{"1:65535", 8192, 1080, failure.InvalidMedia},
		{"2147483647:1", 1, 1080, failure.InvalidMedia},
		{"15:1", 4096, 1080, failure.TooLarge}, // displays 61440 px wide
		{"64:45", 720, 576, ""},                // PAL 16:9
		{"4:3", 1440, 1080, ""},                // HDV
	} {
		res := &ffmpeg.ProbeResult{Streams: []ffmpeg.ProbeStream{{CodecType: "video", CodecName: "h264",
			Width: tt.w, Height: tt.h, SampleAspectRatio: tt.sar, AvgFrameRate: "25/1", RFrameRate: "25/1"}}}
		m := workers.MediaFromProbe(res)
		err := workers.Limits{}.Check(m)
		if tt.code == "" {
			if err != nil {
				t.Errorf("SAR %s on %dx%d: %v, want accepted", tt.sar, tt.w, tt.h, err)
				continue
			}
			plan, err := workers.Plan(m, workers.DefaultPreset())
			if err != nil || plan.GetRungs()[0].GetWidth() > 8192 {
				t.Errorf("SAR %s on %dx%d: plan %v, %v", tt.sar, tt.w, tt.h, plan, err)
			}
			continue
		}
		fakes.WantPermanent(t, err, tt.code)
		if v := m.GetVideo(); v.GetDisplayWidth() <= 0 || v.GetDisplayHeight() <= 0 {
			t.Errorf("SAR %s on %dx%d displays as %dx%d", tt.sar, tt.w, tt.h, v.GetDisplayWidth(), v.GetDisplayHeight())
		}
	}
}
