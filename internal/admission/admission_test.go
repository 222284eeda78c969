package admission_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kilnvideo/kiln/internal/admission"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// redisDB is this package's database of the test stack's Redis (see
// testenv/redis.go).
const redisDB = 5

type fixedSlots int

func (n fixedSlots) TranscodeSlots(context.Context) (int, error) { return int(n), nil }

type rig struct {
	q         *admission.Queue
	client    *asynq.Client
	inspector *asynq.Inspector
	rc        redis.UniversalClient
	opt       asynq.RedisClientOpt
}

func newRig(t *testing.T, slots int, cfg admission.Config) *rig {
	t.Helper()
	opt := testenv.RedisDB(t, redisDB)
	r := &rig{client: asynq.NewClient(opt), inspector: asynq.NewInspector(opt), rc: testenv.RedisClient(t, opt), opt: opt}
	t.Cleanup(func() {
		_ = r.client.Close()
		_ = r.inspector.Close()
	})
	cfg.Redis, cfg.Next, cfg.Tasks, cfg.Slots = r.rc, r.client, r.inspector, fixedSlots(slots)
	cfg.Interval = 20 * time.Millisecond
	q, err := admission.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.q = q
	return r
}

// submit makes a transcode of job for tenant at prio and hands it to the
// queue as a producer does.
func (r *rig) submit(t *testing.T, job, tenant, prio string) {
	t.Helper()
	cmd, err := tasks.NewTranscodeTask(t.Context(), &kilnv1.TranscodeTask{JobId: job, AssetId: "a" + job, TenantId: tenant, Priority: prio})
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.Enqueue(t.Context(), r.q, cmd); err != nil {
		t.Fatal(err)
	}
}

// serve runs an asynq server of `slots` transcode slots whose handler
// records the jobs in the order they start and holds each for hold; it
// stops when the test ends.
func (r *rig) serve(t *testing.T, slots int, hold time.Duration) func() []string {
	t.Helper()
	var mu sync.Mutex
	var started []string
	mux := asynq.NewServeMux()
	mux.Use(r.q.Middleware())
	mux.HandleFunc(tasks.TypeTranscode, func(ctx context.Context, task *asynq.Task) error {
		var p kilnv1.TranscodeTask
		if err := tasks.Decode(task, &p); err != nil {
			return err
		}
		mu.Lock()
		started = append(started, p.GetJobId())
		mu.Unlock()
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		return nil
	})
	srv := asynq.NewServer(r.opt, asynq.Config{Concurrency: slots, Queues: map[string]int{tasks.QueueTranscode: 1},
		TaskCheckInterval: 10 * time.Millisecond, Logger: quiet{}, LogLevel: asynq.ErrorLevel})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.q.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(started)
	}
}

// waitStarted waits until n jobs started and returns them in order.
func waitStarted(t *testing.T, started func() []string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for len(started()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d jobs started: %v", len(started()), n, started())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return started()
}

type quiet struct{}

func (quiet) Debug(...any) {}
func (quiet) Info(...any)  {}
func (quiet) Warn(...any)  {}
func (quiet) Error(...any) {}
func (quiet) Fatal(...any) {}

// TestFairShare is the starvation test: tenant A submits 50 transcodes and
// the fleet (2 slots) is busy with two of them; then tenant B submits 1.
// B's starts at the next free slot — third or fourth of all — not after
// A's 50, as it would in asynq's FIFO queue.
func TestFairShare(t *testing.T) {
	r := newRig(t, 2, admission.Config{})
	for i := range 50 {
		r.submit(t, fmt.Sprintf("A%02d", i), "ten_a", "")
	}
	if err := r.q.Pass(t.Context()); err != nil { // the fleet takes two of A's
		t.Fatal(err)
	}
	snap, err := r.q.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if a := snap["ten_a"]; a.Admitted != 2 || a.Waiting[tasks.PriorityNormal] != 48 {
		t.Fatalf("after the first pass, A has %+v; want 2 admitted, 48 waiting", a)
	}
	r.submit(t, "B00", "ten_b", "")
	started := r.serve(t, 2, 30*time.Millisecond)
	order := waitStarted(t, started, 50)
	t.Logf("start order: %s", strings.Join(order, " "))
	// B is admitted at the first free slot. When both slots free at once,
	// B and one of A's are admitted together, and which of the two asynq
	// starts first is the race of their enqueues: B is third or fourth.
	if at := slices.Index(order, "B00"); at < 0 || at > 3 {
		t.Fatalf("B's job started %d-th (0-based), want with the first free slot after A's two (≤ 3): %v", at, order)
	}
	// Both tenants' work is done and released.
	waitStarted(t, started, 51)
	deadline := time.Now().Add(30 * time.Second)
	for {
		snap, err := r.q.Snapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if snap["ten_a"].Admitted == 0 && snap["ten_b"].Admitted == 0 && len(snap["ten_a"].Waiting) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("work never released: %+v", snap)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWeights: a tenant of weight 3 gets three admissions to another's one
// while both wait.
func TestWeights(t *testing.T) {
	r := newRig(t, 1, admission.Config{Weights: map[string]int{"ten_big": 3}})
	for i := range 8 {
		r.submit(t, fmt.Sprintf("big%d", i), "ten_big", "")
		r.submit(t, fmt.Sprintf("small%d", i), "ten_small", "")
	}
	started := r.serve(t, 1, 0)
	order := waitStarted(t, started, 8)[:8]
	big := 0
	for _, j := range order {
		if strings.HasPrefix(j, "big") {
			big++
		}
	}
	t.Logf("first 8: %v", order)
	if big != 6 {
		t.Fatalf("the weight-3 tenant had %d of the first 8 admissions, want 6", big)
	}
}

// TestPriorities is the priority test: one tenant's low, normal and high
// uploads, submitted in that order, start high first, then in the 4:2:1
// turns of the weighted queues — low is not starved, and nothing runs in
// submission order.
func TestPriorities(t *testing.T) {
	r := newRig(t, 1, admission.Config{})
	r.submit(t, "busy", "ten_other", "") // another tenant's job has the slot
	for i := range 4 {
		r.submit(t, fmt.Sprintf("low%d", i), "", tasks.PriorityLow)
	}
	for i := range 4 {
		r.submit(t, fmt.Sprintf("normal%d", i), "", tasks.PriorityNormal)
	}
	for i := range 4 {
		r.submit(t, fmt.Sprintf("high%d", i), "", tasks.PriorityHigh)
	}
	started := r.serve(t, 1, 0)
	order := waitStarted(t, started, 13)
	if order[0] != "busy" {
		t.Fatalf("the job admitted first did not start first: %v", order)
	}
	order = order[1:]
	t.Logf("start order: %s", strings.Join(order, " "))
	var prios []string
	for _, j := range order {
		prios = append(prios, strings.TrimRight(j, "0123456789"))
	}
	// Start-time fair queuing over weights 4:2:1, ties to the higher: each
	// admission adds 1/weight to its priority's virtual time.
	want := []string{"high", "normal", "low", "high", "high", "normal", "high", "normal", "low", "normal", "low", "low"}
	if !slices.Equal(prios, want) {
		t.Fatalf("priorities started %v, want %v", prios, want)
	}
	// Within a priority, in submission order.
	for _, p := range []string{"low", "normal", "high"} {
		var seq []string
		for _, j := range order {
			if strings.HasPrefix(j, p) {
				seq = append(seq, j)
			}
		}
		if !slices.IsSorted(seq) {
			t.Errorf("%s started out of submission order: %v", p, seq)
		}
	}
}

// TestLaterPartsFirst: a chunk of a started job goes before its tenant's
// waiting transcodes.
func TestLaterPartsFirst(t *testing.T) {
	r := newRig(t, 1, admission.Config{})
	r.submit(t, "started", "", "") // admitted at once: the fleet's one slot is free
	r.submit(t, "next0", "", "")
	r.submit(t, "next1", "", "")
	chunk, err := tasks.NewTranscodeChunkTask(t.Context(), &kilnv1.TranscodeTask{JobId: "started", Chunk: 3,
		Plan: &kilnv1.Plan{FrameRate: 30, Chunking: &kilnv1.Chunking{Count: 4, Frames: 360}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.Enqueue(t.Context(), r.q, chunk); err != nil {
		t.Fatal(err)
	}
	if w, err := r.q.Waiting(t.Context(), tasks.ChunkTaskID("started", 1, 3)); err != nil || !w {
		t.Fatalf("the chunk should wait while the slot is taken: %v %v", w, err)
	}
	// The started job's transcode is done (asynq no longer has it): the
	// next pass releases its slot and admits the chunk.
	if err := r.inspector.DeleteTask(tasks.QueueTranscode, tasks.TaskID(tasks.TypeTranscode, "started", 1)); err != nil {
		t.Fatal(err)
	}
	if err := r.q.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
	info, err := r.inspector.GetTaskInfo(tasks.QueueTranscode, tasks.ChunkTaskID("started", 1, 3))
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("the chunk was not admitted first: %+v, %v", info, err)
	}
	if w, err := r.q.Waiting(t.Context(), tasks.TaskID(tasks.TypeTranscode, "next0", 1)); err != nil || !w {
		t.Fatalf("next0 should still wait: %v %v", w, err)
	}
}

// TestRepeatAndCrash: a repeated TaskID is a conflict, as asynq answers;
// a task admitted by an admitter that died before enqueueing it is
// enqueued by the next pass; other queues' tasks pass straight through.
func TestRepeatAndCrash(t *testing.T) {
	r := newRig(t, 4, admission.Config{})
	cmd, err := tasks.NewTranscodeTask(t.Context(), &kilnv1.TranscodeTask{JobId: "j1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := admission.SubmitOnly(t.Context(), r.q, cmd.Task, cmd.Options...); err != nil {
		t.Fatal(err)
	}
	if _, err := r.q.EnqueueContext(t.Context(), cmd.Task, cmd.Options...); err != asynq.ErrTaskIDConflict {
		t.Fatalf("repeated submit: %v, want ErrTaskIDConflict", err)
	}
	id := tasks.TaskID(tasks.TypeTranscode, "j1", 1)
	if w, err := r.q.Waiting(t.Context(), id); err != nil || !w {
		t.Fatalf("Waiting = %v, %v; want true", w, err)
	}
	// An admitter that admitted j1 and died before asynq had it: the
	// admission is recorded, asynq has nothing.
	if err := admission.AdmitOnly(t.Context(), r.q, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := r.inspector.GetTaskInfo(tasks.QueueTranscode, id); err == nil {
		t.Fatal("asynq has the task before any pass enqueued it")
	}
	if err := r.q.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
	if info, err := r.inspector.GetTaskInfo(tasks.QueueTranscode, id); err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("after the pass: %+v, %v; want pending in asynq", info, err)
	}
	if w, err := r.q.Waiting(t.Context(), id); err != nil || w {
		t.Fatalf("Waiting = %v, %v once in asynq; want false", w, err)
	}
	probe, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: "j2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.Enqueue(t.Context(), r.q, probe); err != nil {
		t.Fatal(err)
	}
	if info, err := r.inspector.GetTaskInfo(tasks.QueueProbe, tasks.TaskID(tasks.TypeProbe, "j2", 1)); err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("a probe does not wait for admission: %+v, %v", info, err)
	}
}
