package workers_test

// The media handlers with the real ffmpeg and ffprobe against sources that
// fail the way object storage and networks fail (internal/ffmpeg/ffmpegtest):
// infrastructure failures must be retried, bad input must fail the job.

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/ffmpeg/ffmpegtest"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

// presignTo is object storage whose presigned URLs all lead to url.
type presignTo struct {
	*fakes.Objects
	url string
}

func (o presignTo) PresignGet(ctx context.Context, bucket, key string, ttl time.Duration) (*url.URL, error) {
	if _, err := o.Objects.PresignGet(ctx, bucket, key, ttl); err != nil {
		return nil, err
	}
	return url.Parse(o.url)
}

// testReadTimeout replaces workers.ReadTimeout in the tests, so a stall
// fails in a second rather than 30.
const testReadTimeout = time.Second

// shortTimeout is the real runner with the handlers' read timeout
// shortened; it fails the test when a handler runs ffmpeg or ffprobe on
// its source without the read timeout.
type shortTimeout struct {
	t *testing.T
	r *ffmpeg.Runner
}

func (s shortTimeout) Run(ctx context.Context, args []string, progress func(ffmpeg.Progress)) error {
	args = slices.Clone(args)
	i := slices.Index(args, "-rw_timeout")
	if i < 0 || i+1 >= len(args) || args[i+1] != strconv.FormatInt(workers.ReadTimeout.Microseconds(), 10) {
		s.t.Errorf("ffmpeg run without -rw_timeout %d: %q", workers.ReadTimeout.Microseconds(), args)
	} else {
		args[i+1] = strconv.FormatInt(testReadTimeout.Microseconds(), 10)
	}
	return s.r.Run(ctx, args, progress)
}

func (s shortTimeout) Probe(ctx context.Context, input string, opts ffmpeg.ProbeOptions) (*ffmpeg.ProbeResult, error) {
	if opts.ReadTimeout != workers.ReadTimeout {
		s.t.Errorf("probe with ReadTimeout %v, want %v", opts.ReadTimeout, workers.ReadTimeout)
	}
	opts.ReadTimeout = testReadTimeout
	return s.r.Probe(ctx, input, opts)
}

// realHarness is Handlers with the real ffmpeg reading input.
func realHarness(t *testing.T, input string) (*workers.Handlers, *fakes.Objects, *fakes.Queue) {
	t.Helper()
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	objects, queue := &fakes.Objects{}, &fakes.Queue{}
	h := workers.New(workers.Config{
		FFmpeg:  shortTimeout{t, ffmpeg.New(ffmpeg.Config{Logger: zaptest.NewLogger(t)})},
		Objects: presignTo{objects, input}, Events: &fakes.Events{}, Queue: queue, HTTPClient: &http.Client{Timeout: testReadTimeout},
		OutputsBucket: outputsBucket, WorkDir: t.TempDir(), Threads: 1,
	})
	return h, objects, queue
}

// failingSource is one source of the handler tests and what must come of it.
type failingSource struct {
	name  string
	input func() string
	// code is the failure code of a permanent failure, message its
	// message; no code: retried.
	code, message string
}

// wantOutcome checks err against src's expectation.
func wantOutcome(t *testing.T, err error, src failingSource) {
	t.Helper()
	if src.code == "" {
		var ee *ffmpeg.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("got %v, want a retryable *ffmpeg.ExitError", err)
		}
		fakes.WantRetryable(t, err, ee)
		return
	}
	fakes.WantPermanent(t, err, src.code)
	if code, msg := failure.CodeOf(err); code != src.code || msg != src.message {
		t.Errorf("failure %s %q, want %s %q", code, msg, src.code, src.message)
	}
}

// clips are the sources of these tests: a 4 s 320x180 clip with its moov
// atom at the end (the mp4 muxer's default) and the same with faststart
// (as kiln's encoded renditions are).
func clips(t *testing.T) (moovAtEnd, faststart *ffmpegtest.Sources) {
	t.Helper()
	moovAtEnd = ffmpegtest.NewSources(t, testenv.Clip(t, testenv.ClipSpec{Seconds: 4}))
	faststart = ffmpegtest.NewSources(t, testenv.Clip(t, testenv.ClipSpec{Seconds: 4, ExtraArgs: []string{"-movflags", "+faststart"}}))
	return moovAtEnd, faststart
}

const invalidMediaMessage = "the file is not a readable video or audio file"

func TestProbeClassifiesRealFailures(t *testing.T) {
	moovAtEnd, _ := clips(t)
	big := bigMoovAtEnd(t)
	refused := ffmpegtest.RefusedURL(t)
	for _, src := range []failingSource{
		{name: "storage down (closed port)", input: func() string { return refused }},
		{name: "bad hostname", input: func() string { return ffmpegtest.BadHostURL }},
		{name: "tls failure", input: func() string { return moovAtEnd.HTTPSURL(ffmpegtest.OK) }},
		{name: "503", input: func() string { return moovAtEnd.URL(ffmpegtest.Status503) }},
		{name: "500", input: func() string { return moovAtEnd.URL(ffmpegtest.Status500) }},
		{name: "403 expired presigned URL", input: func() string { return moovAtEnd.URL(ffmpegtest.Status403) }},
		{name: "never answers", input: func() string { return moovAtEnd.URL(ffmpegtest.Stall) }},
		{name: "closes mid-body", input: func() string { return moovAtEnd.URL(ffmpegtest.Cut) }},
		{name: "resets mid-body", input: func() string { return moovAtEnd.URL(ffmpegtest.Reset) }},
		// ffprobe says "End of file", as for a truncated Ogg file, and
		// "moov atom not found": the check read finds the server broken.
		{name: "closes before answering", input: func() string { return moovAtEnd.URL(ffmpegtest.CloseBeforeAnswer) }},
		{name: "hangs after the first request", input: func() string { return big.URL(ffmpegtest.StallAfterFirst) }},
		{name: "404: deleted", input: func() string { return moovAtEnd.URL(ffmpegtest.Status404) }, code: failure.InvalidMedia, message: workers.MessageMissing},
		{name: "garbage", input: func() string { return moovAtEnd.URL(ffmpegtest.Garbage) }, code: failure.InvalidMedia, message: invalidMediaMessage},
		{name: "mp4 without moov", input: func() string { return moovAtEnd.URL(ffmpegtest.TruncatedMoov) }, code: failure.InvalidMedia, message: invalidMediaMessage},
	} {
		t.Run(src.name, func(t *testing.T) {
			h, _, queue := realHarness(t, src.input())
			wantOutcome(t, h.Probe(t.Context(), probeTask(t, "")), src)
			if got := queue.Enqueued(); len(got) > 0 {
				t.Errorf("enqueued %s after a failed probe", got[0].Task.Type())
			}
		})
	}
	t.Run("healthy source", func(t *testing.T) {
		h, _, queue := realHarness(t, moovAtEnd.URL(ffmpegtest.OK))
		if err := h.Probe(t.Context(), probeTask(t, "")); err != nil {
			t.Fatal(err)
		}
		if got := queue.Enqueued(); len(got) != 1 {
			t.Fatalf("enqueued %d tasks, want the transcode", len(got))
		}
	})
	// Seeks to the moov atom at the end that stall (twice: ffmpeg tries
	// again once) read as "moov atom not found" (bad input) to ffprobe;
	// the check read finds the server answering, and asked again the
	// source probes.
	t.Run("two seeks to the moov atom stalled", func(t *testing.T) {
		big := bigMoovAtEnd(t)
		h, _, queue := realHarness(t, big.URL(ffmpegtest.StallTwoSeeks))
		if err := h.Probe(t.Context(), probeTask(t, "")); err != nil {
			t.Fatal(err)
		}
		if n := big.StalledSeeks(); n < 2 {
			t.Fatalf("ffprobe sought %d times: the clip is too small to need new requests", n)
		}
		if got := queue.Enqueued(); len(got) != 1 {
			t.Fatalf("enqueued %d tasks, want the transcode", len(got))
		}
	})
}

// bigMoovAtEnd serves a clip of about 1 MB with its moov atom at the end:
// more than ffmpeg's first read, so the demuxer seeks with a new request.
func bigMoovAtEnd(t *testing.T) *ffmpegtest.Sources {
	return ffmpegtest.NewSources(t, testenv.Clip(t, testenv.ClipSpec{Seconds: 4,
		Video: []string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-b:v", "2M"}}))
}

// smallPlan is one 144p rung of a 320x180 30 fps source with audio.
func smallPlan() *kilnv1.Plan {
	return &kilnv1.Plan{Preset: "default", Rungs: []*kilnv1.Rung{{Name: "144p", Width: 256, Height: 144, VideoBitRate: 200_000}},
		FrameRate: 30, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 64_000, Normalisation: &kilnv1.Normalisation{}}
}

func TestTranscodeClassifiesRealFailures(t *testing.T) {
	moovAtEnd, faststart := clips(t)
	big := bigMoovAtEnd(t)
	refused := ffmpegtest.RefusedURL(t)
	const decodeMessage = "the source could not be decoded"
	for _, src := range []failingSource{
		// The bug: kiln restarted before MinIO; the recovered transcode
		// found storage down and failed the job for good.
		{name: "storage down (closed port)", input: func() string { return refused }},
		{name: "503", input: func() string { return moovAtEnd.URL(ffmpegtest.Status503) }},
		{name: "403 expired presigned URL", input: func() string { return moovAtEnd.URL(ffmpegtest.Status403) }},
		{name: "never answers", input: func() string { return moovAtEnd.URL(ffmpegtest.Stall) }},
		// Storage restarting mid-transcode: ffmpeg exits 0 with half the
		// video; it must not pass for the whole.
		{name: "closes mid-body", input: func() string { return faststart.URL(ffmpegtest.Cut) }},
		{name: "resets mid-body", input: func() string { return faststart.URL(ffmpegtest.Reset) }},
		{name: "stalls mid-body", input: func() string { return faststart.URL(ffmpegtest.StallMidBody) }},
		{name: "closes before answering", input: func() string { return moovAtEnd.URL(ffmpegtest.CloseBeforeAnswer) }},
		{name: "hangs after the first request", input: func() string { return big.URL(ffmpegtest.StallAfterFirst) }},
		{name: "404: deleted", input: func() string { return moovAtEnd.URL(ffmpegtest.Status404) }, code: failure.TranscodeFailed, message: workers.MessageMissing},
		{name: "garbage", input: func() string { return moovAtEnd.URL(ffmpegtest.Garbage) }, code: failure.TranscodeFailed, message: decodeMessage},
		{name: "mp4 without moov", input: func() string { return moovAtEnd.URL(ffmpegtest.TruncatedMoov) }, code: failure.TranscodeFailed, message: decodeMessage},
	} {
		t.Run(src.name, func(t *testing.T) {
			h, objects, queue := realHarness(t, src.input())
			wantOutcome(t, h.Transcode(t.Context(), transcodeTask(t, smallPlan())), src)
			// Segments finished before the failure may be stored (the
			// retry stores the same ones again), but nothing is handed on
			// and no playlist is closed as if it were complete.
			if got := queue.Enqueued(); len(got) > 0 {
				t.Errorf("enqueued %d tasks after a failed transcode", len(got))
			}
			for _, p := range objects.Puts() {
				if strings.HasSuffix(p.Key, ".m3u8") && strings.Contains(p.Body, "#EXT-X-ENDLIST") {
					t.Errorf("%s closed after a failed transcode:\n%s", p.Key, p.Body)
				}
			}
		})
	}
	t.Run("healthy source", func(t *testing.T) {
		h, objects, _ := realHarness(t, faststart.URL(ffmpegtest.OK))
		if err := h.Transcode(t.Context(), transcodeTask(t, smallPlan())); err != nil {
			t.Fatal(err)
		}
		if _, ok := objects.Latest(layout.PlaylistKey(assetID, "144p")); !ok {
			t.Errorf("stored %v, want the 144p rung", objects.Puts())
		}
	})
}
