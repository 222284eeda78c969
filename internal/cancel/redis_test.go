package cancel_test

// Integration tests against the real Redis of the test stack
// (KILN_TEST_REDIS_ADDR), driven through real asynq clients, servers and
// inspectors. They use Redis DB testRedisDB only, flushed before and after
// each test, so they must not run in parallel with each other.

import (
	"fmt"

	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// testRedisDB is this package's database of the test Redis (the table in
// internal/testenv/redis.go): no other package's tests use it.
const testRedisDB = 8

// newCanceler is a cancel.Service on the Redis of opt, with an inspector
// of its own, publishing to pub.
func newCanceler(t *testing.T, opt asynq.RedisClientOpt, pub cancel.Publisher) *cancel.Service {
	t.Helper()
	return &cancel.Service{Redis: testenv.RedisClient(t, opt), Inspector: testenv.AsynqInspector(t, opt), Events: pub, Logger: zaptest.NewLogger(t)}
}

// TestCancelerCancel: Cancel marks the job, deletes its queued tasks (only
// its own), publishes CANCELED; Check then drops every task of the job.
func TestCancelerCancel(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	ctx := t.Context()
	pub := &fakes.Events{}
	c := newCanceler(t, opt, pub)
	client := testenv.AsynqClient(t, opt)
	insp := c.Inspector.(*asynq.Inspector)

	for _, job := range []string{"job-c", "job-other"} {
		if err := fakes.EnqueueStage(ctx, t, client, tasks.QueueProbe, fakes.ProbeTask(job, 1)); err != nil {
			t.Fatal(err)
		}
		if err := fakes.EnqueueStage(ctx, t, client, tasks.QueuePackage, &kilnv1.PackageTask{JobId: job, Download: true}); err != nil {
			t.Fatal(err)
		}
	}
	if canceled, err := c.Canceled(ctx, "job-c"); err != nil || canceled {
		t.Fatalf("Canceled before Cancel = %v, %v", canceled, err)
	}
	if err := c.Check(ctx, "job-c", 1); err != nil {
		t.Fatalf("Check before Cancel: %v", err)
	}

	if err := c.Cancel(ctx, "job-c", "asset-job-c"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if canceled, err := c.Canceled(ctx, "job-c"); err != nil || !canceled {
		t.Errorf("Canceled after Cancel = %v, %v, want true", canceled, err)
	}
	for _, q := range []struct{ queue, typ string }{{tasks.QueueProbe, tasks.TypeProbe}, {tasks.QueuePackage, tasks.TypePackage}} {
		if _, err := insp.GetTaskInfo(q.queue, tasks.TaskID(q.typ, "job-c", 1)); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("%s task of the canceled job: %v, want deleted", q.typ, err)
		}
		if _, err := insp.GetTaskInfo(q.queue, tasks.TaskID(q.typ, "job-other", 1)); err != nil {
			t.Errorf("%s task of another job: %v, want kept", q.typ, err)
		}
	}
	evs := pub.Events()
	if len(evs) != 1 {
		t.Fatalf("published %v, want one CANCELED event", evs)
	}
	ev := evs[0]
	if ev.GetState() != kilnv1.JobState_JOB_STATE_CANCELED || ev.GetEventId() != "job-c.canceled" || ev.GetJobId() != "job-c" ||
		ev.GetAssetId() != "asset-job-c" || ev.GetAttempt() != 1 || ev.GetError().GetCode() != "canceled" {
		t.Errorf("event = %v", ev)
	}

	fakes.CheckCanceled(t, c.Check(ctx, "job-c", 1), "Check(canceled job)")
	fakes.CheckCanceled(t, c.Check(ctx, "job-c", 5), "Check(canceled job, any attempt)")
	if err := c.Check(ctx, "job-other", 1); err != nil {
		t.Errorf("Check(other job) = %v", err)
	}

	// Idempotent: canceling again succeeds and publishes the same event id
	// (the bus dedupes it).
	if err := c.Cancel(ctx, "job-c", "asset-job-c"); err != nil {
		t.Fatalf("second Cancel: %v", err)
	}
	if evs := pub.Events(); len(evs) != 2 || evs[1].GetEventId() != "job-c.canceled" {
		t.Errorf("second Cancel published %v", evs)
	}
	// Canceling a job with no tasks at all (queues unknown) works too.
	if err := c.Cancel(ctx, "job-none", "asset-none"); err != nil {
		t.Errorf("Cancel of a job without tasks: %v", err)
	}
}

// TestCancelerRetry: Clear before a retry lifts the cancel mark and makes
// the new attempt current, so Check drops the older attempts' tasks only;
// Cancel then acts on the current attempt.
func TestCancelerRetry(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	ctx := t.Context()
	pub := &fakes.Events{}
	c := newCanceler(t, opt, pub)
	client := testenv.AsynqClient(t, opt)

	if a, err := c.CurrentAttempt(ctx, "job-r"); err != nil || a != 1 {
		t.Fatalf("CurrentAttempt of a fresh job = %d, %v, want 1", a, err)
	}
	if err := c.Cancel(ctx, "job-r", "asset-job-r"); err != nil {
		t.Fatal(err)
	}
	if err := c.Clear(ctx, "job-r", 2); err != nil {
		t.Fatalf("Clear: %v", err)
	}
	if canceled, err := c.Canceled(ctx, "job-r"); err != nil || canceled {
		t.Errorf("Canceled after Clear = %v, %v, want false", canceled, err)
	}
	if a, err := c.CurrentAttempt(ctx, "job-r"); err != nil || a != 2 {
		t.Errorf("CurrentAttempt after Clear(2) = %d, %v, want 2", a, err)
	}
	tests := []struct {
		attempt    int32
		superseded bool
	}{{0, true}, {1, true}, {2, false}, {3, false}}
	for _, tt := range tests {
		err := c.Check(ctx, "job-r", tt.attempt)
		if tt.superseded {
			fakes.CheckCanceled(t, err, "Check(superseded attempt)")
		} else if err != nil {
			t.Errorf("Check(attempt %d) = %v, want nil", tt.attempt, err)
		}
	}

	// Cancel now targets attempt 2: its task goes, attempt 1's (already
	// superseded, dropped by Check) is not Cancel's business.
	if err := fakes.EnqueueStage(ctx, t, client, tasks.QueueProbe, fakes.ProbeTask("job-r", 1)); err != nil {
		t.Fatal(err)
	}
	if err := fakes.EnqueueStage(ctx, t, client, tasks.QueueProbe, fakes.ProbeTask("job-r", 2)); err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, "job-r", "asset-job-r"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inspector.(*asynq.Inspector).GetTaskInfo(tasks.QueueProbe, "kiln:probe:job-r:a2"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("attempt 2 probe after Cancel: %v, want deleted", err)
	}
	evs := pub.Of("job-r")
	if len(evs) != 2 || evs[1].GetEventId() != "job-r.a2.canceled" || evs[1].GetAttempt() != 2 {
		t.Errorf("events = %v, want the second CANCELED for attempt 2", evs)
	}
	fakes.CheckCanceled(t, c.Check(ctx, "job-r", 2), "Check(canceled attempt 2)")

	// Clear with attempt 0 records attempt 1.
	if err := c.Clear(ctx, "job-z", 0); err != nil {
		t.Fatal(err)
	}
	if a, err := c.CurrentAttempt(ctx, "job-z"); err != nil || a != 1 {
		t.Errorf("CurrentAttempt after Clear(0) = %d, %v, want 1", a, err)
	}
}

// TestCancelInterruptsRunningTask: Cancel cancels the context of a task a
// real asynq server is running; the stage's Check then drops it on its
// retry, and no FAILED event is published.
func TestCancelInterruptsRunningTask(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	ctx := t.Context()
	pub := &fakes.Events{}
	c := newCanceler(t, opt, pub)
	started := make(chan struct{}, 1)
	interrupted := make(chan struct{}, 1)
	var runs atomic.Int32
	h := asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		job, _, attempt := tasks.Head(task)
		runs.Add(1)
		// What every stage does first.
		if err := c.Check(ctx, job, attempt); err != nil {
			return err
		}
		started <- struct{}{}
		select {
		case <-ctx.Done():
			interrupted <- struct{}{}
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return errors.New("not interrupted")
		}
	})
	testenv.AsynqServer(t, opt, []string{tasks.QueueProbe}, h, &tasks.FailureHandler{Events: pub, Logger: zaptest.NewLogger(t)})
	if err := fakes.EnqueueStage(ctx, t, testenv.AsynqClient(t, opt), tasks.QueueProbe, fakes.ProbeTask("job-run", 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("task did not start")
	}
	// The server subscribes to cancelations when it starts; give that a
	// moment on a loaded machine.
	time.Sleep(200 * time.Millisecond)
	if err := c.Cancel(ctx, "job-run", "asset-job-run"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-interrupted:
	case <-time.After(10 * time.Second):
		t.Fatal("running task not interrupted by Cancel")
	}
	testenv.WaitTaskState(t, c.Inspector.(*asynq.Inspector), tasks.QueueProbe, tasks.TaskID(tasks.TypeProbe, "job-run", 1), asynq.TaskStateArchived, 20*time.Second)
	if n := runs.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (interrupted, then dropped by Check)", n)
	}
	evs := pub.Of("job-run")
	if len(evs) != 1 || evs[0].GetState() != kilnv1.JobState_JOB_STATE_CANCELED {
		t.Errorf("events = %v, want only CANCELED", evs)
	}
}

// TestCancelInterruptsRunningChunks: the parts of a chunked transcode (a
// chunk task's id carries its chunk number, so no stage id names it) are
// found among the running tasks and interrupted too; another job's are
// left alone.
func TestCancelInterruptsRunningChunks(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	ctx := t.Context()
	pub := &fakes.Events{}
	c := newCanceler(t, opt, pub)
	started := make(chan string, 4)
	interrupted := make(chan string, 4)
	h := asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		job, _, _ := tasks.Head(task)
		var p kilnv1.TranscodeTask
		_ = proto.Unmarshal(task.Payload(), &p)
		name := fmt.Sprintf("%s/%s/%d", job, task.Type(), p.GetChunk())
		started <- name
		select {
		case <-ctx.Done():
			interrupted <- name
			return asynq.SkipRetry
		case <-time.After(15 * time.Second):
			return nil
		}
	})
	testenv.AsynqServer(t, opt, []string{tasks.QueueTranscode}, h, nil)
	client := testenv.AsynqClient(t, opt)
	plan := &kilnv1.Plan{FrameRate: 30, Chunking: &kilnv1.Chunking{Count: 4, LeadFrames: 180, Frames: 360}}
	for _, job := range []string{"job-chunked", "job-other"} {
		p := &kilnv1.TranscodeTask{JobId: job, AssetId: "asset-" + job, Attempt: 1, Plan: plan, Chunk: 1}
		cmd, err := tasks.NewTranscodeChunkTask(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if err := tasks.Enqueue(ctx, client, cmd); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("chunk tasks did not start")
		}
	}
	time.Sleep(200 * time.Millisecond)
	if err := c.Cancel(ctx, "job-chunked", "asset-job-chunked"); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-interrupted:
		if name != "job-chunked/"+tasks.TypeTranscodeChunk+"/1" {
			t.Errorf("interrupted %s, want job-chunked's chunk 1", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("running chunk not interrupted by Cancel")
	}
	select {
	case name := <-interrupted:
		t.Errorf("%s interrupted too", name)
	case <-time.After(time.Second):
	}
}
