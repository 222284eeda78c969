package tasks_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func TestRetryDelayAfterLostWorker(t *testing.T) {
	for _, n := range []int{0, 3, 8} {
		if d := tasks.RetryDelay(n, asynq.ErrLeaseExpired, nil); d != time.Second {
			t.Errorf("RetryDelay(%d, lease expired) = %s, want 1s", n, d)
		}
	}
}

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
		{tasks.TypePackage, "job1", 12, "kiln:package:job1:a12"},
	}
	for _, tt := range tests {
		if got := tasks.TaskID(tt.typ, tt.job, tt.attempt); got != tt.want {
			t.Errorf("TaskID(%q, %q, %d) = %q, want %q", tt.typ, tt.job, tt.attempt, got, tt.want)
		}
	}
	// Deterministic, and distinct per stage, job and attempt.
	seen := map[string]string{}
	for _, typ := range []string{tasks.TypeProbe, tasks.TypeTranscode, tasks.TypePackage} {
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
			{tasks.TypePackage, &kilnv1.PackageTask{JobId: "job-pk", AssetId: "asset-pk", Media: richMedia(), Plan: richPlan(),
				Encoded:   []*kilnv1.EncodedRung{{Name: "720p", Object: src}},
				PosterKey: "assets/asset-pk/thumbnails/poster.jpg", Attempt: attempt}},
		}
		for _, p := range payloads {
			t.Run(fmt.Sprintf("%s/attempt%d", p.typ, attempt), func(t *testing.T) {
				task := asynq.NewTask(p.typ, mustMarshal(t, p.msg))
				wantJob := p.msg.ProtoReflect().Get(p.msg.ProtoReflect().Descriptor().Fields().ByNumber(1)).String()
				wantAsset := p.msg.ProtoReflect().Get(p.msg.ProtoReflect().Descriptor().Fields().ByNumber(2)).String()
				job, asset, attempt := tasks.Head(task)
				if job != wantJob || asset != wantAsset {
					t.Errorf("Job() = %q, %q, want %q, %q", job, asset, wantJob, wantAsset)
				}
				if want := max(p.msg.ProtoReflect().Get(p.msg.ProtoReflect().Descriptor().Fields().ByNumber(15)).Interface().(int32), 1); attempt != want {
					t.Errorf("Head() attempt = %d, want %d", attempt, want)
				}
			})
		}
	}
}

func TestJobOfGarbage(t *testing.T) {
	for _, payload := range [][]byte{nil, {}, {0xff, 0xff, 0xff}, []byte("not a protobuf at all")} {
		task := asynq.NewTask(tasks.TypeProbe, payload)
		job, asset, attempt := tasks.Head(task) // must not panic
		if job != "" || asset != "" {
			t.Logf("Job(%q) = %q, %q", payload, job, asset)
		}
		if attempt < 1 {
			t.Errorf("Head(%q) attempt = %d, want ≥ 1", payload, attempt)
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
	var te *failure.Error
	if !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &te) || te.Code != "internal" {
		t.Errorf("Decode(garbage) = %v, want a permanent internal error", err)
	}
}

func TestQueueWeights(t *testing.T) {
	w := tasks.QueueWeights()
	for _, q := range []string{tasks.QueueProbe, tasks.QueueTranscode, tasks.QueuePackage, "webhook"} {
		if w[q] <= 0 {
			t.Errorf("queue %q has weight %d", q, w[q])
		}
	}
	if !(w[tasks.QueueProbe] > w[tasks.QueuePackage] && w[tasks.QueuePackage] > w[tasks.QueueTranscode]) {
		t.Errorf("short stages must outrank transcode: %v", w)
	}
}
