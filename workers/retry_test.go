package workers_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

// testRedisDB is this package's database of the test Redis (the table in
// internal/testenv/redis.go).
const testRedisDB = 12

// exhaustingFFmpeg is ffmpeg on a source that passed the probe but needs
// more than the task has: every Run either lasts until its context ends (as
// the real runner reports a kill at the deadline) or runs out of memory.
type exhaustingFFmpeg struct {
	fakeFFmpeg
	memory bool
	runs   atomic.Int32
}

func (f *exhaustingFFmpeg) Run(ctx context.Context, args []string, _ func(ffmpeg.Progress)) error {
	f.runs.Add(1)
	if f.memory {
		return &ffmpeg.ExitError{Program: "ffmpeg", Err: errors.New("exit status 1"),
			Stderr: "x264 [error]: malloc of size 7332480 failed\nError while decoding stream #0:0: Cannot allocate memory\n"}
	}
	<-ctx.Done()
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: fmt.Errorf("%w: %w", context.Cause(ctx), errors.New("signal: killed")), Signaled: true}
}

// TestExhaustedTranscodeRetriedOnce runs the registered handlers on a real
// asynq server (Redis): a transcode that times out, or runs out of memory,
// after a good probe runs twice, then the job fails with timeout or
// resources_exhausted. It used to run nine times (MaxRetry 8), and an
// out-of-memory failure was taken for bad input.
func TestExhaustedTranscodeRetriedOnce(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	for _, tt := range []struct {
		name   string
		memory bool
		code   string
	}{
		{"time limit", false, failure.Timeout},
		{"out of memory", true, failure.ResourcesExhausted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ff := &exhaustingFFmpeg{memory: tt.memory}
			events := &fakes.Events{}
			mux := asynq.NewServeMux()
			workers.New(workers.Config{FFmpeg: ff, Objects: &fakes.Objects{}, Events: events, Queue: &fakes.Queue{},
				OutputsBucket: outputsBucket, WorkDir: t.TempDir()}).Register(mux)
			testenv.AsynqServer(t, opt, []string{tasks.QueueTranscode}, mux, &tasks.FailureHandler{Events: events, Logger: zaptest.NewLogger(t)})

			job := "job-" + tt.code
			cmd, err := tasks.NewTranscodeTask(t.Context(), &kilnv1.TranscodeTask{JobId: job, AssetId: assetID, Attempt: 1,
				Source: &kilnv1.ObjectRef{Bucket: sourcesBucket, Key: sourceKey}, Media: testMedia(), Plan: videoPlan()})
			if err != nil {
				t.Fatal(err)
			}
			// A 3 s time limit instead of the stage's 10 min; MaxRetry stays the stage's.
			if _, err := testenv.AsynqClient(t, opt).EnqueueContext(t.Context(), cmd.Task, append(cmd.Options, asynq.Timeout(3*time.Second))...); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(25 * time.Second)
			var failed *kilnv1.JobEvent
			for failed == nil && time.Now().Before(deadline) {
				for _, ev := range events.Events() {
					if ev.GetState() == kilnv1.JobState_JOB_STATE_FAILED && ev.GetJobId() == job {
						failed = ev
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
			if failed == nil {
				t.Fatalf("no failed event after %d runs", ff.runs.Load())
			}
			if got := failed.GetError().GetCode(); got != tt.code {
				t.Errorf("failed with %q (%s), want %q", got, failed.GetError().GetMessage(), tt.code)
			}
			time.Sleep(500 * time.Millisecond) // a third run would have started by now
			if n := ff.runs.Load(); n != 2 {
				t.Errorf("ffmpeg ran %d times, want 2 (the run and one retry)", n)
			}
		})
	}
}
