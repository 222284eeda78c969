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

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// testRedisDB is a database no other kiln test or stack component uses.
const testRedisDB = 7

// needRedis returns the connection options of the test Redis (DB
// testRedisDB, flushed now and at the end of the test); without one the
// test skips, or fails under `go tool task test` (testenv.Redis).
func needRedis(t *testing.T) asynq.RedisClientOpt {
	t.Helper()
	opt := asynq.RedisClientOpt{Addr: testenv.Redis(t), DB: testRedisDB}
	rc := cancel.NewRedisClient(opt)
	flush := func() {
		// Not t.Context(): cleanups run after it is canceled.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 10*time.Second)
		defer cancel()
		if err := rc.FlushDB(ctx).Err(); err != nil {
			t.Errorf("flush redis db %d: %v", testRedisDB, err)
		}
	}
	flush()
	t.Cleanup(func() {
		flush()
		_ = rc.Close()
	})
	return opt
}

// events is a Publisher that records what it is asked to publish.
type events struct {
	mu  sync.Mutex
	evs []*kilnv1.JobEvent
	// ctxErrs records ctx.Err() at each publish: publishing must work even
	// when the task's own context is done.
	ctxErrs []error
}

var _ tasks.Publisher = (*events)(nil)

func (e *events) PublishJobEvent(ctx context.Context, ev *kilnv1.JobEvent) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, proto.Clone(ev).(*kilnv1.JobEvent))
	e.ctxErrs = append(e.ctxErrs, ctx.Err())
	return nil
}

func (e *events) of(jobID string) []*kilnv1.JobEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*kilnv1.JobEvent
	for _, ev := range e.evs {
		if ev.GetJobId() == jobID {
			out = append(out, ev)
		}
	}
	return out
}

func (e *events) all() []*kilnv1.JobEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*kilnv1.JobEvent(nil), e.evs...)
}

// startServer runs a real asynq server on queues until the test ends.
func startServer(t *testing.T, opt asynq.RedisClientOpt, queues []string, h asynq.Handler, eh asynq.ErrorHandler) {
	t.Helper()
	qs := map[string]int{}
	for _, q := range queues {
		qs[q] = 1
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:              8,
		Queues:                   qs,
		ErrorHandler:             eh,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
		TaskCheckInterval:        50 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout:          5 * time.Second,
		LogLevel:                 asynq.ErrorLevel,
	})
	if err := srv.Start(h); err != nil {
		t.Fatalf("start asynq server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
}

func newInspector(t *testing.T, opt asynq.RedisClientOpt) *asynq.Inspector {
	t.Helper()
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { _ = insp.Close() })
	return insp
}

func newClient(t *testing.T, opt asynq.RedisClientOpt) *asynq.Client {
	t.Helper()
	c := asynq.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitState polls until the task is in state, failing after timeout.
func waitState(t *testing.T, insp *asynq.Inspector, queue, id string, state asynq.TaskState, timeout time.Duration) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ti, err := insp.GetTaskInfo(queue, id)
		if err == nil && ti.State == state {
			return ti
		}
		if err != nil {
			last = err.Error()
		} else {
			last = ti.State.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s in %s: not %s after %s (last: %s)", id, queue, state, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func probeTask(job string, attempt int32) *kilnv1.ProbeTask {
	return &kilnv1.ProbeTask{JobId: job, AssetId: "asset-" + job, Preset: "default", Attempt: attempt,
		Source: &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "uploads/" + job + ".mp4", Etag: "etag"}}
}

// TestFailureHandler runs a real asynq server whose handler fails in every
// way a stage can, with FailureHandler as its ErrorHandler, and checks the
// FAILED events it publishes: one per job, only once the task will not run
// again, with the reason code of the error.
func TestFailureHandler(t *testing.T) {
	opt := needRedis(t)
	const queue = "kiln-test-failure"
	pub := &events{}
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
	startServer(t, opt, []string{queue}, h, &tasks.FailureHandler{Events: pub, Logger: zaptest.NewLogger(t)})

	client := newClient(t, opt)
	insp := newInspector(t, opt)
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
		"job-invalid":  enqueue(tasks.TypeProbe, probeTask("job-invalid", 1), asynq.MaxRetry(8)),
		"job-plain":    enqueue(tasks.TypeTranscode, &kilnv1.TranscodeTask{JobId: "job-plain", AssetId: "asset-job-plain", Media: richMedia(), Plan: richPlan()}, asynq.MaxRetry(0)),
		"job-retry":    enqueue(tasks.TypeThumbnail, &kilnv1.ThumbnailTask{JobId: "job-retry", AssetId: "asset-job-retry", Media: richMedia()}, asynq.MaxRetry(2)),
		"job-a2":       enqueue(tasks.TypePackage, &kilnv1.PackageTask{JobId: "job-a2", AssetId: "asset-job-a2", Media: richMedia(), Plan: richPlan(), Attempt: 2}, asynq.MaxRetry(0)),
		"job-canceled": enqueue(tasks.TypeProbe, probeTask("job-canceled", 1), asynq.MaxRetry(8)),
		"job-timeout":  enqueue(tasks.TypeProbe, probeTask("job-timeout", 1), asynq.MaxRetry(0), asynq.Timeout(time.Second)), // asynq keeps whole seconds
	}
	okIDs := map[string]string{
		"job-ok":    enqueue(tasks.TypeProbe, probeTask("job-ok", 1), asynq.MaxRetry(3)),
		"job-flaky": enqueue(tasks.TypeProbe, probeTask("job-flaky", 1), asynq.MaxRetry(3), asynq.Retention(time.Hour)),
	}
	for _, id := range ids {
		waitState(t, insp, queue, id, asynq.TaskStateArchived, 20*time.Second)
	}
	waitState(t, insp, queue, okIDs["job-flaky"], asynq.TaskStateCompleted, 20*time.Second)
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
			evs := pub.of(tt.job)
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
	pub.mu.Lock()
	for i, err := range pub.ctxErrs {
		if err != nil {
			t.Errorf("event %s published with a done context: %v", pub.evs[i].GetEventId(), err)
		}
	}
	pub.mu.Unlock()
}

// TestFailureHandlerWithoutJob: a task whose payload has no job id is
// logged, never published.
func TestFailureHandlerWithoutJob(t *testing.T) {
	opt := needRedis(t)
	const queue = "kiln-test-nojob"
	pub := &events{}
	startServer(t, opt, []string{queue}, asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		return tasks.Permanent("internal", "malformed task payload", errors.New("bad"))
	}), &tasks.FailureHandler{Events: pub, Logger: zaptest.NewLogger(t)})
	info, err := newClient(t, opt).EnqueueContext(t.Context(), asynq.NewTask(tasks.TypeProbe, []byte{0xff, 0x01}), asynq.Queue(queue))
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, newInspector(t, opt), queue, info.ID, asynq.TaskStateArchived, 20*time.Second)
	if evs := pub.all(); len(evs) != 0 {
		t.Errorf("published %v for a task without a job", evs)
	}
}

// TestEnqueueDedupes: repeated enqueues of one stage of one attempt of a job
// make one task, before and after it ran; another attempt makes another.
func TestEnqueueDedupes(t *testing.T) {
	opt := needRedis(t)
	ctx := t.Context()
	client := newClient(t, opt)
	insp := newInspector(t, opt)
	pending := func(queue string) []*asynq.TaskInfo {
		t.Helper()
		l, err := insp.ListPendingTasks(queue)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	for range 3 {
		if err := enqueueStage(ctx, t, client, tasks.QueueProbe, probeTask("job-e", 1)); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	// Attempt 0 is attempt 1.
	if err := enqueueStage(ctx, t, client, tasks.QueueProbe, probeTask("job-e", 0)); err != nil {
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
	if err := proto.Unmarshal(ti.Payload, &got); err != nil || !proto.Equal(&got, probeTask("job-e", 1)) {
		t.Errorf("payload = %v (%v), want the first enqueue's", &got, err)
	}

	// A retried job gets its own task.
	if err := enqueueStage(ctx, t, client, tasks.QueueProbe, probeTask("job-e", 2)); err != nil {
		t.Fatal(err)
	}
	if err := enqueueStage(ctx, t, client, tasks.QueueProbe, probeTask("job-e", 2)); err != nil {
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
	startServer(t, opt, []string{queue}, asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		ran.Add(1)
		return nil
	}), nil)
	if err := enqueueStage(ctx, t, client, queue, &kilnv1.TranscodeTask{JobId: "job-r"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, insp, queue, tasks.TaskID(tasks.TypeTranscode, "job-r", 1), asynq.TaskStateCompleted, 20*time.Second)
	if err := enqueueStage(ctx, t, client, queue, &kilnv1.TranscodeTask{JobId: "job-r"}); err != nil {
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
	if err := enqueueStage(cctx, t, client, tasks.QueueProbe, probeTask("job-x", 1)); err == nil {
		t.Error("Enqueue with a canceled context: nil error")
	}
}

func newCanceler(t *testing.T, opt asynq.RedisClientOpt, pub tasks.Publisher) *cancel.Service {
	t.Helper()
	rc := cancel.NewRedisClient(opt)
	t.Cleanup(func() { _ = rc.Close() })
	return &cancel.Service{Redis: rc, Inspector: newInspector(t, opt), Events: pub, Logger: zaptest.NewLogger(t)}
}

func wantCanceledErr(t *testing.T, err error, what string) {
	t.Helper()
	var te *failure.Error
	if !errors.Is(err, failure.ErrCanceled) || !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &te) || te.Code != "canceled" {
		t.Errorf("%s = %v, want a permanent ErrCanceled with code canceled", what, err)
	}
}

// TestCancelerCancel: Cancel marks the job, deletes its queued tasks (only
// its own), publishes CANCELED; Check then drops every task of the job.
func TestCancelerCancel(t *testing.T) {
	opt := needRedis(t)
	ctx := t.Context()
	pub := &events{}
	c := newCanceler(t, opt, pub)
	client := newClient(t, opt)
	insp := c.Inspector.(*asynq.Inspector)

	for _, job := range []string{"job-c", "job-other"} {
		if err := enqueueStage(ctx, t, client, tasks.QueueProbe, probeTask(job, 1)); err != nil {
			t.Fatal(err)
		}
		if err := enqueueStage(ctx, t, client, tasks.QueueThumbnail, &kilnv1.ThumbnailTask{JobId: job}); err != nil {
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
	for _, q := range []struct{ queue, typ string }{{tasks.QueueProbe, tasks.TypeProbe}, {tasks.QueueThumbnail, tasks.TypeThumbnail}} {
		if _, err := insp.GetTaskInfo(q.queue, tasks.TaskID(q.typ, "job-c", 1)); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("%s task of the canceled job: %v, want deleted", q.typ, err)
		}
		if _, err := insp.GetTaskInfo(q.queue, tasks.TaskID(q.typ, "job-other", 1)); err != nil {
			t.Errorf("%s task of another job: %v, want kept", q.typ, err)
		}
	}
	evs := pub.all()
	if len(evs) != 1 {
		t.Fatalf("published %v, want one CANCELED event", evs)
	}
	ev := evs[0]
	if ev.GetState() != kilnv1.JobState_JOB_STATE_CANCELED || ev.GetEventId() != "job-c.canceled" || ev.GetJobId() != "job-c" ||
		ev.GetAssetId() != "asset-job-c" || ev.GetAttempt() != 1 || ev.GetError().GetCode() != "canceled" {
		t.Errorf("event = %v", ev)
	}

	wantCanceledErr(t, c.Check(ctx, "job-c", 1), "Check(canceled job)")
	wantCanceledErr(t, c.Check(ctx, "job-c", 5), "Check(canceled job, any attempt)")
	if err := c.Check(ctx, "job-other", 1); err != nil {
		t.Errorf("Check(other job) = %v", err)
	}

	// Idempotent: canceling again succeeds and publishes the same event id
	// (the bus dedupes it).
	if err := c.Cancel(ctx, "job-c", "asset-job-c"); err != nil {
		t.Fatalf("second Cancel: %v", err)
	}
	if evs := pub.all(); len(evs) != 2 || evs[1].GetEventId() != "job-c.canceled" {
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
	opt := needRedis(t)
	ctx := t.Context()
	pub := &events{}
	c := newCanceler(t, opt, pub)
	client := newClient(t, opt)

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
			wantCanceledErr(t, err, "Check(superseded attempt)")
		} else if err != nil {
			t.Errorf("Check(attempt %d) = %v, want nil", tt.attempt, err)
		}
	}

	// Cancel now targets attempt 2: its task goes, attempt 1's (already
	// superseded, dropped by Check) is not Cancel's business.
	if err := enqueueStage(ctx, t, client, tasks.QueueProbe, probeTask("job-r", 1)); err != nil {
		t.Fatal(err)
	}
	if err := enqueueStage(ctx, t, client, tasks.QueueProbe, probeTask("job-r", 2)); err != nil {
		t.Fatal(err)
	}
	if err := c.Cancel(ctx, "job-r", "asset-job-r"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inspector.(*asynq.Inspector).GetTaskInfo(tasks.QueueProbe, "kiln:probe:job-r:a2"); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("attempt 2 probe after Cancel: %v, want deleted", err)
	}
	evs := pub.of("job-r")
	if len(evs) != 2 || evs[1].GetEventId() != "job-r.a2.canceled" || evs[1].GetAttempt() != 2 {
		t.Errorf("events = %v, want the second CANCELED for attempt 2", evs)
	}
	wantCanceledErr(t, c.Check(ctx, "job-r", 2), "Check(canceled attempt 2)")

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
	opt := needRedis(t)
	ctx := t.Context()
	pub := &events{}
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
	startServer(t, opt, []string{tasks.QueueProbe}, h, &tasks.FailureHandler{Events: pub, Logger: zaptest.NewLogger(t)})
	if err := enqueueStage(ctx, t, newClient(t, opt), tasks.QueueProbe, probeTask("job-run", 1)); err != nil {
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
	waitState(t, c.Inspector.(*asynq.Inspector), tasks.QueueProbe, tasks.TaskID(tasks.TypeProbe, "job-run", 1), asynq.TaskStateArchived, 20*time.Second)
	if n := runs.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (interrupted, then dropped by Check)", n)
	}
	evs := pub.of("job-run")
	if len(evs) != 1 || evs[0].GetState() != kilnv1.JobState_JOB_STATE_CANCELED {
		t.Errorf("events = %v, want only CANCELED", evs)
	}
}

// TestRetrier: Retry clears the cancel mark, enqueues the attempt's own
// probe and publishes its QUEUED event; retrying the same attempt again is
// harmless.
func TestRetrier(t *testing.T) {
	opt := needRedis(t)
	ctx := t.Context()
	pub := &events{}
	c := newCanceler(t, opt, pub)
	r := &catalog.Retrier{Queue: newClient(t, opt), Attempts: c, Events: pub}

	if _, err := r.Retry(ctx, probeTask("job-y", 1), "public"); err == nil {
		t.Error("Retry of attempt 1: nil error")
	}
	if err := c.Cancel(ctx, "job-y", "asset-job-y"); err != nil {
		t.Fatal(err)
	}
	var first *kilnv1.JobEvent
	for i := range 2 {
		ev, err := r.Retry(ctx, probeTask("job-y", 2), "signed")
		if err != nil {
			t.Fatalf("Retry #%d: %v", i+1, err)
		}
		if ev.GetEventId() != "job-y.a2.queued" || ev.GetState() != kilnv1.JobState_JOB_STATE_QUEUED || ev.GetAttempt() != 2 ||
			ev.GetPlaybackPolicy() != "signed" || ev.GetPreset() != "default" || ev.GetSource().GetKey() != "uploads/job-y.mp4" {
			t.Errorf("Retry #%d event = %v", i+1, ev)
		}
		if first == nil {
			first = ev
		}
	}
	if err := c.Check(ctx, "job-y", 2); err != nil {
		t.Errorf("Check(new attempt) = %v, want nil", err)
	}
	wantCanceledErr(t, c.Check(ctx, "job-y", 1), "Check(old attempt)")
	l, err := c.Inspector.(*asynq.Inspector).ListPendingTasks(tasks.QueueProbe)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || l[0].ID != "kiln:probe:job-y:a2" {
		t.Fatalf("pending probes = %d, want exactly kiln:probe:job-y:a2", len(l))
	}
	var got kilnv1.ProbeTask
	if err := proto.Unmarshal(l[0].Payload, &got); err != nil || got.GetAttempt() != 2 {
		t.Errorf("probe payload = %v, %v, want attempt 2", &got, err)
	}
	if evs := pub.of("job-y"); len(evs) != 3 || evs[1].GetEventId() != evs[2].GetEventId() {
		t.Errorf("events = %v, want CANCELED then the same QUEUED twice", evs)
	}
}

// enqueueStage enqueues the stage command of payload (a stage task message) on
// queue, with everything else from its NewXTask constructor.
func enqueueStage(ctx context.Context, t *testing.T, q tasks.Enqueuer, queue string, payload proto.Message) error {
	t.Helper()
	var (
		c   tasks.Command
		err error
	)
	switch p := payload.(type) {
	case *kilnv1.ProbeTask:
		c, err = tasks.NewProbeTask(p)
	case *kilnv1.TranscodeTask:
		c, err = tasks.NewTranscodeTask(p)
	case *kilnv1.ThumbnailTask:
		c, err = tasks.NewThumbnailTask(p)
	case *kilnv1.PackageTask:
		c, err = tasks.NewPackageTask(p)
	default:
		t.Fatalf("enqueue: %T is not a stage task", payload)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.Options = append(c.Options, asynq.Queue(queue))
	return tasks.Enqueue(ctx, q, c)
}
