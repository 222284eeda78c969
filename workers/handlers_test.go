package workers_test

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

const (
	jobID         = "job1"
	assetID       = "asset1"
	attempt       = 2 // not the first, so ids and payloads must carry it
	sourcesBucket = "kiln-sources"
	outputsBucket = "kiln-outputs"
	sourceKey     = "uploads/0123456789abcdef01234567/clip.mp4"
)

// harness is a Handlers wired to fakes.
type harness struct {
	ff      *fakeFFmpeg
	objects *fakes.Objects
	events  *fakes.Events
	queue   *fakes.Queue
	jobs    *fakes.Jobs
	workDir string
	h       *workers.Handlers
}

// healthyStorage answers every check read of the fake object store's
// presigned URLs as a working S3 would: 206 with the first byte.
var healthyStorage = &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusPartialContent, Status: "206 Partial Content", Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
})}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func newHarness(t *testing.T, configure ...func(*workers.Config)) *harness {
	t.Helper()
	x := &harness{ff: &fakeFFmpeg{}, objects: &fakes.Objects{}, events: &fakes.Events{}, queue: &fakes.Queue{}, jobs: &fakes.Jobs{}, workDir: t.TempDir()}
	cfg := workers.Config{
		FFmpeg: x.ff, Objects: x.objects, Events: x.events, Queue: x.queue, Jobs: x.jobs,
		OutputsBucket: outputsBucket, WorkDir: x.workDir, HTTPClient: healthyStorage,
	}
	for _, c := range configure {
		if c != nil {
			c(&cfg)
		}
	}
	x.h = workers.New(cfg)
	return x
}

// checkClean fails if the handler left temp files behind.
func (x *harness) checkClean(t *testing.T) {
	t.Helper()
	left, err := os.ReadDir(x.workDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("work dir not cleaned up: %v", left)
	}
}

// only returns the one enqueued command.
func (x *harness) only(t *testing.T) fakes.Enqueued {
	t.Helper()
	got := x.queue.Enqueued()
	if len(got) != 1 {
		t.Fatalf("enqueued %d tasks, want 1", len(got))
	}
	return got[0]
}

func (x *harness) wantNothingEnqueued(t *testing.T) {
	t.Helper()
	if got := x.queue.Enqueued(); len(got) > 0 {
		t.Fatalf("enqueued %s, want nothing", got[0].Task.Type())
	}
}

// checkStage checks the task type and the options the stage table gives it.
func checkStage(t *testing.T, e fakes.Enqueued, typ, queue string, timeout time.Duration) {
	t.Helper()
	if e.Task.Type() != typ {
		t.Fatalf("enqueued %s, want %s", e.Task.Type(), typ)
	}
	if got := e.Opt(asynq.QueueOpt); got != queue {
		t.Errorf("queue %v, want %s", got, queue)
	}
	if got, want := e.Opt(asynq.TaskIDOpt), tasks.TaskID(typ, jobID, attempt); got != want {
		t.Errorf("task id %v, want %s", got, want)
	}
	if got := e.Opt(asynq.TimeoutOpt); got != timeout {
		t.Errorf("timeout %v, want %s", got, timeout)
	}
	if got := e.Opt(asynq.MaxRetryOpt); got == nil || got.(int) < 1 {
		t.Errorf("max retry %v, want some", got)
	}
	if j, a, att := tasks.Head(e.Task); j != jobID || a != assetID || att != attempt {
		t.Errorf("task head %s/%s/%d, want %s/%s/%d", j, a, att, jobID, assetID, attempt)
	}
}

func decode[M proto.Message](t *testing.T, task *asynq.Task, m M) M {
	t.Helper()
	if err := tasks.Decode(task, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func wantIDs(t *testing.T, events *fakes.Events, want ...string) {
	t.Helper()
	if got := events.IDs(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	for _, ev := range events.Events() {
		if ev.GetAttempt() != attempt || ev.GetJobId() != jobID || ev.GetAssetId() != assetID {
			t.Errorf("event %s: job %s asset %s attempt %d", ev.GetEventId(), ev.GetJobId(), ev.GetAssetId(), ev.GetAttempt())
		}
	}
}

func eventID(fact string) string { return fmt.Sprintf("%s.a%d.%s", jobID, attempt, fact) }

// --- probe ---

func probeResult(duration float64) *ffmpeg.ProbeResult {
	return &ffmpeg.ProbeResult{
		Format: ffmpeg.ProbeFormat{FormatName: "mov,mp4,m4a,3gp,3g2,mj2", Duration: duration, BitRate: 2_000_000, NbStreams: 2},
		Streams: []ffmpeg.ProbeStream{
			{Index: 0, CodecType: "video", CodecName: "h264", Profile: "High", Level: 31, Width: 1280, Height: 720,
				PixFmt: "yuv420p", SampleAspectRatio: "1:1", FieldOrder: "progressive", RFrameRate: "30/1", AvgFrameRate: "30/1"},
			{Index: 1, CodecType: "audio", CodecName: "aac", Profile: "LC", Channels: 2, ChannelLayout: "stereo", SampleRate: 48000, SampleFmt: "fltp"},
		},
	}
}

func probeTask(t *testing.T, preset string) *asynq.Task {
	t.Helper()
	cmd, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: jobID, AssetId: assetID, Attempt: attempt, Preset: preset,
		Source: &kilnv1.ObjectRef{Bucket: sourcesBucket, Key: sourceKey, Size: 12345}})
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Task
}

func TestProbeHandsOverToTranscode(t *testing.T) {
	x := newHarness(t)
	x.ff.probeResult = probeResult(10)
	if err := x.h.Probe(t.Context(), probeTask(t, "")); err != nil {
		t.Fatal(err)
	}

	if len(x.ff.probes) != 1 {
		t.Fatalf("%d probes, want 1", len(x.ff.probes))
	}
	call := x.ff.probes[0]
	if call.URL != fakes.URL(sourcesBucket, sourceKey) {
		t.Errorf("probed %q, want the presigned source", call.URL)
	}
	if call.Opts.FormatWhitelist != workers.FormatWhitelist || call.Opts.ProtocolWhitelist != workers.ProtocolWhitelist ||
		call.Opts.ProbeSize != workers.QuickProbeSize || call.Opts.AnalyzeDuration != workers.QuickAnalyzeDuration || call.Opts.ReadTimeout != workers.ReadTimeout {
		t.Errorf("probe options %+v: want the untrusted-input bounds", call.Opts)
	}

	wantMedia := workers.MediaFromProbe(probeResult(10))
	wantMedia.SizeBytes = 12345 // ffprobe gave no size: the upload's
	wantPlan, err := workers.Plan(wantMedia, workers.DefaultPreset())
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, x.events, eventID("probing"), eventID("probed"))
	evs := x.events.Events()
	if evs[0].GetState() != kilnv1.JobState_JOB_STATE_PROBING || evs[1].GetState() != kilnv1.JobState_JOB_STATE_PROBING {
		t.Errorf("states %s, %s; want PROBING", evs[0].GetState(), evs[1].GetState())
	}
	if !proto.Equal(evs[1].GetMedia(), wantMedia) || !proto.Equal(evs[1].GetPlan(), wantPlan) {
		t.Errorf("probed event media %v plan %v; want %v, %v", evs[1].GetMedia(), evs[1].GetPlan(), wantMedia, wantPlan)
	}

	e := x.only(t)
	checkStage(t, e, tasks.TypeTranscode, tasks.QueueTranscode, tasks.TranscodeTimeout(wantMedia))
	next := decode(t, e.Task, &kilnv1.TranscodeTask{})
	if next.GetJobId() != jobID || next.GetAssetId() != assetID || next.GetAttempt() != attempt {
		t.Errorf("transcode task head %s/%s/%d", next.GetJobId(), next.GetAssetId(), next.GetAttempt())
	}
	if next.GetSource().GetBucket() != sourcesBucket || next.GetSource().GetKey() != sourceKey {
		t.Errorf("transcode source %v", next.GetSource())
	}
	if !proto.Equal(next.GetMedia(), wantMedia) {
		t.Errorf("transcode media %v, want %v", next.GetMedia(), wantMedia)
	}
	if !proto.Equal(next.GetPlan(), wantPlan) || len(next.GetPlan().GetRungs()) == 0 {
		t.Errorf("transcode plan %v, want %v", next.GetPlan(), wantPlan)
	}
	if got := x.jobs.Checks(); !slices.Equal(got, []string{fmt.Sprintf("%s/%d", jobID, attempt)}) {
		t.Errorf("cancel checks %v, want one for the job's attempt", got)
	}
}

func TestProbeNamedPreset(t *testing.T) {
	small := workers.DefaultPreset()
	small.Name, small.Rungs = "small", small.Rungs[len(small.Rungs)-1:]
	x := newHarness(t, func(c *workers.Config) { c.Presets = map[string]workers.Preset{"small": small} })
	x.ff.probeResult = probeResult(10)
	if err := x.h.Probe(t.Context(), probeTask(t, "small")); err != nil {
		t.Fatal(err)
	}
	plan := decode(t, x.only(t).Task, &kilnv1.TranscodeTask{}).GetPlan()
	if plan.GetPreset() != "small" || len(plan.GetRungs()) != 1 {
		t.Errorf("plan %v, want the small preset's one rung", plan)
	}
}

func TestProbeFailures(t *testing.T) {
	s3Err := errors.New("s3: connection reset")
	queueErr := errors.New("redis: connection refused")
	busErr := errors.New("nats: no responders")
	sig, deadline, canceledExit := fakes.SignaledError(), fakes.DeadlineError(), fakes.CanceledExitError()
	tests := []struct {
		name      string
		preset    string
		configure func(*workers.Config)
		setup     func(*harness)
		// one of:
		code  string // permanent with this code
		cause error  // retryable, this error
		// probed: the probe result was published before the refusal.
		probed bool
	}{
		{name: "ffprobe rejects the input", setup: func(x *harness) { x.ff.probeErr = fakes.ExitError("ffprobe") }, code: failure.InvalidMedia},
		{name: "ffprobe output too large", setup: func(x *harness) {
			x.ff.probeErr = fmt.Errorf("ffprobe: %w", ffmpeg.ErrOutputTooLarge)
		}, code: failure.InvalidMedia},
		{name: "ffprobe signaled", setup: func(x *harness) { x.ff.probeErr = sig }, cause: sig},
		{name: "ffprobe past the deadline", setup: func(x *harness) { x.ff.probeErr = deadline }, cause: context.DeadlineExceeded},
		{name: "ffprobe exits as the context is canceled", setup: func(x *harness) { x.ff.probeErr = canceledExit }, cause: context.Canceled},
		{name: "plain context error", setup: func(x *harness) { x.ff.probeErr = context.DeadlineExceeded }, cause: context.DeadlineExceeded},
		{name: "presign fails", setup: func(x *harness) { x.objects.PresignErr = s3Err }, cause: s3Err},
		{name: "enqueue fails", setup: func(x *harness) { x.queue.Err = queueErr }, cause: queueErr},
		{name: "bus down", setup: func(x *harness) { x.events.Err = busErr }, cause: busErr},
		{name: "unknown preset", preset: "nope", code: failure.InvalidPreset},
		{name: "too long", setup: func(x *harness) { x.ff.probeResult = probeResult(7 * 3600) }, code: failure.TooLong, probed: true},
		{name: "too long for a custom limit", configure: func(c *workers.Config) { c.Limits.MaxDuration = time.Minute },
			setup: func(x *harness) { x.ff.probeResult = probeResult(61) }, code: failure.TooLong, probed: true},
		{name: "too large", configure: func(c *workers.Config) { c.Limits.MaxBytes = 1000 }, code: failure.TooLarge, probed: true},
		{name: "no streams", setup: func(x *harness) {
			x.ff.probeResult = &ffmpeg.ProbeResult{Format: ffmpeg.ProbeFormat{FormatName: "mov", Duration: 3}}
		}, code: failure.NoStreams, probed: true},
		{name: "unsupported codec", setup: func(x *harness) {
			x.ff.probeResult = probeResult(10)
			x.ff.probeResult.Streams[0].CodecName = "cinepak"
		}, code: failure.UnsupportedCodec, probed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newHarness(t, tt.configure)
			x.ff.probeResult = probeResult(10)
			if tt.setup != nil {
				tt.setup(x)
			}
			err := x.h.Probe(t.Context(), probeTask(t, tt.preset))
			if tt.code != "" {
				fakes.WantPermanent(t, err, tt.code)
			} else {
				fakes.WantRetryable(t, err, tt.cause)
			}
			x.wantNothingEnqueued(t)
			if tt.probed && !slices.Contains(x.events.IDs(), eventID("probed")) {
				t.Errorf("events %q: want the probe result published", x.events.IDs())
			}
		})
	}
}

func TestProbeCanceledMeanwhile(t *testing.T) {
	x := newHarness(t)
	x.ff.probeResult = probeResult(10)
	x.ff.during = x.jobs.Cancel
	err := x.h.Probe(t.Context(), probeTask(t, ""))
	fakes.WantCanceled(t, err)
	x.wantNothingEnqueued(t)
}

// --- transcode ---

func testMedia() *kilnv1.MediaInfo {
	return &kilnv1.MediaInfo{Format: "mov,mp4,m4a,3gp,3g2,mj2", DurationSeconds: 10, SizeBytes: 1_000_000, VideoStreams: 1, AudioStreams: 1,
		Video: &kilnv1.VideoStream{Codec: "h264", Width: 640, Height: 360, DisplayWidth: 640, DisplayHeight: 360, FrameRate: 30, NominalFrameRate: 30},
		Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 2, SampleRate: 48000}}
}

func videoPlan() *kilnv1.Plan {
	return &kilnv1.Plan{Preset: "default",
		Rungs: []*kilnv1.Rung{
			{Name: "360p", Width: 640, Height: 360, VideoBitRate: 800_000},
			{Name: "240p", Width: 426, Height: 240, VideoBitRate: 400_000},
		},
		FrameRate: 30, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000, Normalisation: &kilnv1.Normalisation{}}
}

func audioPlan() *kilnv1.Plan {
	return &kilnv1.Plan{Preset: "default", SegmentSeconds: 6, HasAudio: true, AudioOnly: true, AudioBitRate: 128_000, Normalisation: &kilnv1.Normalisation{}}
}

func transcodeTask(t *testing.T, plan *kilnv1.Plan) *asynq.Task {
	t.Helper()
	media := testMedia()
	if plan.GetAudioOnly() {
		media.Video, media.VideoStreams = nil, 0
	}
	cmd, err := tasks.NewTranscodeTask(t.Context(), &kilnv1.TranscodeTask{JobId: jobID, AssetId: assetID, Attempt: attempt,
		Source: &kilnv1.ObjectRef{Bucket: sourcesBucket, Key: sourceKey}, Media: media, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Task
}

func TestTranscodeHandsOverToThumbnail(t *testing.T) {
	x := newHarness(t, func(c *workers.Config) { c.Threads = 2 })
	x.ff.progress = []ffmpeg.Progress{{OutTime: 5 * time.Second}, {OutTime: 6 * time.Second}, {OutTime: 10 * time.Second, Done: true}}
	if err := x.h.Transcode(t.Context(), transcodeTask(t, videoPlan())); err != nil {
		t.Fatal(err)
	}
	runs := x.ff.Runs()
	if len(runs) != 1 {
		t.Fatalf("%d ffmpeg runs, want 1 (one decode for every rung)", len(runs))
	}
	if in := fakes.Input(runs[0]); in != fakes.URL(sourcesBucket, sourceKey) {
		t.Errorf("ffmpeg input %q, want the presigned source", in)
	}
	if !slices.Contains(runs[0], "-threads") || !slices.Contains(runs[0], "veryfast") {
		t.Errorf("args %q: want -threads and the default x264 preset", runs[0])
	}

	// Progress at most once a second: the first report only.
	wantIDs(t, x.events, eventID("transcoding"), eventID("transcoding.50"))
	if p := x.events.Events()[1].GetProgress(); p != 0.5 {
		t.Errorf("progress %v, want 0.5", p)
	}
	for _, ev := range x.events.Events() {
		if ev.GetState() != kilnv1.JobState_JOB_STATE_TRANSCODING {
			t.Errorf("event %s state %s, want TRANSCODING", ev.GetEventId(), ev.GetState())
		}
	}

	puts := x.objects.Puts()
	if len(puts) != 2 {
		t.Fatalf("uploads %v, want the two rungs", puts)
	}
	for i, name := range []string{"360p", "240p"} {
		want := fakes.Put{Bucket: outputsBucket, Key: layout.EncodedKey(assetID, name), ContentType: "video/mp4", Body: "encoded " + name + ".mp4"}
		if puts[i] != want {
			t.Errorf("upload %d = %+v, want %+v", i, puts[i], want)
		}
	}

	e := x.only(t)
	checkStage(t, e, tasks.TypeThumbnail, tasks.QueueThumbnail, tasks.ThumbnailTimeout)
	next := decode(t, e.Task, &kilnv1.ThumbnailTask{})
	if next.GetSource().GetBucket() != outputsBucket || next.GetSource().GetKey() != layout.EncodedKey(assetID, "360p") {
		t.Errorf("thumbnail source %v, want the top rung", next.GetSource())
	}
	// The media carries the duration ffmpeg decoded (its last out_time).
	wantMedia := testMedia()
	wantMedia.DecodedDurationSeconds = 10
	if !proto.Equal(next.GetMedia(), wantMedia) || !proto.Equal(next.GetPlan(), videoPlan()) {
		t.Errorf("thumbnail task media %v plan %v", next.GetMedia(), next.GetPlan())
	}
	x.checkClean(t)
}

func TestTranscodeAudioOnlyHandsOverToPackage(t *testing.T) {
	x := newHarness(t)
	if err := x.h.Transcode(t.Context(), transcodeTask(t, audioPlan())); err != nil {
		t.Fatal(err)
	}
	key := layout.EncodedKey(assetID, layout.AudioRendition)
	want := []fakes.Put{{Bucket: outputsBucket, Key: key, ContentType: "audio/mp4", Body: "encoded audio.m4a"}}
	if got := x.objects.Puts(); !slices.Equal(got, want) {
		t.Errorf("uploads %+v, want %+v", got, want)
	}
	wantIDs(t, x.events, eventID("transcoding"))

	e := x.only(t)
	checkStage(t, e, tasks.TypePackage, tasks.QueuePackage, tasks.PackageTimeout)
	next := decode(t, e.Task, &kilnv1.PackageTask{})
	wantEnc := []*kilnv1.EncodedRung{{Name: layout.AudioRendition, Object: &kilnv1.ObjectRef{Bucket: outputsBucket, Key: key}}}
	if len(next.GetEncoded()) != 1 || !proto.Equal(next.GetEncoded()[0], wantEnc[0]) {
		t.Errorf("package encoded %v, want %v", next.GetEncoded(), wantEnc)
	}
	if !proto.Equal(next.GetPlan(), audioPlan()) || next.GetMedia().GetAudio() == nil || next.GetOnly() != "" {
		t.Errorf("package task %v", next)
	}
	x.checkClean(t)
}

func TestTranscodeFailures(t *testing.T) {
	s3Err := errors.New("s3: slow down")
	queueErr := errors.New("redis: connection refused")
	sig, deadline, canceledExit := fakes.SignaledError(), fakes.DeadlineError(), fakes.CanceledExitError()
	tests := []struct {
		name      string
		plan      *kilnv1.Plan
		configure func(*workers.Config)
		setup     func(*harness)
		code      string
		cause     error
		// uploaded: the uploads that happened before the failure.
		uploaded int
	}{
		{name: "ffmpeg cannot decode the source", setup: func(x *harness) { x.ff.fail = failWith(fakes.ExitError("ffmpeg")) }, code: failure.TranscodeFailed},
		{name: "ffmpeg cannot decode the audio-only source", plan: audioPlan(), setup: func(x *harness) { x.ff.fail = failWith(fakes.ExitError("ffmpeg")) }, code: failure.TranscodeFailed},
		{name: "ffmpeg signaled (OOM killer)", setup: func(x *harness) { x.ff.fail = failWith(sig) }, cause: sig},
		{name: "ffmpeg past the deadline", setup: func(x *harness) { x.ff.fail = failWith(deadline) }, cause: context.DeadlineExceeded},
		{name: "ffmpeg exits as the context is canceled", setup: func(x *harness) { x.ff.fail = failWith(canceledExit) }, cause: context.Canceled},
		{name: "upload of the second rung fails", setup: func(x *harness) { x.objects.FailPut = failKey("240p", s3Err) }, cause: s3Err, uploaded: 1},
		{name: "upload of the audio fails", plan: audioPlan(), setup: func(x *harness) { x.objects.FailPut = failKey("audio", s3Err) }, cause: s3Err},
		{name: "enqueue fails", setup: func(x *harness) { x.queue.Err = queueErr }, cause: queueErr, uploaded: 2},
		{name: "presign fails", setup: func(x *harness) { x.objects.PresignErr = s3Err }, cause: s3Err},
		{name: "over the task's disk limit", configure: func(c *workers.Config) { c.Limits.MaxTaskDisk = 1000 }, code: failure.TooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newHarness(t, tt.configure)
			if tt.setup != nil {
				tt.setup(x)
			}
			plan := cmpOr(tt.plan, videoPlan())
			err := x.h.Transcode(t.Context(), transcodeTask(t, plan))
			if tt.code != "" {
				fakes.WantPermanent(t, err, tt.code)
			} else {
				fakes.WantRetryable(t, err, tt.cause)
			}
			x.wantNothingEnqueued(t)
			if got := len(x.objects.Puts()); got != tt.uploaded {
				t.Errorf("%d uploads, want %d", got, tt.uploaded)
			}
			if tt.code == failure.TooLarge && len(x.ff.Runs()) > 0 {
				t.Error("ffmpeg ran for a task over the disk limit")
			}
			x.checkClean(t)
		})
	}
}

func TestTranscodeCanceledMeanwhile(t *testing.T) {
	for _, plan := range []*kilnv1.Plan{videoPlan(), audioPlan()} {
		t.Run(fmt.Sprintf("audio only %v", plan.GetAudioOnly()), func(t *testing.T) {
			x := newHarness(t)
			x.ff.during = x.jobs.Cancel
			fakes.WantCanceled(t, x.h.Transcode(t.Context(), transcodeTask(t, plan)))
			x.wantNothingEnqueued(t)
			x.checkClean(t)
		})
	}
}

// failWith fails every ffmpeg run with err.
func failWith(err error) func([]string) error { return func([]string) error { return err } }

// failKey fails uploads of keys containing s.
func failKey(s string, err error) func(string) error {
	return func(key string) error {
		if strings.Contains(key, s) {
			return err
		}
		return nil
	}
}

func cmpOr[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

// --- thumbnail ---

func thumbnailTask(t *testing.T, duration float64) *asynq.Task {
	t.Helper()
	media := testMedia()
	media.DurationSeconds = duration
	cmd, err := tasks.NewThumbnailTask(t.Context(), &kilnv1.ThumbnailTask{JobId: jobID, AssetId: assetID, Attempt: attempt, Media: media, Plan: videoPlan(),
		Source: &kilnv1.ObjectRef{Bucket: outputsBucket, Key: layout.EncodedKey(assetID, "360p")}})
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Task
}

// isStoryboard tells the storyboard run from the poster runs.
func isStoryboard(args []string) bool { return slices.Contains(args, "-filter_complex") }

func TestThumbnailHandsOverToPackage(t *testing.T) {
	x := newHarness(t)
	if err := x.h.Thumbnail(t.Context(), thumbnailTask(t, 10)); err != nil {
		t.Fatal(err)
	}
	runs := x.ff.Runs()
	if len(runs) != 2 || isStoryboard(runs[0]) || !isStoryboard(runs[1]) {
		t.Fatalf("ffmpeg runs %q, want a poster (the first candidate is fine) then the storyboard", runs)
	}
	for _, r := range runs {
		if in := fakes.Input(r); in != fakes.URL(outputsBucket, layout.EncodedKey(assetID, "360p")) {
			t.Errorf("ffmpeg input %q, want the top rung", in)
		}
	}
	if len(x.events.Events()) != 0 {
		t.Errorf("events %q, want none", x.events.IDs())
	}

	dir := layout.ThumbnailDir(assetID)
	wantKeys := []string{dir + "/t_00001.jpg", dir + "/t_00002.jpg", dir + "/t_00003.jpg"}
	var gotKeys []string
	for _, p := range x.objects.Puts() {
		if p.Bucket != outputsBucket {
			t.Errorf("upload %s to bucket %s", p.Key, p.Bucket)
		}
		wantType := "image/jpeg"
		if strings.HasSuffix(p.Key, ".vtt") {
			wantType = "text/vtt"
		}
		if p.ContentType != wantType {
			t.Errorf("upload %s as %s, want %s", p.Key, p.ContentType, wantType)
		}
		gotKeys = append(gotKeys, p.Key)
	}
	want := append(append([]string{layout.PosterKey(assetID)}, wantKeys...), dir+"/sprite.jpg", dir+"/storyboard.vtt")
	if !slices.Equal(gotKeys, want) {
		t.Errorf("uploads %q, want %q", gotKeys, want)
	}
	if vtt, _ := x.objects.Put(dir + "/storyboard.vtt"); !strings.HasPrefix(vtt.Body, "WEBVTT") || !strings.Contains(vtt.Body, "sprite.jpg#xywh=") {
		t.Errorf("storyboard %q", vtt.Body)
	}

	e := x.only(t)
	checkStage(t, e, tasks.TypePackage, tasks.QueuePackage, tasks.PackageTimeout)
	next := decode(t, e.Task, &kilnv1.PackageTask{})
	if next.GetPosterKey() != layout.PosterKey(assetID) {
		t.Errorf("poster key %q", next.GetPosterKey())
	}
	grid := workers.NewStoryboardLayout(10, 640, 360)
	wantThumbs := &kilnv1.Thumbnails{PosterKey: layout.PosterKey(assetID), Keys: wantKeys, SpriteKey: dir + "/sprite.jpg", StoryboardKey: dir + "/storyboard.vtt",
		IntervalSeconds: grid.Interval, Width: int32(grid.TileWidth), Height: int32(grid.TileHeight)}
	if !proto.Equal(next.GetThumbnails(), wantThumbs) {
		t.Errorf("thumbnails %v, want %v", next.GetThumbnails(), wantThumbs)
	}
	var names []string
	for _, enc := range next.GetEncoded() {
		names = append(names, enc.GetName())
		if enc.GetObject().GetBucket() != outputsBucket || enc.GetObject().GetKey() != layout.EncodedKey(assetID, enc.GetName()) {
			t.Errorf("encoded %s at %v", enc.GetName(), enc.GetObject())
		}
	}
	if !slices.Equal(names, []string{"360p", "240p"}) {
		t.Errorf("encoded %q, want every rung", names)
	}
	if !proto.Equal(next.GetPlan(), videoPlan()) || next.GetMedia().GetDurationSeconds() != 10 {
		t.Errorf("package task %v", next)
	}
	x.checkClean(t)
}

func TestThumbnailSkipsDullPosters(t *testing.T) {
	x := newHarness(t)
	// The 10 % and 25 % candidates are black; the 50 % one is the poster.
	x.ff.frame = func(out string) image.Image {
		if strings.HasSuffix(out, "poster-0.jpg") || strings.HasSuffix(out, "poster-1.jpg") {
			return blackFrame()
		}
		return livelyFrame()
	}
	if err := x.h.Thumbnail(t.Context(), thumbnailTask(t, 10)); err != nil {
		t.Fatal(err)
	}
	var offsets []string
	for _, r := range x.ff.Runs() {
		if !isStoryboard(r) {
			offsets = append(offsets, r[1]) // -ss <offset>
		}
	}
	if !slices.Equal(offsets, []string{"1.000", "2.500", "5.000"}) {
		t.Errorf("poster offsets %q, want 10 %%, 25 %%, 50 %%", offsets)
	}
	poster, ok := x.objects.Put(layout.PosterKey(assetID))
	if !ok {
		t.Fatal("no poster uploaded")
	}
	mean, dev := jpegStats(t, poster.Body)
	if workers.Dull(mean, dev) {
		t.Errorf("uploaded a dull poster (mean %.0f, dev %.0f)", mean, dev)
	}
}

func TestThumbnailShortVideoWithoutStoryboard(t *testing.T) {
	x := newHarness(t)
	x.ff.thumbnails = -1
	if err := x.h.Thumbnail(t.Context(), thumbnailTask(t, 0.5)); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range x.objects.Puts() {
		keys = append(keys, p.Key)
	}
	if !slices.Equal(keys, []string{layout.PosterKey(assetID)}) {
		t.Errorf("uploads %q, want the poster only", keys)
	}
	th := decode(t, x.only(t).Task, &kilnv1.PackageTask{}).GetThumbnails()
	if th.GetPosterKey() != layout.PosterKey(assetID) || len(th.GetKeys()) > 0 || th.GetSpriteKey() != "" || th.GetStoryboardKey() != "" {
		t.Errorf("thumbnails %v, want a poster and no storyboard", th)
	}
}

func TestThumbnailFailures(t *testing.T) {
	s3Err := errors.New("s3: internal error")
	queueErr := errors.New("redis: connection refused")
	sig, deadline := fakes.SignaledError(), fakes.DeadlineError()
	poster := func(err error) func([]string) error {
		return func(args []string) error {
			if !isStoryboard(args) {
				return err
			}
			return nil
		}
	}
	storyboard := func(err error) func([]string) error {
		return func(args []string) error {
			if isStoryboard(args) {
				return err
			}
			return nil
		}
	}
	tests := []struct {
		name     string
		duration float64
		setup    func(*harness)
		code     string
		cause    error
	}{
		{name: "poster: ffmpeg rejects the input", setup: func(x *harness) { x.ff.fail = poster(fakes.ExitError("ffmpeg")) }, code: failure.ThumbnailFailed},
		{name: "first-frame poster: ffmpeg rejects the input", duration: 0.5, setup: func(x *harness) { x.ff.fail = poster(fakes.ExitError("ffmpeg")) }, code: failure.ThumbnailFailed},
		{name: "first-frame poster: nothing decodable", duration: 0.5, setup: func(x *harness) {
			x.ff.frame = func(string) image.Image { return nil } // writes a file that is not a JPEG
		}, code: failure.ThumbnailFailed},
		{name: "storyboard: ffmpeg rejects the input", setup: func(x *harness) { x.ff.fail = storyboard(fakes.ExitError("ffmpeg")) }, code: failure.ThumbnailFailed},
		{name: "poster: ffmpeg signaled", setup: func(x *harness) { x.ff.fail = poster(sig) }, cause: sig},
		{name: "storyboard: ffmpeg signaled", setup: func(x *harness) { x.ff.fail = storyboard(sig) }, cause: sig},
		{name: "storyboard: past the deadline", setup: func(x *harness) { x.ff.fail = storyboard(deadline) }, cause: context.DeadlineExceeded},
		{name: "poster upload fails", setup: func(x *harness) { x.objects.FailPut = failKey("poster", s3Err) }, cause: s3Err},
		{name: "sprite upload fails", setup: func(x *harness) { x.objects.FailPut = failKey("sprite", s3Err) }, cause: s3Err},
		{name: "storyboard upload fails", setup: func(x *harness) { x.objects.FailPut = failKey(".vtt", s3Err) }, cause: s3Err},
		{name: "enqueue fails", setup: func(x *harness) { x.queue.Err = queueErr }, cause: queueErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newHarness(t)
			tt.setup(x)
			err := x.h.Thumbnail(t.Context(), thumbnailTask(t, cmpOr(tt.duration, 10)))
			if tt.code != "" {
				fakes.WantPermanent(t, err, tt.code)
			} else {
				fakes.WantRetryable(t, err, tt.cause)
			}
			x.wantNothingEnqueued(t)
			x.checkClean(t)
		})
	}
}

func TestThumbnailCanceledMeanwhile(t *testing.T) {
	x := newHarness(t)
	x.ff.during = x.jobs.Cancel
	fakes.WantCanceled(t, x.h.Thumbnail(t.Context(), thumbnailTask(t, 10)))
	x.wantNothingEnqueued(t)
	x.checkClean(t)
}

// jpegStats returns the mean and standard deviation of a JPEG's luma.
func jpegStats(t *testing.T, data string) (mean, dev float64) {
	t.Helper()
	img, err := jpeg.Decode(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var sum, sq, n float64
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			l := float64(color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y)
			sum, sq, n = sum+l, sq+l*l, n+1
		}
	}
	mean = sum / n
	return mean, math.Sqrt(max(0, sq/n-mean*mean))
}
