package catalog_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/lease"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

const (
	recBucket = "kiln-sources"
	recGrace  = 2 * time.Minute
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// recObjects is a sources bucket: List and Stat of its objects.
type recObjects struct{ objs []objstore.Info }

func (o *recObjects) List(_ context.Context, bucket, prefix string) ([]objstore.Info, error) {
	var out []objstore.Info
	for _, i := range o.objs {
		if i.Bucket == bucket && strings.HasPrefix(i.Key, prefix) {
			i.Metadata, i.ContentType = nil, "" // List does not return them
			out = append(out, i)
		}
	}
	return out, nil
}

func (o *recObjects) Stat(_ context.Context, bucket, key string) (objstore.Info, error) {
	for _, i := range o.objs {
		if i.Bucket == bucket && i.Key == key {
			return i, nil
		}
	}
	return objstore.Info{}, fmt.Errorf("stat %s: %w", key, objstore.ErrNotFound)
}

// recEvents records job events (fakes.Events) and object-landed facts.
type recEvents struct {
	fakes.Events
	mu     sync.Mutex
	landed []*kilnv1.ObjectLanded
}

func (e *recEvents) PublishObjectLanded(_ context.Context, ev *kilnv1.ObjectLanded) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.landed = append(e.landed, ev)
	return nil
}

func (e *recEvents) Landed() []*kilnv1.ObjectLanded {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.landed)
}

// recTasks is the queue as the inspector sees it: task id -> state.
type recTasks map[string]asynq.TaskState

func (q recTasks) GetTaskInfo(queue, id string) (*asynq.TaskInfo, error) {
	st, ok := q[id]
	if !ok {
		return nil, fmt.Errorf("asynq: %w", asynq.ErrTaskNotFound)
	}
	return &asynq.TaskInfo{ID: id, Queue: queue, State: st, LastErr: "boom"}, nil
}

// recAttempts records the attempts the reconciler starts.
type recAttempts struct {
	mu      sync.Mutex
	cleared []string
}

func (a *recAttempts) Clear(_ context.Context, jobID string, attempt int32) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cleared = append(a.cleared, fmt.Sprintf("%s/%d", jobID, attempt))
	return nil
}

type recEnv struct {
	clock    *clock
	store    catalog.Store
	objects  *recObjects
	events   *recEvents
	queue    *fakes.Queue
	tasks    recTasks
	attempts *recAttempts
	jobs     *fakes.Jobs
}

func newRecEnv(t *testing.T) *recEnv {
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	return &recEnv{clock: c, store: catalog.OpenTestStore(t, c.Now), objects: &recObjects{}, events: &recEvents{},
		queue: &fakes.Queue{}, tasks: recTasks{}, attempts: &recAttempts{}, jobs: &fakes.Jobs{}}
}

func (e *recEnv) reconciler(t *testing.T, holder string) *catalog.Reconciler {
	t.Helper()
	return e.reconcilerPaged(t, holder, 0)
}

func (e *recEnv) reconcilerPaged(t *testing.T, holder string, pageSize int) *catalog.Reconciler {
	t.Helper()
	r, err := catalog.NewReconciler(catalog.ReconcilerConfig{
		Store: e.store, Objects: e.objects, SourcesBucket: recBucket, Events: e.events, Queue: e.queue,
		Tasks: e.tasks, Attempts: e.attempts, Jobs: e.jobs, Interval: time.Minute, Grace: recGrace,
		Holder: holder, Logger: zaptest.NewLogger(t), Now: e.clock.Now, PageSize: pageSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func once(t *testing.T, r *catalog.Reconciler) catalog.Report {
	t.Helper()
	rep, err := r.Once(t.Context())
	if err != nil {
		t.Fatalf("Once: %v", err)
	}
	if rep.Errors != 0 {
		t.Errorf("Once: %d errors", rep.Errors)
	}
	return rep
}

// job records a job over source key, moved through states (QUEUED first),
// at the env's clock.
func (e *recEnv) job(t *testing.T, key string, attempt int32, states ...kilnv1.JobState) (jobID, assetID string) {
	t.Helper()
	jobID, assetID = jobid.FromObject(recBucket, key, "etag-"+key)
	for _, st := range append([]kilnv1.JobState{kilnv1.JobState_JOB_STATE_QUEUED}, states...) {
		ev := jobevent.New(jobID, assetID, attempt, st, strings.ToLower(st.String()))
		ev.Time = timestamppb.New(e.clock.Now())
		switch st {
		case kilnv1.JobState_JOB_STATE_QUEUED:
			ev.Source = &kilnv1.ObjectRef{Bucket: recBucket, Key: key, Etag: "etag-" + key, Size: 99}
			ev.Preset, ev.PlaybackPolicy = "small", "signed"
		case kilnv1.JobState_JOB_STATE_PROBING:
			ev.Media = &kilnv1.MediaInfo{Format: "mov,mp4", DurationSeconds: 30}
			ev.Plan = &kilnv1.Plan{Rungs: []*kilnv1.Rung{{Name: "360p", Width: 640, Height: 360}}}
		}
		if _, err := e.store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	return jobID, assetID
}

func wantActions(t *testing.T, rep catalog.Report, want map[string]int) {
	t.Helper()
	for a, n := range rep.Actions {
		if n != want[a] {
			t.Errorf("actions[%s] = %d, want %d (all: %v)", a, n, want[a], rep.Actions)
		}
	}
	for a, n := range want {
		if rep.Actions[a] != n {
			t.Errorf("actions[%s] = %d, want %d (all: %v)", a, rep.Actions[a], n, rep.Actions)
		}
	}
}

// TestReconcilerSources: a source without a job, older than the grace
// period, is announced again with its metadata; young sources, sources
// with a job and objects outside uploads/ are left alone.
func TestReconcilerSources(t *testing.T) {
	e := newRecEnv(t)
	now := e.clock.Now()
	old, young := now.Add(-10*time.Minute), now.Add(-time.Minute)
	e.job(t, "uploads/bbb/with-job.mp4", 1) // its job exists
	e.objects.objs = []objstore.Info{
		{Bucket: recBucket, Key: "uploads/aaa/lost.mp4", ETag: "etag-lost", Size: 1234, ContentType: "video/mp4", LastModified: old,
			Metadata: map[string]string{"Kiln-Preset": "small", "X-Amz-Meta-Kiln-Playback-Policy": "signed", strings.ToLower(layout.MetaWebhook): "https://hooks.test/x"}},
		{Bucket: recBucket, Key: "uploads/bbb/with-job.mp4", ETag: "etag-uploads/bbb/with-job.mp4", LastModified: old},
		{Bucket: recBucket, Key: "uploads/ccc/young.mp4", ETag: "e", LastModified: young},
		{Bucket: recBucket, Key: "elsewhere/old.mp4", ETag: "e", LastModified: old},
	}
	rep := once(t, e.reconciler(t, "a"))
	if !rep.Leader {
		t.Fatal("not leader")
	}
	wantActions(t, rep, map[string]int{catalog.ActionSourceLanded: 1})
	landed := e.events.Landed()
	if len(landed) != 1 {
		t.Fatalf("landed = %v, want the lost source only", landed)
	}
	want := &kilnv1.ObjectLanded{
		Object: &kilnv1.ObjectRef{Bucket: recBucket, Key: "uploads/aaa/lost.mp4", Etag: "etag-lost", Size: 1234, ContentType: "video/mp4"},
		Origin: catalog.OriginReconciler,
		Preset: "small", PlaybackPolicy: "signed", WebhookUrl: "https://hooks.test/x",
		Time: timestamppb.New(now),
	}
	if !proto.Equal(landed[0], want) {
		t.Errorf("landed = %v, want %v", landed[0], want)
	}
	if len(e.queue.Enqueued()) != 0 || len(e.events.Events.Events()) != 0 {
		t.Error("the reconciler started a job itself; ingest does that")
	}
}

// TestReconcilerLostTasks: a stale running job without a task that will
// run gets the command that repairs it, by what the queue still holds of
// its attempt.
func TestReconcilerLostTasks(t *testing.T) {
	probing := kilnv1.JobState_JOB_STATE_PROBING
	transcoding := kilnv1.JobState_JOB_STATE_TRANSCODING
	packaging := kilnv1.JobState_JOB_STATE_PACKAGING
	const (
		live      = asynq.TaskStatePending
		completed = asynq.TaskStateCompleted
		archived  = asynq.TaskStateArchived
	)
	tests := []struct {
		name    string
		attempt int32
		states  []kilnv1.JobState
		tasks   map[string]asynq.TaskState // by task type, of the job's attempt
		rescued map[string]asynq.TaskState // by task type: its first rescue copy (lease.RescueID)
		fresh   bool                       // updated within the grace period
		want    map[string]int
		check   func(t *testing.T, e *recEnv, jobID string)
	}{
		{name: "fresh job", fresh: true, want: map[string]int{}},
		{name: "queued, probe pending", tasks: map[string]asynq.TaskState{tasks.TypeProbe: live}, want: map[string]int{}},
		{name: "probing, probe done, transcode waiting", states: []kilnv1.JobState{probing},
			tasks: map[string]asynq.TaskState{tasks.TypeProbe: completed, tasks.TypeTranscode: asynq.TaskStatePending}, want: map[string]int{}},
		{name: "transcoding, package queued", states: []kilnv1.JobState{probing, transcoding},
			tasks: map[string]asynq.TaskState{tasks.TypeProbe: completed, tasks.TypeTranscode: completed, tasks.TypePackage: asynq.TaskStateRetry},
			want:  map[string]int{}},
		{name: "transcoding, original dropped, its rescue copy running", states: []kilnv1.JobState{probing, transcoding},
			tasks:   map[string]asynq.TaskState{tasks.TypeProbe: completed, tasks.TypeTranscode: completed},
			rescued: map[string]asynq.TaskState{tasks.TypeTranscode: asynq.TaskStateActive}, want: map[string]int{}},
		{
			name: "transcoding, rescue copy archived, failure lost", states: []kilnv1.JobState{probing, transcoding},
			tasks:   map[string]asynq.TaskState{tasks.TypeProbe: completed, tasks.TypeTranscode: completed},
			rescued: map[string]asynq.TaskState{tasks.TypeTranscode: archived},
			want:    map[string]int{catalog.ActionFailureRecorded: 1},
		},
		{
			name: "queued, probe lost", want: map[string]int{catalog.ActionTaskEnqueued: 1},
			check: func(t *testing.T, e *recEnv, jobID string) {
				var p kilnv1.ProbeTask
				got := onlyTask(t, e, tasks.TypeProbe, tasks.TaskID(tasks.TypeProbe, jobID, 1), &p)
				if p.GetAttempt() != 1 || p.GetPreset() != "small" || p.GetSource().GetKey() != "uploads/x.mp4" || p.GetSource().GetEtag() != "etag-uploads/x.mp4" {
					t.Errorf("probe payload = %v", &p)
				}
				if got.Opt(asynq.QueueOpt) != tasks.QueueProbe {
					t.Errorf("queue = %v", got.Opt(asynq.QueueOpt))
				}
			},
		},
		{
			name: "attempt 2 probing, probe lost", attempt: 2, states: []kilnv1.JobState{probing}, want: map[string]int{catalog.ActionTaskEnqueued: 1},
			check: func(t *testing.T, e *recEnv, jobID string) {
				var p kilnv1.ProbeTask
				onlyTask(t, e, tasks.TypeProbe, tasks.TaskID(tasks.TypeProbe, jobID, 2), &p)
				if p.GetAttempt() != 2 {
					t.Errorf("attempt = %d, want the job's own", p.GetAttempt())
				}
			},
		},
		{
			name: "probing, probe done, transcode lost", states: []kilnv1.JobState{probing},
			tasks: map[string]asynq.TaskState{tasks.TypeProbe: completed}, want: map[string]int{catalog.ActionTaskEnqueued: 1},
			check: func(t *testing.T, e *recEnv, jobID string) {
				var p kilnv1.TranscodeTask
				onlyTask(t, e, tasks.TypeTranscode, tasks.TaskID(tasks.TypeTranscode, jobID, 1), &p)
				if p.GetMedia().GetDurationSeconds() != 30 || len(p.GetPlan().GetRungs()) != 1 || p.GetSource().GetKey() != "uploads/x.mp4" {
					t.Errorf("transcode payload = %v", &p)
				}
			},
		},
		{
			name: "transcoding, transcode done, READY and the download lost", states: []kilnv1.JobState{probing, transcoding},
			tasks: map[string]asynq.TaskState{tasks.TypeProbe: completed, tasks.TypeTranscode: completed, tasks.TypePackage: completed},
			want:  map[string]int{catalog.ActionJobRedriven: 1},
			check: func(t *testing.T, e *recEnv, jobID string) {
				var p kilnv1.ProbeTask
				onlyTask(t, e, tasks.TypeProbe, tasks.TaskID(tasks.TypeProbe, jobID, 2), &p)
				if p.GetAttempt() != 2 || p.GetSource().GetKey() != "uploads/x.mp4" {
					t.Errorf("probe payload = %v", &p)
				}
				if !slices.Equal(e.attempts.cleared, []string{jobID + "/2"}) {
					t.Errorf("attempts cleared = %v", e.attempts.cleared)
				}
				evs := e.events.Of(jobID)
				if len(evs) != 1 || evs[0].GetState() != kilnv1.JobState_JOB_STATE_QUEUED || evs[0].GetAttempt() != 2 || evs[0].GetPlaybackPolicy() != "signed" {
					t.Errorf("events = %v, want the QUEUED of attempt 2", evs)
				}
			},
		},
		{
			name: "packaging, package completed, READY lost", states: []kilnv1.JobState{probing, transcoding, packaging},
			tasks: map[string]asynq.TaskState{tasks.TypeProbe: completed, tasks.TypeTranscode: completed, tasks.TypePackage: completed},
			want:  map[string]int{catalog.ActionJobRedriven: 1},
		},
		{
			name: "attempt 5, READY lost", attempt: catalog.MaxRedriveAttempt, states: []kilnv1.JobState{probing, transcoding},
			tasks: map[string]asynq.TaskState{tasks.TypeProbe: completed, tasks.TypeTranscode: completed, tasks.TypePackage: completed},
			want:  map[string]int{catalog.ActionJobStalled: 1},
			check: func(t *testing.T, e *recEnv, jobID string) {
				wantFailed(t, e, jobID, catalog.MaxRedriveAttempt, failure.Stalled)
			},
		},
		{
			name: "transcode archived, failure lost", states: []kilnv1.JobState{probing, transcoding},
			tasks: map[string]asynq.TaskState{tasks.TypeProbe: completed, tasks.TypeTranscode: archived},
			want:  map[string]int{catalog.ActionFailureRecorded: 1},
			check: func(t *testing.T, e *recEnv, jobID string) {
				ev := wantFailed(t, e, jobID, 1, failure.Stalled)
				if !strings.Contains(ev.GetError().GetMessage(), "transcode") {
					t.Errorf("message %q does not name the stage", ev.GetError().GetMessage())
				}
				if len(e.queue.Enqueued()) != 0 {
					t.Error("a stage that failed for good was run again")
				}
			},
		},
		{
			name: "canceled, CANCELED lost", states: []kilnv1.JobState{probing},
			want: map[string]int{catalog.ActionCancelRecorded: 1},
			check: func(t *testing.T, e *recEnv, jobID string) {
				ev := wantFailed(t, e, jobID, 1, failure.Canceled)
				if ev.GetState() != kilnv1.JobState_JOB_STATE_FAILED || len(e.queue.Enqueued()) != 0 {
					t.Errorf("event %v, enqueued %d", ev, len(e.queue.Enqueued()))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newRecEnv(t)
			if tt.name == "canceled, CANCELED lost" {
				e.jobs.Cancel()
			}
			jobID, _ := e.job(t, "uploads/x.mp4", max(tt.attempt, 1), tt.states...)
			for typ, st := range tt.tasks {
				e.tasks[tasks.TaskID(typ, jobID, max(tt.attempt, 1))] = st
			}
			for typ, st := range tt.rescued {
				e.tasks[lease.RescueID(tasks.TaskID(typ, jobID, max(tt.attempt, 1)))] = st
			}
			if tt.fresh {
				e.clock.Add(recGrace / 2)
			} else {
				e.clock.Add(recGrace + time.Second)
			}
			wantActions(t, once(t, e.reconciler(t, "a")), tt.want)
			if tt.check != nil {
				tt.check(t, e, jobID)
			}
			if len(tt.want) == 0 && (len(e.queue.Enqueued()) != 0 || len(e.events.Events.Events()) != 0) {
				t.Errorf("a moving job was touched: enqueued %d, events %v", len(e.queue.Enqueued()), e.events.Events.Events())
			}
		})
	}
}

// onlyTask checks that exactly one task was enqueued, of type typ with
// TaskID id (unless id is a bare job id), and decodes its payload into p.
func onlyTask(t *testing.T, e *recEnv, typ, id string, p proto.Message) fakes.Enqueued {
	t.Helper()
	got := e.queue.Enqueued()
	if len(got) != 1 || got[0].Task.Type() != typ {
		t.Fatalf("enqueued %d tasks, want one %s", len(got), typ)
	}
	if strings.HasPrefix(id, "kiln:") && got[0].Opt(asynq.TaskIDOpt) != id {
		t.Errorf("TaskID = %v, want %s", got[0].Opt(asynq.TaskIDOpt), id)
	}
	if err := proto.Unmarshal(got[0].Task.Payload(), p); err != nil {
		t.Fatal(err)
	}
	return got[0]
}

func wantFailed(t *testing.T, e *recEnv, jobID string, attempt int32, code string) *kilnv1.JobEvent {
	t.Helper()
	evs := e.events.Of(jobID)
	if len(evs) != 1 || evs[0].GetError().GetCode() != code || evs[0].GetAttempt() != attempt {
		t.Fatalf("events = %v, want one FAILED (%s) of attempt %d", evs, code, attempt)
	}
	if want := jobevent.Failed(jobID, "", attempt, code, "").GetEventId(); evs[0].GetEventId() != want {
		t.Errorf("event id %s, want %s (the attempt's failed fact)", evs[0].GetEventId(), want)
	}
	return evs[0]
}

// TestReconcilerStalled: a job in one state past the deadline of its
// stages, with no task left to run, fails as stalled; a job with a running
// task does not, however long it takes.
func TestReconcilerStalled(t *testing.T) {
	e := newRecEnv(t)
	stuck, _ := e.job(t, "uploads/stuck.mp4", 1, kilnv1.JobState_JOB_STATE_PROBING, kilnv1.JobState_JOB_STATE_TRANSCODING)
	busy, _ := e.job(t, "uploads/busy.mp4", 1, kilnv1.JobState_JOB_STATE_PROBING, kilnv1.JobState_JOB_STATE_TRANSCODING)
	e.tasks[tasks.TaskID(tasks.TypeTranscode, busy, 1)] = asynq.TaskStateActive
	e.tasks[tasks.TaskID(tasks.TypeProbe, stuck, 1)] = asynq.TaskStateCompleted
	media := &kilnv1.MediaInfo{DurationSeconds: 30}
	deadline := catalog.StallDeadline(catalog.StateTranscoding, media)
	if min := 9 * tasks.TranscodeTimeout(media); deadline < min {
		t.Fatalf("StallDeadline(transcoding) = %v, less than every transcode run (%v)", deadline, min)
	}
	e.clock.Add(deadline + recGrace + time.Second)
	wantActions(t, once(t, e.reconciler(t, "a")), map[string]int{catalog.ActionJobStalled: 1})
	ev := wantFailed(t, e, stuck, 1, failure.Stalled)
	if !strings.Contains(ev.GetError().GetMessage(), "transcoding") {
		t.Errorf("message %q does not name the state", ev.GetError().GetMessage())
	}
	if len(e.events.Of(busy)) != 0 || len(e.queue.Enqueued()) != 0 {
		t.Error("the job with a running task was touched")
	}
}

// TestReconcilerPages: a lost task behind a page of busy jobs (a backlog
// of pending probes, the oldest) is still found.
func TestReconcilerPages(t *testing.T) {
	e := newRecEnv(t)
	for _, k := range []string{"uploads/busy1.mp4", "uploads/busy2.mp4"} {
		id, _ := e.job(t, k, 1)
		e.tasks[tasks.TaskID(tasks.TypeProbe, id, 1)] = asynq.TaskStatePending
		e.clock.Add(time.Second)
	}
	lost, _ := e.job(t, "uploads/lost.mp4", 1)
	e.clock.Add(recGrace + time.Second)
	wantActions(t, once(t, e.reconcilerPaged(t, "a", 1)), map[string]int{catalog.ActionTaskEnqueued: 1})
	onlyTask(t, e, tasks.TypeProbe, tasks.TaskID(tasks.TypeProbe, lost, 1), &kilnv1.ProbeTask{})
}

// TestStallDeadlineCoversRetryDelays: the deadline's bound on one retry
// delay holds for tasks.RetryDelay.
func TestStallDeadlineCoversRetryDelays(t *testing.T) {
	for n := range 20 {
		for range 200 {
			if d := tasks.RetryDelay(n, nil, nil); d > catalog.MaxRetryDelay {
				t.Fatalf("RetryDelay(%d) = %v, over the reconciler's bound %v", n, d, catalog.MaxRetryDelay)
			}
		}
	}
	for _, st := range []catalog.State{catalog.StateQueued, catalog.StateProbing, catalog.StateTranscoding, catalog.StatePackaging} {
		if catalog.StallDeadline(st, nil) <= 0 {
			t.Errorf("StallDeadline(%s) = 0", st)
		}
	}
}

// TestReconcilerLease: while one replica holds the lease another does
// nothing; once it expires (the holder stopped) the other takes over.
func TestReconcilerLease(t *testing.T) {
	e := newRecEnv(t)
	a, b := e.reconciler(t, "replica-a"), e.reconciler(t, "replica-b")
	jobID, _ := e.job(t, "uploads/lost.mp4", 1)
	e.clock.Add(recGrace + time.Second)
	if rep := once(t, a); !rep.Leader || rep.Actions[catalog.ActionTaskEnqueued] != 1 {
		t.Fatalf("a: %+v, want the leader re-enqueuing the probe", rep)
	}
	e.clock.Add(time.Minute)
	if rep := once(t, b); rep.Leader || len(rep.Actions) != 0 {
		t.Fatalf("b while a holds the lease: %+v, want nothing", rep)
	}
	if rep := once(t, a); !rep.Leader { // a renews
		t.Fatalf("a renewing: %+v", rep)
	}
	e.clock.Add(2 * time.Minute) // within the renewed lease (3 intervals)
	if rep := once(t, b); rep.Leader {
		t.Fatal("b took a renewed lease")
	}
	delete(e.tasks, tasks.TaskID(tasks.TypeProbe, jobID, 1))
	e.clock.Add(2 * time.Minute) // a stopped: its lease expired
	rep := once(t, b)
	if !rep.Leader || rep.Actions[catalog.ActionTaskEnqueued] != 1 {
		t.Fatalf("b after the lease expired: %+v, want it leading", rep)
	}
	if rep := once(t, a); rep.Leader {
		t.Error("a leads again while b holds the lease")
	}
}

// TestReconcilerRunAndMetrics: Run passes until its context ends, then
// releases the lease; the counters add up every pass.
func TestReconcilerRunAndMetrics(t *testing.T) {
	e := newRecEnv(t)
	e.job(t, "uploads/lost.mp4", 1)
	e.clock.Add(recGrace + time.Second)
	r := e.reconciler(t, "a")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.queue.Enqueued()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if held, err := e.store.AcquireLease(t.Context(), catalog.LeaseName, "b", e.clock.Now(), time.Minute); err != nil || !held {
		t.Errorf("lease after Run: held by b = %v, %v; want released", held, err)
	}
	text, err := testutil.CollectAndFormat(r, expfmt.TypeTextPlain, "kiln_reconciler_actions_total", "kiln_reconciler_errors_total", "kiln_reconciler_passes_total")
	if err != nil {
		t.Fatal(err)
	}
	b := string(text) // what /metrics serves
	for _, want := range []string{
		"# TYPE kiln_reconciler_actions_total counter\n",
		`kiln_reconciler_actions_total{action="task_enqueued"} 1` + "\n",
		`kiln_reconciler_actions_total{action="source_landed"} 0` + "\n",
		"kiln_reconciler_errors_total 0\n",
		"kiln_reconciler_passes_total 1\n",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("metrics lack %q:\n%s", want, b)
		}
	}
}

func TestNewReconcilerValidates(t *testing.T) {
	e := newRecEnv(t)
	if _, err := catalog.NewReconciler(catalog.ReconcilerConfig{Store: e.store}); err == nil {
		t.Error("NewReconciler without dependencies: nil error")
	}
	_, err := catalog.NewReconciler(catalog.ReconcilerConfig{Store: e.store, Objects: e.objects, Events: e.events, Queue: e.queue,
		Tasks: e.tasks, Attempts: e.attempts, SourcesBucket: recBucket, Interval: 0, Grace: time.Minute})
	if err == nil {
		t.Error("NewReconciler with interval 0: nil error (0 disables it: do not build one)")
	}
}

// TestReconcilerLostRenditionRetry: a rendition retry recorded by a request
// that died before enqueueing (RetryRendition without RenditionRetryDone) is
// enqueued by the reconciler once older than the grace period — the retry's
// own task id, so one that was in fact enqueued collapses into it — and then
// settled.
func TestReconcilerLostRenditionRetry(t *testing.T) {
	e := newRecEnv(t)
	jobID, asset := eventtest.Job("lost-rendition-retry")
	for _, ev := range []*kilnv1.JobEvent{eventtest.Event(jobID, kilnv1.JobState_JOB_STATE_QUEUED, 0),
		eventtest.Event(jobID, kilnv1.JobState_JOB_STATE_PROBING, 0), eventtest.ReadyWithFailure(jobID)} {
		if _, err := e.store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	rr, err := e.store.RetryRendition(t.Context(), asset, "720p") // and the request dies
	if err != nil {
		t.Fatal(err)
	}
	r, err := catalog.NewReconciler(catalog.ReconcilerConfig{
		Store: e.store, Objects: e.objects, SourcesBucket: recBucket, Events: e.events, Queue: e.queue,
		Tasks: e.tasks, Attempts: e.attempts, Jobs: e.jobs, Interval: time.Minute, Grace: recGrace,
		Renditions: &catalog.Retrier{Queue: e.queue}, Holder: "a", Logger: zaptest.NewLogger(t), Now: e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, once(t, r), map[string]int{}) // within the grace period: the request may still enqueue it
	if n := len(e.queue.Enqueued()); n != 0 {
		t.Fatalf("%d tasks enqueued within the grace period", n)
	}
	e.clock.Add(recGrace + time.Second)
	wantActions(t, once(t, r), map[string]int{catalog.ActionRenditionRetryEnqueued: 1})
	var task kilnv1.PackageTask
	onlyTask(t, e, tasks.TypePackage, tasks.TaskID(tasks.TypePackage, jobID, 1)+":r:720p:1", &task)
	if task.GetOnly() != "720p" || task.GetRenditionRetry() != rr.Retry || task.GetEncoded()[0].GetObject().GetKey() != rr.EncodedKey {
		t.Errorf("task = %v", &task)
	}
	wantActions(t, once(t, r), map[string]int{}) // settled
	if p, err := e.store.PendingRenditionRetries(t.Context(), e.clock.Now(), 10); err != nil || len(p) != 0 {
		t.Errorf("still pending: %+v, %v", p, err)
	}
}
