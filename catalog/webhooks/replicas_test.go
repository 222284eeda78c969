package webhooks

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/sqldialect"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// redisDB is this package's database of the test stack's Redis (see
// testenv/redis.go).
const redisDB = 6

// postgresBackend opens a fresh PostgreSQL store: the one backend several
// catalog replicas share (SQLite refuses a second one).
func postgresBackend(t *testing.T) store {
	for _, b := range backends {
		if b.name == "postgres" {
			return b.open(t)
		}
	}
	t.Fatal("no postgres backend")
	return nil
}

// TestReplicasMakeEachAttemptOnce runs the dispatchers of two catalog
// replicas on one PostgreSQL database, with real asynq workers making the
// attempts, and a receiver that refuses every event's first attempt: each
// event must reach it exactly twice (the refused attempt and its retry),
// and the delivery log must hold exactly those attempts.
func TestReplicasMakeEachAttemptOnce(t *testing.T) {
	st := postgresBackend(t)
	opt := testenv.RedisDB(t, redisDB)
	queue, inspector := testenv.AsynqClient(t, opt), testenv.AsynqInspector(t, opt)
	mux := asynq.NewServeMux()
	NewDeliverer(DelivererConfig{AllowLoopback: true, Timeout: 5 * time.Second}).Register(mux)
	testenv.AsynqServer(t, opt, []string{Queue}, mux, nil)

	var (
		mu       sync.Mutex
		requests = map[string]int{} // webhook-id -> requests
		secret   string
	)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(secret)
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		if err != nil {
			t.Errorf("receiver: signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := r.Header.Get(HeaderID)
		requests[id]++
		if requests[id] == 1 {
			w.WriteHeader(http.StatusInternalServerError) // the first attempt fails: one retry each
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rcv.Close)

	keys := httpapi.NewKeys([]string{testKey})
	var replicas []*Service
	for range 2 {
		svc, err := New(t.Context(), Config{
			DB: st.DB(), Dialect: st.Dialect(), Queue: queue, Tasks: inspector, APIKeys: keys,
			PublicURL: "https://kiln.example", RetrySchedule: []time.Duration{50 * time.Millisecond},
			PollInterval: 5 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, svc)
	}
	st.OnApply(replicas[0].OnApply)
	f := &fixture{api: replicas[1].Handler()}
	ep := f.register(t, rcv.URL, EventJobFailed)
	mu.Lock()
	secret = ep.Secret
	mu.Unlock()

	const jobs = 40
	for i := range jobs {
		job, asset := jobid.FromObject("kiln-sources", fmt.Sprintf("clip-%d.mp4", i), "etag")
		queued := &kilnv1.JobEvent{EventId: job + ".queued", JobId: job, AssetId: asset, State: kilnv1.JobState_JOB_STATE_QUEUED}
		if _, err := st.Apply(t.Context(), queued); err != nil { // the job's tenant: the default one
			t.Fatal(err)
		}
		ev := &kilnv1.JobEvent{EventId: job + ".failed", JobId: job, AssetId: asset, State: kilnv1.JobState_JOB_STATE_FAILED,
			Error: &kilnv1.JobError{Code: "invalid_media", Message: "not a video"}}
		if _, err := st.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, svc := range replicas {
		wg.Go(func() { _ = svc.Run(t.Context()) })
	}
	db := fixture{db: sqldialect.DB{DB: st.DB(), Dialect: st.Dialect()}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var done int
		if err := db.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_deliveries WHERE status IN ('succeeded', 'failed')`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done == jobs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries ended after 60 s", done, jobs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for a stray duplicate attempt to arrive

	mu.Lock()
	defer mu.Unlock()
	if len(requests) != jobs {
		t.Fatalf("the receiver saw %d events, want %d", len(requests), jobs)
	}
	for id, n := range requests {
		if n != 2 {
			t.Errorf("event %s reached the receiver %d times, want 2 (one refused attempt, one retry)", id, n)
		}
	}
	if n := db.count(t, "webhook_attempts"); n != 2*jobs {
		t.Errorf("%d attempts logged, want %d", n, 2*jobs)
	}
	var failed int
	_ = db.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM webhook_deliveries WHERE status <> 'succeeded'`).Scan(&failed)
	if failed != 0 {
		t.Errorf("%d deliveries did not succeed", failed)
	}
}

// TestStaleReadMakesNoAttempt is the race two replicas' dispatchers run
// into, made deterministic: a dispatcher that read a delivery as due
// enqueues it only after another has made that attempt, recorded it and
// deleted its task. The late enqueue must make no attempt.
func TestStaleReadMakesNoAttempt(t *testing.T) { eachBackend(t, testStaleReadMakesNoAttempt) }

func testStaleReadMakesNoAttempt(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t, 500)
	ep := f.register(t, rcv.srv.URL, EventJobFailed)
	rcv.secret = ep.Secret
	f.queued(t)
	if _, err := f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_FAILED, 0)); err != nil {
		t.Fatal(err)
	}
	list, err := f.svc.due(t.Context(), f.clock) // what the slow replica read
	if err != nil || len(list) != 1 {
		t.Fatalf("due: %v %v", list, err)
	}
	stale := list[0]
	f.dispatch(t) // the other replica: attempt 1 made (500), recorded, its task deleted
	if n := len(rcv.payloads()); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
	f.clock = f.clock.Add(time.Minute) // the retry is due: the row is pending again
	if err := f.svc.enqueue(t.Context(), stale, f.clock); err != nil {
		t.Fatal(err)
	}
	if n := len(f.q.ids); n != 1 {
		t.Fatalf("the stale read enqueued attempt %d again: tasks %v", stale.attempts+1, f.q.ids)
	}
	var status string
	var attempts int
	if err := f.db.QueryRowContext(t.Context(), `SELECT status, attempts FROM webhook_deliveries`).Scan(&status, &attempts); err != nil {
		t.Fatal(err)
	}
	if status != "pending" || attempts != 1 {
		t.Fatalf("delivery %s after %d attempts, want pending after 1", status, attempts)
	}
	f.dispatch(t) // the real retry goes out
	if n := len(rcv.payloads()); n != 2 {
		t.Fatalf("%d attempts after the retry, want 2", n)
	}
}
