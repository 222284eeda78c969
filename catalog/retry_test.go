package catalog_test

// Integration test of the Retrier against the real Redis of the test stack
// (KILN_TEST_REDIS_ADDR), with a real asynq client and inspector and the
// real cancel.Service. It uses Redis DB testRedisDB only, flushed before and
// after each test, so such tests must not run in parallel with each other.

import (
	"testing"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// testRedisDB is this package's database of the test Redis (the table in
// internal/testenv/redis.go): no other package's tests use it.
const testRedisDB = 10

// TestRetrier: Retry clears the cancel mark, enqueues the attempt's own
// probe and publishes its QUEUED event; retrying the same attempt again is
// harmless.
func TestRetrier(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	ctx := t.Context()
	pub := &fakes.Events{}
	c := &cancel.Service{Redis: testenv.RedisClient(t, opt), Inspector: testenv.AsynqInspector(t, opt), Events: pub, Logger: zaptest.NewLogger(t)}
	r := &catalog.Retrier{Queue: testenv.AsynqClient(t, opt), Attempts: c, Events: pub}

	if _, err := r.Retry(ctx, fakes.ProbeTask("job-y", 1), "public"); err == nil {
		t.Error("Retry of attempt 1: nil error")
	}
	if err := c.Cancel(ctx, "job-y", "asset-job-y"); err != nil {
		t.Fatal(err)
	}
	var first *kilnv1.JobEvent
	for i := range 2 {
		ev, err := r.Retry(ctx, fakes.ProbeTask("job-y", 2), "signed")
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
	fakes.CheckCanceled(t, c.Check(ctx, "job-y", 1), "Check(old attempt)")
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
	if evs := pub.Of("job-y"); len(evs) != 3 || evs[1].GetEventId() != evs[2].GetEventId() {
		t.Errorf("events = %v, want CANCELED then the same QUEUED twice", evs)
	}
}
