package tasks_test

// Integration tests against the real Redis of the test stack
// (KILN_TEST_REDIS_ADDR), driven through real asynq clients, servers and
// inspectors. They use Redis DB testRedisDB only, flushed before and after
// each test, so they must not run in parallel with each other.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// testRedisDB is this package's database of the test Redis (the table in
// internal/testenv/redis.go): no other package's tests use it.
const testRedisDB = 7

// TestFailureHandler runs a real asynq server whose handler fails in every
// way a stage can, with FailureHandler as its ErrorHandler, and checks the
// FAILED events it publishes: one per job, only once the task will not run
// again, with the reason code of the error.
func TestFailureHandler(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	const queue = "kiln-test-failure"
	pub := &fakes.Events{}
	var runs sync.Map // job id -> *atomic.Int32
	runsOf := func(job string) int32 {
		v, _ := runs.LoadOrStore(job, new(atomic.Int32))
		return v.(*atomic.Int32).Load()
	}
	h := asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		job, _, _ := tasks.Head(task)
		v, _ := runs.LoadOrStore(job, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
		switch job {
		case "job-invalid":
			return tasks.Permanent("invalid_media", "no decodable video stream", errors.New("moov atom not found"))
		case "job-plain", "job-retry", "job-a2":
			return errors.New("s3: connection reset by peer")
		case "job-canceled":
			return tasks.Permanent("canceled", "the job was canceled", failure.ErrCanceled)
		case "job-timeout":
			<-ctx.Done()
			return ctx.Err()
		case "job-ok", "job-flaky":
			if job == "job-flaky" && runsOf(job) == 1 {
				return errors.New("transient")
			}
			return nil
		}
		return errors.New("unexpected job " + job)
	})
	testenv.AsynqServer(t, opt, []string{queue}, h, &tasks.FailureHandler{Events: pub, Logger: zaptest.NewLogger(t)})

	client := testenv.AsynqClient(t, opt)
	insp := testenv.AsynqInspector(t, opt)
	enqueue := func(typ string, m proto.Message, opts ...asynq.Option) string {
		t.Helper()
		info, err := client.EnqueueContext(t.Context(), asynq.NewTask(typ, mustMarshal(t, m)), append([]asynq.Option{asynq.Queue(queue)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
	// Every payload type: the handler reads job and asset from each.
	ids := map[string]string{
		"job-invalid":  enqueue(tasks.TypeProbe, fakes.ProbeTask("job-invalid", 1), asynq.MaxRetry(8)),
		"job-plain":    enqueue(tasks.TypeTranscode, &kilnv1.TranscodeTask{JobId: "job-plain", AssetId: "asset-job-plain", Media: richMedia(), Plan: richPlan()}, asynq.MaxRetry(0)),
		"job-retry":    enqueue(tasks.TypePackage, &kilnv1.PackageTask{JobId: "job-retry", AssetId: "asset-job-retry", Media: richMedia(), Download: true}, asynq.MaxRetry(2)),
		"job-a2":       enqueue(tasks.TypePackage, &kilnv1.PackageTask{JobId: "job-a2", AssetId: "asset-job-a2", Media: richMedia(), Plan: richPlan(), Attempt: 2}, asynq.MaxRetry(0)),
		"job-canceled": enqueue(tasks.TypeProbe, fakes.ProbeTask("job-canceled", 1), asynq.MaxRetry(8)),
		"job-timeout":  enqueue(tasks.TypeProbe, fakes.ProbeTask("job-timeout", 1), asynq.MaxRetry(0), asynq.Timeout(time.Second)), // asynq keeps whole seconds
	}
	okIDs := map[string]string{
		"job-ok":    enqueue(tasks.TypeProbe, fakes.ProbeTask("job-ok", 1), asynq.MaxRetry(3)),
		"job-flaky": enqueue(tasks.TypeProbe, fakes.ProbeTask("job-flaky", 1), asynq.MaxRetry(3), asynq.Retention(time.Hour)),
	}
	for _, id := range ids {
		testenv.WaitTaskState(t, insp, queue, id, asynq.TaskStateArchived, 20*time.Second)
	}
	testenv.WaitTaskState(t, insp, queue, okIDs["job-flaky"], asynq.TaskStateCompleted, 20*time.Second)
	// job-ok has no retention: once processed it is gone from every list.
	deadline := time.Now().Add(10 * time.Second)
	for runsOf("job-ok") == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}

	tests := []struct {
		job      string
		runs     int32
		wantCode string // "" means no FAILED event
		wantMsg  string
		wantID   string
		attempt  int32
	}{
		{"job-invalid", 1, "invalid_media", "no decodable video stream", "job-invalid.failed", 1},
		{"job-plain", 1, "internal", "processing failed after retries", "job-plain.failed", 1},
		{"job-retry", 3, "internal", "processing failed after retries", "job-retry.failed", 1},
		{"job-a2", 1, "internal", "processing failed after retries", "job-a2.a2.failed", 2},
		{"job-timeout", 1, "timeout", "processing took longer than its time limit", "job-timeout.failed", 1},
		{"job-canceled", 1, "", "", "", 0},
		{"job-ok", 1, "", "", "", 0},
		{"job-flaky", 2, "", "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.job, func(t *testing.T) {
			if got := runsOf(tt.job); got != tt.runs {
				t.Errorf("handler ran %d times, want %d", got, tt.runs)
			}
			evs := pub.Of(tt.job)
			if tt.wantCode == "" {
				if len(evs) != 0 {
					t.Errorf("published %v, want nothing", evs)
				}
				return
			}
			if len(evs) != 1 {
				t.Fatalf("published %d events (%v), want exactly one FAILED", len(evs), evs)
			}
			ev := evs[0]
			if ev.GetState() != kilnv1.JobState_JOB_STATE_FAILED || ev.GetError().GetCode() != tt.wantCode ||
				ev.GetError().GetMessage() != tt.wantMsg || ev.GetEventId() != tt.wantID ||
				ev.GetAttempt() != tt.attempt || ev.GetAssetId() != "asset-"+tt.job {
				t.Errorf("event = %v, want FAILED %s %q id %s attempt %d", ev, tt.wantCode, tt.wantMsg, tt.wantID, tt.attempt)
			}
		})
	}
	ctxErrs := pub.CtxErrs() // first: Events has at least as many
	evs := pub.Events()
	for i, err := range ctxErrs {
		if err != nil {
			t.Errorf("event %s published with a done context: %v", evs[i].GetEventId(), err)
		}
	}
}

// TestFailureHandlerWithoutJob: a task whose payload has no job id is
// logged, never published.
func TestFailureHandlerWithoutJob(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	const queue = "kiln-test-nojob"
	pub := &fakes.Events{}
	testenv.AsynqServer(t, opt, []string{queue}, asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		return tasks.Permanent("internal", "malformed task payload", errors.New("bad"))
	}), &tasks.FailureHandler{Events: pub, Logger: zaptest.NewLogger(t)})
	info, err := testenv.AsynqClient(t, opt).EnqueueContext(t.Context(), asynq.NewTask(tasks.TypeProbe, []byte{0xff, 0x01}), asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitTaskState(t, testenv.AsynqInspector(t, opt), queue, info.ID, asynq.TaskStateArchived, 20*time.Second)
	if evs := pub.Events(); len(evs) != 0 {
		t.Errorf("published %v for a task without a job", evs)
	}
}

// TestEnqueueDedupes: repeated enqueues of one stage of one attempt of a job
// make one task, before and after it ran; another attempt makes another.
func TestEnqueueDedupes(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	ctx := t.Context()
	client := testenv.AsynqClient(t, opt)
	insp := testenv.AsynqInspector(t, opt)
	pending := func(queue string) []*asynq.TaskInfo {
		t.Helper()
		l, err := insp.ListPendingTasks(queue)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	for range 3 {
		if err := fakes.EnqueueStage(ctx, t, client, tasks.QueueProbe, fakes.ProbeTask("job-e", 1)); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	// Attempt 0 is attempt 1.
	if err := fakes.EnqueueStage(ctx, t, client, tasks.QueueProbe, fakes.ProbeTask("job-e", 0)); err != nil {
		t.Fatalf("Enqueue attempt 0: %v", err)
	}
	l := pending(tasks.QueueProbe)
	if len(l) != 1 {
		t.Fatalf("%d pending tasks after repeated enqueues, want 1", len(l))
	}
	ti := l[0]
	if ti.ID != "kiln:probe:job-e" || ti.Type != tasks.TypeProbe || ti.Queue != tasks.QueueProbe ||
		ti.MaxRetry != 8 || ti.Timeout != 2*time.Minute || ti.Retention != tasks.Retention {
		t.Errorf("task = id %s type %s queue %s max_retry %d timeout %s retention %s", ti.ID, ti.Type, ti.Queue, ti.MaxRetry, ti.Timeout, ti.Retention)
	}
	var got kilnv1.ProbeTask
	if err := proto.Unmarshal(ti.Payload, &got); err != nil || !proto.Equal(&got, fakes.ProbeTask("job-e", 1)) {
		t.Errorf("payload = %v (%v), want the first enqueue's", &got, err)
	}

	// A retried job gets its own task.
	if err := fakes.EnqueueStage(ctx, t, client, tasks.QueueProbe, fakes.ProbeTask("job-e", 2)); err != nil {
		t.Fatal(err)
	}
	if err := fakes.EnqueueStage(ctx, t, client, tasks.QueueProbe, fakes.ProbeTask("job-e", 2)); err != nil {
		t.Fatal(err)
	}
	if l := pending(tasks.QueueProbe); len(l) != 2 {
		t.Fatalf("%d pending tasks after attempt 2, want 2", len(l))
	}
	if _, err := insp.GetTaskInfo(tasks.QueueProbe, "kiln:probe:job-e:a2"); err != nil {
		t.Errorf("attempt 2 task: %v", err)
	}

	// After it ran, a redelivered event still enqueues nothing: the task id is
	// retained.
	const queue = "kiln-test-enqueue"
	var ran atomic.Int32
	testenv.AsynqServer(t, opt, []string{queue}, asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		ran.Add(1)
		return nil
	}), nil)
	if err := fakes.EnqueueStage(ctx, t, client, queue, &kilnv1.TranscodeTask{JobId: "job-r"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitTaskState(t, insp, queue, tasks.TaskID(tasks.TypeTranscode, "job-r", 1), asynq.TaskStateCompleted, 20*time.Second)
	if err := fakes.EnqueueStage(ctx, t, client, queue, &kilnv1.TranscodeTask{JobId: "job-r"}); err != nil {
		t.Fatalf("Enqueue of a completed task: %v, want nil (duplicate)", err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := ran.Load(); n != 1 {
		t.Errorf("task ran %d times, want 1", n)
	}
	if l := pending(queue); len(l) != 0 {
		t.Errorf("%d pending after re-enqueue of a completed task, want 0", len(l))
	}

	// A real enqueue error is reported.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := fakes.EnqueueStage(cctx, t, client, tasks.QueueProbe, fakes.ProbeTask("job-x", 1)); err == nil {
		t.Error("Enqueue with a canceled context: nil error")
	}
}
