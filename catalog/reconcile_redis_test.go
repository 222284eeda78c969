package catalog_test

// Integration test of the Reconciler against the real Redis of the test
// stack (KILN_TEST_REDIS_ADDR) — asynq's client and inspector, the real
// cancel.Service — and the SQLite store. It uses Redis DB
// reconcileRedisDB only (the table in internal/testenv/redis.go), flushed
// before and after.

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/tenant"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

const reconcileRedisDB = 11

// TestReconcilerRedis: a queued job whose probe task is deleted from Redis
// gets it back under the same TaskID with the same payload; once the probe
// ran (and its hand-over to the transcode was lost) the transcode is
// enqueued, rebuilt from the probed media and plan.
func TestReconcilerRedis(t *testing.T) {
	opt := testenv.RedisDB(t, reconcileRedisDB)
	ctx := t.Context()
	insp := testenv.AsynqInspector(t, opt)
	queue := testenv.AsynqClient(t, opt)
	e := newRecEnv(t)
	c := &cancel.Service{Redis: testenv.RedisClient(t, opt), Inspector: insp, Events: e.events, Logger: zaptest.NewLogger(t)}
	r, err := catalog.NewReconciler(catalog.ReconcilerConfig{
		Store: e.store, Objects: e.objects, SourcesBucket: recBucket, Events: e.events, Queue: queue,
		Tasks: insp, Attempts: c, Jobs: c, Interval: time.Minute, Grace: recGrace,
		Holder: "it", Logger: zaptest.NewLogger(t), Now: e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}

	// The job as ingest starts it: QUEUED recorded, probe enqueued.
	jobID, assetID := e.job(t, "uploads/it.mp4", 1)
	probe := &kilnv1.ProbeTask{JobId: jobID, AssetId: assetID, Preset: "small",
		Source:   &kilnv1.ObjectRef{Bucket: recBucket, Key: "uploads/it.mp4", Etag: "etag-uploads/it.mp4", Size: 99},
		Priority: tasks.PriorityNormal, TenantId: tenant.Default} // what ingest sends, what the job records
	cmd, err := tasks.NewProbeTask(ctx, probe)
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.Enqueue(ctx, queue, cmd); err != nil {
		t.Fatal(err)
	}
	id := tasks.TaskID(tasks.TypeProbe, jobID, 1)
	e.clock.Add(recGrace + time.Second)
	if rep := once(t, r); len(rep.Actions) != 0 {
		t.Fatalf("pass with the probe pending: %v, want nothing", rep.Actions)
	}

	if err := insp.DeleteTask(tasks.QueueProbe, id); err != nil {
		t.Fatal(err)
	}
	if rep := once(t, r); rep.Actions[catalog.ActionTaskEnqueued] != 1 {
		t.Fatalf("pass with the probe lost: %v, want it enqueued again", rep.Actions)
	}
	ti := testenv.WaitTaskState(t, insp, tasks.QueueProbe, id, asynq.TaskStatePending, 5*time.Second)
	var got kilnv1.ProbeTask
	probe.Attempt = 1 // ingest leaves it unset; the catalog knows it as 1 (tasks.NormAttempt)
	if err := proto.Unmarshal(ti.Payload, &got); err != nil || !proto.Equal(&got, probe) {
		t.Errorf("re-enqueued probe = %v (%v), want %v", &got, err, probe)
	}
	if ti.Type != tasks.TypeProbe || ti.MaxRetry != tasks.Stages()[0].MaxRetry || ti.Timeout != tasks.ProbeTimeout {
		t.Errorf("re-enqueued probe: type %s, retries %d, timeout %v", ti.Type, ti.MaxRetry, ti.Timeout)
	}
	if rep := once(t, r); len(rep.Actions) != 0 {
		t.Fatalf("second pass: %v, want nothing (the probe is pending again)", rep.Actions)
	}

	// The probe runs and publishes what it found, but its transcode is lost.
	e.job(t, "uploads/it.mp4", 1, kilnv1.JobState_JOB_STATE_PROBING)
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeProbe, func(context.Context, *asynq.Task) error { return nil })
	testenv.AsynqServer(t, opt, []string{tasks.QueueProbe}, mux, nil)
	testenv.WaitTaskState(t, insp, tasks.QueueProbe, id, asynq.TaskStateCompleted, 10*time.Second)
	e.clock.Add(recGrace + time.Second)
	if rep := once(t, r); rep.Actions[catalog.ActionTaskEnqueued] != 1 {
		t.Fatalf("pass with the transcode lost: %v, want it enqueued", rep.Actions)
	}
	ti = testenv.WaitTaskState(t, insp, tasks.QueueTranscode, tasks.TaskID(tasks.TypeTranscode, jobID, 1), asynq.TaskStatePending, 5*time.Second)
	var tr kilnv1.TranscodeTask
	if err := proto.Unmarshal(ti.Payload, &tr); err != nil || tr.GetMedia().GetDurationSeconds() != 30 || tr.GetSource().GetKey() != "uploads/it.mp4" {
		t.Errorf("transcode = %v (%v)", &tr, err)
	}
	if want := tasks.TranscodeTimeout(tr.GetMedia()); ti.Timeout != want {
		t.Errorf("transcode timeout %v, want %v", ti.Timeout, want)
	}

	// A chunked transcode: the transcode's own task is gone (retention
	// over), its parts run. A pending chunk means the job is moving;
	// without any part the job is lost and driven again.
	chunked, chunkedAsset := e.job(t, "uploads/chunked.mp4", 1, kilnv1.JobState_JOB_STATE_PROBING)
	plan := &kilnv1.Plan{FrameRate: 30, Rungs: []*kilnv1.Rung{{Name: "360p", Width: 640, Height: 360}},
		Chunking: &kilnv1.Chunking{Count: 4, LeadFrames: 180, Frames: 360, Parallel: 1}}
	ev := jobevent.New(chunked, chunkedAsset, 1, kilnv1.JobState_JOB_STATE_TRANSCODING, "transcoding")
	ev.Time, ev.Plan = timestamppb.New(e.clock.Now()), plan
	if _, err := e.store.Apply(ctx, ev); err != nil {
		t.Fatal(err)
	}
	part, err := tasks.NewTranscodeChunkTask(ctx, &kilnv1.TranscodeTask{JobId: chunked, AssetId: chunkedAsset, Attempt: 1, Plan: plan, Chunk: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.Enqueue(ctx, queue, part); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(recGrace + time.Second)
	if rep := once(t, r); len(rep.Actions) != 0 {
		t.Fatalf("pass with a chunk of the job pending: %v, want nothing", rep.Actions)
	}
	if err := insp.DeleteTask(tasks.QueueTranscode, tasks.ChunkTaskID(chunked, 1, 2)); err != nil {
		t.Fatal(err)
	}
	if rep := once(t, r); len(rep.Actions) == 0 {
		t.Error("pass with every part of the chunked job lost: nothing done")
	}
}
