package workers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	stageEnv
	ff      *fakeFFmpeg
	objects *fakes.Objects
	events  *fakes.Events
	jobs    *fakes.Jobs
	h       *workers.Handlers
}

// stageEnv is what every handler harness checks after a task: the tasks
// it enqueued and its work dir.
type stageEnv struct {
	queue   *fakes.Queue
	workDir string
}

func newStageEnv(t *testing.T) stageEnv { return stageEnv{queue: &fakes.Queue{}, workDir: t.TempDir()} }

// healthyStorage answers every check read of the fake object store's
// presigned URLs as a working S3 would: 206 with the first byte.
var healthyStorage = &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusPartialContent, Status: "206 Partial Content", Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
})}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func newHarness(t *testing.T, configure ...func(*workers.Config)) *harness {
	t.Helper()
	x := &harness{stageEnv: newStageEnv(t), ff: &fakeFFmpeg{}, objects: &fakes.Objects{}, events: &fakes.Events{}, jobs: &fakes.Jobs{}}
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
func (x stageEnv) checkClean(t *testing.T) {
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
func (x stageEnv) only(t *testing.T) fakes.Enqueued {
	t.Helper()
	got := x.queue.Enqueued()
	if len(got) != 1 {
		t.Fatalf("enqueued %d tasks, want 1", len(got))
	}
	return got[0]
}

func (x stageEnv) wantNothingEnqueued(t *testing.T) {
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
	busErr := errors.New("nats: no responders")
	queueErr := errors.New("redis: connection refused")
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
	return transcodeTaskLasting(t, plan, testMedia().GetDurationSeconds())
}

// transcodeTaskLasting is the transcode of plan for a source of seconds.
func transcodeTaskLasting(t *testing.T, plan *kilnv1.Plan, seconds float64) *asynq.Task {
	t.Helper()
	media := testMedia()
	media.DurationSeconds = seconds
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

func TestTranscodeFailures(t *testing.T) {
	s3Err := errors.New("s3: slow down")
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
