package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		n    int
		base time.Duration
	}{
		{0, 10 * time.Second},
		{1, 20 * time.Second},
		{2, 40 * time.Second},
		{3, 80 * time.Second},
		{4, 160 * time.Second},
		{5, 320 * time.Second},
		{6, 10 * time.Minute}, // 640 s, capped
		{7, 10 * time.Minute},
		{8, 10 * time.Minute},
		{25, 10 * time.Minute},
		{1000, 10 * time.Minute},
	}
	const samples = 2000
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			lo, hi := tt.base-tt.base/5, tt.base+tt.base/5
			minSeen, maxSeen := time.Duration(1<<62), time.Duration(0)
			for range samples {
				d := tasks.RetryDelay(tt.n, errors.New("boom"), nil)
				if d < lo || d > hi {
					t.Fatalf("RetryDelay(%d) = %s, want within [%s, %s]", tt.n, d, lo, hi)
				}
				minSeen, maxSeen = min(minSeen, d), max(maxSeen, d)
			}
			// The jitter is real: the samples spread over most of the ±20 % band
			// on both sides of the base.
			if minSeen > tt.base-tt.base/10 || maxSeen < tt.base+tt.base/10 {
				t.Errorf("RetryDelay(%d) samples span [%s, %s]: jitter does not cover ±20 %% of %s", tt.n, minSeen, maxSeen, tt.base)
			}
		})
	}
}

func TestTaskID(t *testing.T) {
	tests := []struct {
		typ     string
		job     string
		attempt int32
		want    string
	}{
		{tasks.TypeProbe, "job1", 0, "kiln:probe:job1"},
		{tasks.TypeProbe, "job1", 1, "kiln:probe:job1"},
		{tasks.TypeProbe, "job1", -3, "kiln:probe:job1"},
		{tasks.TypeProbe, "job1", 2, "kiln:probe:job1:a2"},
		{tasks.TypeTranscode, "job1", 1, "kiln:transcode:job1"},
		{tasks.TypeTranscode, "job1", 3, "kiln:transcode:job1:a3"},
		{tasks.TypeThumbnail, "job1", 1, "kiln:thumbnail:job1"},
		{tasks.TypePackage, "job1", 12, "kiln:package:job1:a12"},
	}
	for _, tt := range tests {
		if got := tasks.TaskID(tt.typ, tt.job, tt.attempt); got != tt.want {
			t.Errorf("TaskID(%q, %q, %d) = %q, want %q", tt.typ, tt.job, tt.attempt, got, tt.want)
		}
	}
	// Deterministic, and distinct per stage, job and attempt.
	seen := map[string]string{}
	for _, typ := range []string{tasks.TypeProbe, tasks.TypeTranscode, tasks.TypeThumbnail, tasks.TypePackage} {
		for _, job := range []string{"a", "b"} {
			for _, attempt := range []int32{1, 2, 3} {
				id := tasks.TaskID(typ, job, attempt)
				if again := tasks.TaskID(typ, job, attempt); again != id {
					t.Errorf("TaskID not deterministic: %q then %q", id, again)
				}
				key := fmt.Sprint(typ, job, attempt)
				if prev, ok := seen[id]; ok {
					t.Errorf("TaskID %q shared by %s and %s", id, prev, key)
				}
				seen[id] = key
			}
		}
	}
}

func TestEvent(t *testing.T) {
	tests := []struct {
		attempt     int32
		wantID      string
		wantAttempt int32
	}{
		{0, "job1.failed", 1},
		{1, "job1.failed", 1},
		{2, "job1.a2.failed", 2},
		{7, "job1.a7.failed", 7},
	}
	for _, tt := range tests {
		before := time.Now()
		ev := tasks.Event("job1", "asset1", tt.attempt, kilnv1.JobState_JOB_STATE_FAILED, "failed")
		if ev.GetEventId() != tt.wantID || ev.GetAttempt() != tt.wantAttempt {
			t.Errorf("Event(attempt %d): id %q attempt %d, want %q, %d", tt.attempt, ev.GetEventId(), ev.GetAttempt(), tt.wantID, tt.wantAttempt)
		}
		if ev.GetJobId() != "job1" || ev.GetAssetId() != "asset1" || ev.GetState() != kilnv1.JobState_JOB_STATE_FAILED {
			t.Errorf("Event(attempt %d) = %v", tt.attempt, ev)
		}
		if ts := ev.GetTime().AsTime(); ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("Event time %s, want now", ts)
		}
	}
	// Same job, fact and attempt: same id (JetStream dedupes redeliveries);
	// another fact or attempt: another id.
	a1 := tasks.Event("j", "a", 1, kilnv1.JobState_JOB_STATE_READY, "ready").GetEventId()
	if again := tasks.Event("j", "a", 1, kilnv1.JobState_JOB_STATE_READY, "ready").GetEventId(); again != a1 {
		t.Errorf("event id not deterministic: %q then %q", a1, again)
	}
	a2 := tasks.Event("j", "a", 2, kilnv1.JobState_JOB_STATE_READY, "ready").GetEventId()
	other := tasks.Event("j", "a", 1, kilnv1.JobState_JOB_STATE_FAILED, "failed").GetEventId()
	if a1 == a2 || a1 == other || a2 == other {
		t.Errorf("event ids not distinct: attempt 1 %q, attempt 2 %q, other fact %q", a1, a2, other)
	}
}

// richMedia has doubles, nested messages and strings: bytes that are not
// valid UTF-8 when read as another payload's string field.
func richMedia() *kilnv1.MediaInfo {
	return &kilnv1.MediaInfo{
		Format: "mov,mp4,m4a,3gp,3g2,mj2", DurationSeconds: 12.345, SizeBytes: 123456789, BitRate: 4_000_000,
		Video: &kilnv1.VideoStream{Codec: "h264", Width: 1920, Height: 1080, FrameRate: 29.97, PixFmt: "yuv420p"},
		Audio: &kilnv1.AudioStream{Codec: "aac"},
	}
}

func richPlan() *kilnv1.Plan {
	return &kilnv1.Plan{
		Rungs:     []*kilnv1.Rung{{Name: "720p", Width: 1280, Height: 720, VideoBitRate: 3_000_000}, {Name: "360p", Width: 640, Height: 360, VideoBitRate: 800_000}},
		FrameRate: 29.97, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000, Preset: "default",
		Normalisation: &kilnv1.Normalisation{Rotate: 90, ConstantFrameRate: true},
		Decisions:     []string{"no upscaling"},
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJobAndAttemptOfEveryPayload(t *testing.T) {
	src := &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "uploads/x.mp4", Etag: "e", Size: 42, ContentType: "video/mp4"}
	for _, attempt := range []int32{0, 1, 2, 9} {
		payloads := []struct {
			typ string
			msg proto.Message
		}{
			{tasks.TypeProbe, &kilnv1.ProbeTask{JobId: "job-p", AssetId: "asset-p", Source: src, Preset: "default", Attempt: attempt}},
			{tasks.TypeTranscode, &kilnv1.TranscodeTask{JobId: "job-t", AssetId: "asset-t", Source: src, Media: richMedia(), Plan: richPlan(), Attempt: attempt}},
			{tasks.TypeThumbnail, &kilnv1.ThumbnailTask{JobId: "job-th", AssetId: "asset-th", Source: src, Media: richMedia(), Plan: richPlan(), Attempt: attempt}},
			{tasks.TypePackage, &kilnv1.PackageTask{JobId: "job-pk", AssetId: "asset-pk", Media: richMedia(), Plan: richPlan(),
				Encoded:   []*kilnv1.EncodedRung{{Name: "720p", Object: src}},
				PosterKey: "assets/asset-pk/thumbnails/poster.jpg", Attempt: attempt}},
		}
		for _, p := range payloads {
			t.Run(fmt.Sprintf("%s/attempt%d", p.typ, attempt), func(t *testing.T) {
				task := asynq.NewTask(p.typ, mustMarshal(t, p.msg))
				wantJob := p.msg.ProtoReflect().Get(p.msg.ProtoReflect().Descriptor().Fields().ByNumber(1)).String()
				wantAsset := p.msg.ProtoReflect().Get(p.msg.ProtoReflect().Descriptor().Fields().ByNumber(2)).String()
				job, asset := tasks.Job(task)
				if job != wantJob || asset != wantAsset {
					t.Errorf("Job() = %q, %q, want %q, %q", job, asset, wantJob, wantAsset)
				}
				if got, want := tasks.Attempt(task), max(attempt, 1); got != want {
					t.Errorf("Attempt() = %d, want %d", got, want)
				}
			})
		}
	}
}

func TestJobOfGarbage(t *testing.T) {
	for _, payload := range [][]byte{nil, {}, {0xff, 0xff, 0xff}, []byte("not a protobuf at all")} {
		task := asynq.NewTask(tasks.TypeProbe, payload)
		job, asset := tasks.Job(task) // must not panic
		if job != "" || asset != "" {
			t.Logf("Job(%q) = %q, %q", payload, job, asset)
		}
		if a := tasks.Attempt(task); a < 1 {
			t.Errorf("Attempt(%q) = %d, want ≥ 1", payload, a)
		}
	}
}

func TestDecode(t *testing.T) {
	want := &kilnv1.ProbeTask{JobId: "j", AssetId: "a", Preset: "default", Attempt: 2}
	var got kilnv1.ProbeTask
	if err := tasks.Decode(asynq.NewTask(tasks.TypeProbe, mustMarshal(t, want)), &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Errorf("Decode = %v, want %v", &got, want)
	}
	err := tasks.Decode(asynq.NewTask(tasks.TypeProbe, []byte{0xff, 0xff, 0xff}), &got)
	var te *tasks.Error
	if !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &te) || te.Code != "internal" {
		t.Errorf("Decode(garbage) = %v, want a permanent internal error", err)
	}
}

func TestPermanent(t *testing.T) {
	cause := errors.New("moov atom not found")
	err := tasks.Permanent("invalid_media", "the file is not a video", cause)
	if !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("Permanent does not wrap asynq.SkipRetry: %v", err)
	}
	if !errors.Is(err, cause) {
		t.Errorf("Permanent does not wrap its cause: %v", err)
	}
	var te *tasks.Error
	if !errors.As(err, &te) {
		t.Fatalf("Permanent does not wrap *tasks.Error: %v", err)
	}
	if te.Code != "invalid_media" || te.Message != "the file is not a video" || te.Err != cause {
		t.Errorf("*Error = %+v", te)
	}
	if got, want := te.Error(), "invalid_media: the file is not a video: moov atom not found"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// Still permanent and classified when wrapped again by a caller.
	wrapped := fmt.Errorf("probe: %w", tasks.Permanent("too_long", "over the limit", nil))
	if !errors.Is(wrapped, asynq.SkipRetry) || !errors.As(wrapped, &te) || te.Code != "too_long" {
		t.Errorf("wrapped Permanent lost its classification: %v", wrapped)
	}
	if got, want := te.Error(), "too_long: over the limit"; got != want {
		t.Errorf("Error() without cause = %q, want %q", got, want)
	}
	// A canceled job is permanent and recognisable.
	canceled := tasks.Permanent("canceled", "the job was canceled", tasks.ErrCanceled)
	if !errors.Is(canceled, tasks.ErrCanceled) || !errors.Is(canceled, asynq.SkipRetry) {
		t.Errorf("Permanent(ErrCanceled) = %v", canceled)
	}
}

func TestKeys(t *testing.T) {
	tests := []struct{ got, want string }{
		{tasks.AssetPrefix("as1"), "assets/as1/"},
		{tasks.RenditionMP4Key("as1", "720p"), "assets/as1/mp4/720p.mp4"},
		{tasks.PosterKey("as1"), "assets/as1/thumbnails/poster.jpg"},
		{tasks.HLSDir("as1", "1080p"), "assets/as1/hls/1080p"},
		{tasks.MasterKey("as1"), "assets/as1/hls/master.m3u8"},
		{tasks.AudioKey("as1"), "assets/as1/mp4/audio.m4a"},
		{tasks.ThumbnailDir("as1"), "assets/as1/thumbnails"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("key %q, want %q", tt.got, tt.want)
		}
	}
	// Every output key lives under the asset's prefix (RemovePrefix of an
	// asset removes all of it).
	for _, k := range []string{tasks.RenditionMP4Key("x", "240p"), tasks.PosterKey("x"), tasks.HLSDir("x", "240p"),
		tasks.MasterKey("x"), tasks.AudioKey("x"), tasks.ThumbnailDir("x")} {
		if len(k) <= len(tasks.AssetPrefix("x")) || k[:len(tasks.AssetPrefix("x"))] != tasks.AssetPrefix("x") {
			t.Errorf("%q is not under %q", k, tasks.AssetPrefix("x"))
		}
	}
}

func TestQueueWeights(t *testing.T) {
	w := tasks.QueueWeights()
	for _, q := range []string{tasks.QueueProbe, tasks.QueueTranscode, tasks.QueueThumbnail, tasks.QueuePackage, "webhook"} {
		if w[q] <= 0 {
			t.Errorf("queue %q has weight %d", q, w[q])
		}
	}
	if !(w[tasks.QueueProbe] > w[tasks.QueuePackage] && w[tasks.QueuePackage] > w[tasks.QueueThumbnail] &&
		w[tasks.QueueThumbnail] > w[tasks.QueueTranscode]) {
		t.Errorf("short stages must outrank transcode: %v", w)
	}
}

type cancelAll struct{ checked []string }

func (c *cancelAll) Check(_ context.Context, jobID string, attempt int32) error {
	c.checked = append(c.checked, fmt.Sprintf("%s@%d", jobID, attempt))
	return tasks.Permanent("canceled", "the job was canceled", tasks.ErrCanceled)
}

func TestCancelMiddleware(t *testing.T) {
	c := &cancelAll{}
	ran := 0
	h := tasks.CancelMiddleware(c)(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { ran++; return nil }))
	payload, _ := proto.Marshal(&kilnv1.TranscodeTask{JobId: "job-m", AssetId: "ast-m", Attempt: 2,
		Plan: &kilnv1.Plan{Rungs: []*kilnv1.Rung{{Name: "360p"}}}})
	if err := h.ProcessTask(t.Context(), asynq.NewTask(tasks.TypeTranscode, payload)); !errors.Is(err, tasks.ErrCanceled) || !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("canceled stage task: err = %v", err)
	}
	if ran != 0 || len(c.checked) != 1 || c.checked[0] != "job-m@2" {
		t.Fatalf("handler ran %d times, checked %v", ran, c.checked)
	}
	// Other task types (webhook deliveries) are not stage tasks.
	if err := h.ProcessTask(t.Context(), asynq.NewTask("kiln:webhook", []byte(`{"x":1}`))); err != nil || ran != 1 || len(c.checked) != 1 {
		t.Fatalf("non-stage task: err %v, ran %d, checked %v", err, ran, c.checked)
	}
}
