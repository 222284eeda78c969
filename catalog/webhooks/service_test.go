package webhooks

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/sqldialect"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// fakeAsynq stands in for Redis: an enqueued attempt runs at once through a
// real Deliverer and its result is kept as a completed task's result.
type fakeAsynq struct {
	d     *Deliverer
	mu    sync.Mutex
	tasks map[string]*asynq.TaskInfo
	ids   []string // enqueue order
	fail  error    // EnqueueContext error
}

func (q *fakeAsynq) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return nil, q.fail
	}
	var id, queue string
	for _, o := range opts {
		switch o.Type() {
		case asynq.TaskIDOpt:
			id = o.Value().(string)
		case asynq.QueueOpt:
			queue = o.Value().(string)
		}
	}
	if queue != Queue || task.Type() != TypeDeliver {
		return nil, errors.New("wrong queue or type")
	}
	if _, ok := q.tasks[id]; ok {
		return nil, asynq.ErrTaskIDConflict
	}
	var p taskPayload
	if err := json.Unmarshal(task.Payload(), &p); err != nil {
		return nil, err
	}
	res, _ := json.Marshal(q.d.Deliver(ctx, &p))
	info := &asynq.TaskInfo{ID: id, Queue: queue, State: asynq.TaskStateCompleted, Result: res}
	q.tasks[id] = info
	q.ids = append(q.ids, id)
	return info, nil
}

func (q *fakeAsynq) GetTaskInfo(queue, id string) (*asynq.TaskInfo, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if info, ok := q.tasks[id]; ok {
		return info, nil
	}
	return nil, asynq.ErrTaskNotFound
}

func (q *fakeAsynq) DeleteTask(queue, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.tasks, id)
	return nil
}

type fixture struct {
	store store
	db    sqldialect.DB // the store's, binding SQLite's marks
	svc   *Service
	q     *fakeAsynq
	api   http.Handler
	clock time.Time
}

const testKey = "kiln_testkey"

func newFixture(t *testing.T, open backend, defaultSecret string) *fixture {
	t.Helper()
	store := open(t)
	q := &fakeAsynq{d: NewDeliverer(DelivererConfig{AllowLoopback: true, Timeout: 5 * time.Second}), tasks: map[string]*asynq.TaskInfo{}}
	svc, err := New(t.Context(), Config{
		DB: store.DB(), Dialect: store.Dialect(), Queue: q, Tasks: q, APIKeys: httpapi.NewKeys([]string{testKey}),
		PublicURL: "https://kiln.example", DefaultSecret: defaultSecret,
		RetrySchedule: []time.Duration{time.Second, time.Minute}, Metrics: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	store.OnApply(svc.OnApply)
	f := &fixture{store: store, db: sqldialect.DB{DB: store.DB(), Dialect: store.Dialect()}, svc: svc, q: q, api: svc.Handler(), clock: time.Now().UTC()}
	svc.now = func() time.Time { return f.clock }
	svc.rnd = func() float64 { return 0.5 }
	return f
}

// call runs an API request and decodes the JSON answer into v.
func (f *fixture) call(t *testing.T, method, path, body string, v any) int {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	if v != nil && rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
	}
	return rec.Code
}

func (f *fixture) register(t *testing.T, url string, types ...string) endpointJSON {
	t.Helper()
	req := map[string]any{"url": url}
	if len(types) > 0 {
		req["event_types"] = types
	}
	b, _ := json.Marshal(req)
	var ep endpointJSON
	if code := f.call(t, http.MethodPost, "/v1/webhooks", string(b), &ep); code != http.StatusCreated {
		t.Fatalf("register: %d", code)
	}
	return ep
}

// queued applies the test job's QUEUED: the job is the default tenant's
// from then on (its events reach that tenant's endpoints).
func (f *fixture) queued(t *testing.T) {
	t.Helper()
	if _, err := f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0)); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) dispatch(t *testing.T) {
	t.Helper()
	// Two passes: enqueue (the fake runs the attempt), then collect.
	for range 2 {
		if err := f.svc.Dispatch(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := f.db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var testJob, testAsset = jobid.FromObject("kiln-sources", "clip.mp4", "etag1")

func jobEvent(state kilnv1.JobState, progress float64) *kilnv1.JobEvent {
	ev := &kilnv1.JobEvent{EventId: testJob + "." + state.String(), JobId: testJob, AssetId: testAsset, State: state, Progress: progress}
	switch state {
	case kilnv1.JobState_JOB_STATE_READY:
		ev.Outputs = &kilnv1.AssetOutputs{Bucket: "kiln-outputs", Prefix: "assets/" + testAsset + "/",
			Mp4Key: "x.mp4", PosterKey: "p.jpg",
			Renditions: []*kilnv1.Rendition{{Name: "360p", Width: 640, Height: 360, Bandwidth: 800000, Codecs: "avc1.64001e,mp4a.40.2", PlaylistKey: "a/index.m3u8"}}}
	case kilnv1.JobState_JOB_STATE_FAILED:
		ev.Error = &kilnv1.JobError{Code: "invalid_media", Message: "not a video"}
	}
	return ev
}

// receiver is a webhook endpoint that verifies signatures with the Standard
// Webhooks library and answers from a script of statuses (then 204).
type receiver struct {
	t      *testing.T
	secret string
	mu     sync.Mutex
	script []int
	got    []Payload
	ids    []string
	hdrs   []http.Header
	srv    *httptest.Server
}

func newReceiver(t *testing.T, script ...int) *receiver {
	r := &receiver{t: t, script: script}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secret != "" {
		wh, _ := standardwebhooks.NewWebhook(r.secret)
		if err := wh.Verify(body, req.Header); err != nil {
			r.t.Errorf("receiver: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		r.t.Errorf("receiver: body %s: %v", body, err)
	}
	r.got = append(r.got, p)
	r.ids = append(r.ids, req.Header.Get(HeaderID))
	r.hdrs = append(r.hdrs, req.Header.Clone())
	status := http.StatusNoContent
	if len(r.script) > 0 {
		status, r.script = r.script[0], r.script[1:]
	}
	if status == 429 {
		w.Header().Set("Retry-After", "7")
	}
	w.WriteHeader(status)
}

func (r *receiver) payloads() []Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Payload(nil), r.got...)
}

func TestOutboxOnlyOnChangedTransitions(t *testing.T) {
	eachBackend(t, testOutboxOnlyOnChangedTransitions)
}

func testOutboxOnlyOnChangedTransitions(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t)
	f.register(t, rcv.srv.URL, EventTypes...) // every type, progress included
	ctx := t.Context()
	apply := func(ev *kilnv1.JobEvent) bool {
		t.Helper()
		changed, err := f.store.Apply(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return changed
	}
	steps := []struct {
		ev      *kilnv1.JobEvent
		changed bool
		events  int // webhook_events rows after the step
	}{
		{jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0), true, 1},
		{jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0), false, 1}, // repeat
		{jobEvent(kilnv1.JobState_JOB_STATE_TRANSCODING, 0.2), true, 2},
		{jobEvent(kilnv1.JobState_JOB_STATE_TRANSCODING, 0.1), false, 2}, // lower progress
		{jobEvent(kilnv1.JobState_JOB_STATE_PROBING, 0), false, 2},       // stale
		{jobEvent(kilnv1.JobState_JOB_STATE_TRANSCODING, 0.6), true, 3},
		{jobEvent(kilnv1.JobState_JOB_STATE_READY, 1), true, 4},
		{jobEvent(kilnv1.JobState_JOB_STATE_FAILED, 0), false, 4}, // after terminal
		{jobEvent(kilnv1.JobState_JOB_STATE_READY, 1), false, 4},
	}
	for i, st := range steps {
		if got := apply(st.ev); got != st.changed {
			t.Fatalf("step %d: changed = %v, want %v", i, got, st.changed)
		}
		if n := f.count(t, "webhook_events"); n != st.events {
			t.Fatalf("step %d (%v): %d events, want %d", i, st.ev.State, n, st.events)
		}
		if n := f.count(t, "webhook_deliveries"); n != st.events {
			t.Fatalf("step %d: %d deliveries, want %d", i, n, st.events)
		}
	}
	f.dispatch(t)
	var types []string
	for _, p := range rcv.payloads() {
		types = append(types, p.Type)
	}
	if got := strings.Join(types, ","); got != "job.created,job.progress,job.progress,job.ready" {
		t.Fatalf("delivered %s", got)
	}
	ready := rcv.payloads()[3]
	if !strings.HasPrefix(ready.ID, "evt_") || ready.Data.JobID != testJob || ready.Data.AssetID != testAsset || ready.Data.State != "ready" ||
		ready.Data.Playback == nil || ready.Data.Playback.HLS != "https://kiln.example/v1/play/"+testAsset+"/master.m3u8" ||
		ready.Data.Playback.MP4 == "" || ready.Data.Playback.Poster == "" || ready.Data.Progress != nil || ready.CreatedAt.IsZero() {
		t.Fatalf("job.ready payload %+v", ready)
	}
	if p := rcv.payloads()[2].Data.Progress; p == nil || *p != 0.6 {
		t.Fatalf("progress %v", p)
	}
}

func TestOutboxRollsBackWithTheEvent(t *testing.T) { eachBackend(t, testOutboxRollsBackWithTheEvent) }

func testOutboxRollsBackWithTheEvent(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	f.register(t, "https://hooks.example/x")
	boom := errors.New("boom")
	var sawRows int
	f.store.OnApply(func(ctx context.Context, tx *sql.Tx, ev *kilnv1.JobEvent, changed bool) error {
		// Our hook ran first in the same transaction: its rows are visible
		// here, and go away with the rollback.
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM webhook_deliveries`).Scan(&sawRows); err != nil {
			return err
		}
		return boom
	})
	if _, err := f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0)); !errors.Is(err, boom) {
		t.Fatalf("Apply = %v, want boom", err)
	}
	if sawRows != 1 {
		t.Fatalf("inside the transaction: %d deliveries, want 1", sawRows)
	}
	for _, table := range []string{"webhook_events", "webhook_deliveries", "jobs"} {
		if n := f.count(t, table); n != 0 {
			t.Errorf("%s has %d rows after the rollback", table, n)
		}
	}
}

func TestEventTypeFilterAndProgressOptIn(t *testing.T) {
	eachBackend(t, testEventTypeFilterAndProgressOptIn)
}

func testEventTypeFilterAndProgressOptIn(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	all := newReceiver(t)
	readyOnly := newReceiver(t)
	def := f.register(t, all.srv.URL) // default: no job.progress
	f.register(t, readyOnly.srv.URL, EventJobReady)
	if strings.Join(def.EventTypes, ",") != strings.Join(DefaultEventTypes, ",") || def.Secret == "" {
		t.Fatalf("default endpoint %+v", def)
	}
	for _, st := range []kilnv1.JobState{kilnv1.JobState_JOB_STATE_QUEUED, kilnv1.JobState_JOB_STATE_TRANSCODING, kilnv1.JobState_JOB_STATE_READY} {
		if _, err := f.store.Apply(t.Context(), jobEvent(st, 0.5)); err != nil {
			t.Fatal(err)
		}
	}
	f.dispatch(t)
	if n := len(all.payloads()); n != 2 {
		t.Errorf("default endpoint got %d events, want created+ready", n)
	}
	if p := readyOnly.payloads(); len(p) != 1 || p[0].Type != EventJobReady {
		t.Errorf("ready-only endpoint got %+v", p)
	}
	if n := f.count(t, "webhook_events"); n != 2 { // progress matched nobody: not recorded
		t.Errorf("%d events recorded, want 2", n)
	}
}

func TestRetriesThenSuccessAndDeliveryLog(t *testing.T) {
	eachBackend(t, testRetriesThenSuccessAndDeliveryLog)
}

func testRetriesThenSuccessAndDeliveryLog(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t, 500, 429, 204)
	ep := f.register(t, rcv.srv.URL, EventJobFailed)
	rcv.secret = ep.Secret
	f.queued(t)
	if _, err := f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_FAILED, 0)); err != nil {
		t.Fatal(err)
	}
	f.dispatch(t)
	if n := len(rcv.payloads()); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
	f.dispatch(t) // not due yet (1 s)
	if n := len(rcv.payloads()); n != 1 {
		t.Fatalf("retried before the delay: %d attempts", n)
	}
	var next string
	f.db.QueryRowContext(t.Context(), `SELECT next_attempt_at FROM webhook_deliveries`).Scan(&next)
	if nt, _ := parseTime(next); nt.Sub(f.clock) != time.Second { // rnd 0.5: no jitter
		t.Fatalf("next attempt in %v, want 1s", nt.Sub(f.clock))
	}
	f.clock = f.clock.Add(time.Second)
	f.dispatch(t) // 429 with Retry-After: 7
	f.db.QueryRowContext(t.Context(), `SELECT next_attempt_at FROM webhook_deliveries`).Scan(&next)
	if nt, _ := parseTime(next); nt.Sub(f.clock) != 7*time.Second {
		t.Fatalf("after 429: next attempt in %v, want Retry-After 7s", nt.Sub(f.clock))
	}
	f.clock = f.clock.Add(7 * time.Second)
	f.dispatch(t)
	p := rcv.payloads()
	if len(p) != 3 || p[0].ID != p[2].ID || rcv.ids[0] != p[0].ID || rcv.ids[2] != p[0].ID {
		t.Fatalf("attempts %+v ids %v", p, rcv.ids)
	}
	if p[0].Data.Error == nil || p[0].Data.Error.Code != "invalid_media" || p[0].Data.State != "failed" {
		t.Fatalf("job.failed data %+v", p[0].Data)
	}
	var log struct{ Deliveries []attemptJSON }
	if code := f.call(t, http.MethodGet, "/v1/webhooks/"+ep.ID+"/deliveries", "", &log); code != 200 {
		t.Fatalf("deliveries: %d", code)
	}
	var statuses []int
	for _, a := range log.Deliveries {
		statuses = append([]int{a.StatusCode}, statuses...) // newest first
		if a.EventID != p[0].ID || a.EventType != EventJobFailed || a.At.IsZero() {
			t.Errorf("log entry %+v", a)
		}
	}
	if len(statuses) != 3 || statuses[0] != 500 || statuses[1] != 429 || statuses[2] != 204 || log.Deliveries[2].Attempt != 1 {
		t.Fatalf("log statuses %v (%+v)", statuses, log.Deliveries)
	}
	var status string
	f.db.QueryRowContext(t.Context(), `SELECT status FROM webhook_deliveries`).Scan(&status)
	if status != "succeeded" || len(f.q.tasks) != 0 {
		t.Fatalf("delivery %s, %d tasks left in the queue", status, len(f.q.tasks))
	}
}

func TestGiveUpAfterSchedule(t *testing.T) { eachBackend(t, testGiveUpAfterSchedule) }

func testGiveUpAfterSchedule(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t, 500, 500, 500, 500)
	f.register(t, rcv.srv.URL)
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0))
	for range 5 {
		f.dispatch(t)
		f.clock = f.clock.Add(2 * time.Minute)
	}
	var status, lastErr string
	f.db.QueryRowContext(t.Context(), `SELECT status, last_error FROM webhook_deliveries`).Scan(&status, &lastErr)
	if n := len(rcv.payloads()); n != 3 || status != "failed" || !strings.Contains(lastErr, "gave up after 3 attempts") {
		t.Fatalf("%d attempts, %s %q", n, status, lastErr)
	}
	m := f.svc.metrics
	if n := testutil.ToFloat64(m.attempts.WithLabelValues("http_5xx")); n != 3 {
		t.Errorf("kiln_webhook_attempts_total{result=\"http_5xx\"} = %v, want 3", n)
	}
	if n := testutil.ToFloat64(m.giveUps.WithLabelValues(GiveUpExhausted)); n != 1 {
		t.Errorf("kiln_webhook_giveups_total{reason=\"exhausted\"} = %v, want 1", n)
	}
	if n := testutil.CollectAndCount(m.latency); n != 6 { // the pre-made series, one per result
		t.Errorf("%d latency series", n)
	}
}

func TestGoneDisablesEndpoint(t *testing.T) { eachBackend(t, testGoneDisablesEndpoint) }

func testGoneDisablesEndpoint(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t, 410)
	ep := f.register(t, rcv.srv.URL)
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0))
	f.dispatch(t)
	var got endpointJSON
	f.call(t, http.MethodGet, "/v1/webhooks/"+ep.ID, "", &got)
	if !got.Disabled || got.DisabledAt == nil || !strings.Contains(got.DisabledReason, "410") {
		t.Fatalf("endpoint after 410: %+v", got)
	}
	if n := testutil.ToFloat64(f.svc.metrics.giveUps.WithLabelValues(GiveUpGone)); n != 1 {
		t.Errorf("kiln_webhook_giveups_total{reason=\"gone\"} = %v, want 1", n)
	}
	var status string
	f.db.QueryRowContext(t.Context(), `SELECT status FROM webhook_deliveries`).Scan(&status)
	if status != "failed" {
		t.Fatalf("delivery %s", status)
	}
	// A disabled endpoint gets nothing more and is never retried.
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_READY, 1))
	f.clock = f.clock.Add(time.Hour)
	f.dispatch(t)
	if n := len(rcv.payloads()); n != 1 {
		t.Fatalf("disabled endpoint got %d requests", n)
	}

	// Enabled again, it receives a replay (the receiver now answers 204).
	var enabled endpointJSON
	if code := f.call(t, http.MethodPost, "/v1/webhooks/"+ep.ID+"/enable", "", &enabled); code != http.StatusOK || enabled.Disabled || enabled.DisabledReason != "" {
		t.Fatalf("enable: %d %+v", code, enabled)
	}
	if code := f.call(t, http.MethodPost, "/v1/webhook-events/"+rcv.payloads()[0].ID+"/replay", "", nil); code != http.StatusAccepted {
		t.Fatalf("replay: %d", code)
	}
	f.dispatch(t)
	if n := len(rcv.payloads()); n != 2 {
		t.Fatalf("re-enabled endpoint got %d requests, want 2", n)
	}
	var after endpointJSON
	f.call(t, http.MethodGet, "/v1/webhooks/"+ep.ID, "", &after)
	if after.Disabled {
		t.Fatalf("endpoint disabled again after a 204: %+v", after)
	}
}

func TestRotationSignsWithBothSecretsFor24h(t *testing.T) {
	eachBackend(t, testRotationSignsWithBothSecretsFor24h)
}

func testRotationSignsWithBothSecretsFor24h(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t)
	ep := f.register(t, rcv.srv.URL)
	var rot endpointJSON
	if code := f.call(t, http.MethodPost, "/v1/webhooks/"+ep.ID+"/rotate-secret", "", &rot); code != 200 {
		t.Fatalf("rotate: %d", code)
	}
	if rot.Secret == "" || rot.Secret == ep.Secret || rot.PreviousExpiry == nil || rot.PreviousExpiry.Sub(f.clock) != RotationGrace {
		t.Fatalf("rotated %+v", rot)
	}
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0))
	f.dispatch(t)
	sig := rcv.hdrs[0].Get(HeaderSignature)
	if strings.Count(sig, "v1,") != 2 {
		t.Fatalf("signature during grace %q", sig)
	}
	raw := rawBody(t, f, rcv.ids[0])
	ts := unix(t, rcv.hdrs[0])
	if want := Sign(mustKey(t, rot.Secret), rcv.ids[0], ts, raw) + " " + Sign(mustKey(t, ep.Secret), rcv.ids[0], ts, raw); sig != want {
		t.Fatalf("signature %q, want new then old: %q", sig, want)
	}
	for _, s := range []string{ep.Secret, rot.Secret} {
		wh, _ := standardwebhooks.NewWebhook(s)
		if err := wh.Verify(raw, rcv.hdrs[0]); err != nil {
			t.Errorf("verify with %s…: %v", s[:12], err)
		}
	}
	// After the grace period only the new secret signs.
	f.clock = f.clock.Add(RotationGrace + time.Second)
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_READY, 1))
	f.dispatch(t)
	if sig := rcv.hdrs[1].Get(HeaderSignature); strings.Count(sig, "v1,") != 1 ||
		sig != Sign(mustKey(t, rot.Secret), rcv.ids[1], unix(t, rcv.hdrs[1]), rawBody(t, f, rcv.ids[1])) {
		t.Fatalf("signature after grace %q", sig)
	}
}

func mustKey(t *testing.T, s string) []byte {
	k, err := ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func unix(t *testing.T, h http.Header) time.Time {
	ts, err := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(ts, 0)
}

func rawBody(t *testing.T, f *fixture, eventID string) []byte {
	var b string
	if err := f.db.QueryRowContext(t.Context(), `SELECT body FROM webhook_events WHERE id = ?`, eventID).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return []byte(b)
}

func TestReplay(t *testing.T) { eachBackend(t, testReplay) }

func testReplay(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t)
	ep := f.register(t, rcv.srv.URL)
	rcv.secret = ep.Secret
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0))
	f.dispatch(t)
	id := rcv.ids[0]
	var out struct {
		EventID    string   `json:"event_id"`
		Deliveries []string `json:"deliveries"`
	}
	if code := f.call(t, http.MethodPost, "/v1/webhook-events/"+id+"/replay", "", &out); code != http.StatusAccepted || out.EventID != id || len(out.Deliveries) != 1 {
		t.Fatalf("replay: %d %+v", code, out)
	}
	f.dispatch(t)
	if len(rcv.ids) != 2 || rcv.ids[1] != id {
		t.Fatalf("after replay the receiver saw %v", rcv.ids)
	}
	var e apiErr
	if code := f.call(t, http.MethodPost, "/v1/webhook-events/evt_aaaaaaaaaaaaaaaaaaaaaaaaaa/replay", "", &e); code != 404 || e.Error.Code != "not_found" {
		t.Fatalf("unknown event: %d %+v", code, e)
	}
	if code := f.call(t, http.MethodPost, "/v1/webhook-events/nope/replay", "", &e); code != 400 || e.Error.Code != "invalid_id" {
		t.Fatalf("bad id: %d %+v", code, e)
	}
}

type apiErr struct {
	Error struct{ Code, Message string }
}

func TestPerUploadWebhook(t *testing.T) { eachBackend(t, testPerUploadWebhook) }

func testPerUploadWebhook(t *testing.T, open backend) {
	secret := NewSecret()
	f := newFixture(t, open, secret)
	rcv := newReceiver(t)
	// The upload's own secret (what ingest returned), not the default one:
	// the receiver verifies with it and would refuse anything else.
	upload, err := UploadSecret(secret, testJob)
	if err != nil {
		t.Fatal(err)
	}
	rcv.secret = upload
	other := newReceiver(t)
	f.register(t, other.srv.URL)
	ev := jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0)
	ev.WebhookUrl = rcv.srv.URL + "/per-upload"
	f.store.Apply(t.Context(), ev)
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_READY, 1))
	// Another job's events do not reach this job's webhook.
	otherJob, otherAsset := jobid.FromObject("kiln-sources", "other.mp4", "e")
	f.store.Apply(t.Context(), &kilnv1.JobEvent{JobId: otherJob, AssetId: otherAsset, State: kilnv1.JobState_JOB_STATE_QUEUED})
	f.dispatch(t)
	var types []string
	for _, p := range rcv.payloads() {
		if p.Data.JobID != testJob {
			t.Errorf("per-upload webhook got job %s", p.Data.JobID)
		}
		types = append(types, p.Type)
	}
	if strings.Join(types, ",") != "job.created,job.ready" {
		t.Fatalf("per-upload webhook got %v", types)
	}
	if n := len(other.payloads()); n != 3 {
		t.Fatalf("registered endpoint got %d events, want 3", n)
	}
	var list struct{ Webhooks []endpointJSON }
	f.call(t, http.MethodGet, "/v1/webhooks", "", &list)
	if len(list.Webhooks) != 1 {
		t.Fatalf("list shows %d endpoints, want only the registered one", len(list.Webhooks))
	}
	f.call(t, http.MethodGet, "/v1/webhooks?job_id="+testJob, "", &list)
	if len(list.Webhooks) != 1 || list.Webhooks[0].JobID != testJob || list.Webhooks[0].URL != ev.WebhookUrl {
		t.Fatalf("job's webhooks %+v", list.Webhooks)
	}
	var e apiErr
	if code := f.call(t, http.MethodPost, "/v1/webhooks/"+list.Webhooks[0].ID+"/rotate-secret", "", &e); code != http.StatusConflict {
		t.Fatalf("rotating a per-upload webhook: %d", code)
	}
}

// TestPerUploadWebhookLateQueued: a QUEUED that arrives after the job's
// PROBING (ingest enqueues the probe before it announces the job) still
// registers the per-upload webhook, which gets the job's later events.
func TestPerUploadWebhookLateQueued(t *testing.T) { eachBackend(t, testPerUploadWebhookLateQueued) }

func testPerUploadWebhookLateQueued(t *testing.T, open backend) {
	secret := NewSecret()
	f := newFixture(t, open, secret)
	rcv := newReceiver(t)
	rcv.secret, _ = UploadSecret(secret, testJob)
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_PROBING, 0))
	ev := jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0)
	ev.WebhookUrl = rcv.srv.URL + "/per-upload"
	f.store.Apply(t.Context(), ev)
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_READY, 1))
	f.dispatch(t)
	var types []string
	for _, p := range rcv.payloads() {
		types = append(types, p.Type)
	}
	// The endpoint came with the late QUEUED: the job's next change brings
	// it the job.created it had not had, then its own event.
	if strings.Join(types, ",") != "job.created,job.ready" {
		t.Fatalf("per-upload webhook after a late QUEUED got %v, want job.created,job.ready", types)
	}
}

func TestPerUploadWebhookWithoutDefaultSecret(t *testing.T) {
	eachBackend(t, testPerUploadWebhookWithoutDefaultSecret)
}

func testPerUploadWebhookWithoutDefaultSecret(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t)
	ev := jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0)
	ev.WebhookUrl = rcv.srv.URL
	f.store.Apply(t.Context(), ev)
	f.dispatch(t)
	var status, lastErr string
	f.db.QueryRowContext(t.Context(), `SELECT status, last_error FROM webhook_deliveries`).Scan(&status, &lastErr)
	if len(rcv.payloads()) != 0 || status != "failed" || !strings.Contains(lastErr, "KILN_WEBHOOK_SECRET") {
		t.Fatalf("sent %d, delivery %s %q", len(rcv.payloads()), status, lastErr)
	}
}

func TestAssetDeleted(t *testing.T) { eachBackend(t, testAssetDeleted) }

func testAssetDeleted(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t)
	f.register(t, rcv.srv.URL, EventAssetDeleted)
	f.queued(t)
	if err := f.svc.AssetDeleted(t.Context(), nil, testJob, testAsset); err != nil {
		t.Fatal(err)
	}
	f.dispatch(t)
	if p := rcv.payloads(); len(p) != 1 || p[0].Type != EventAssetDeleted || p[0].Data.AssetID != testAsset || p[0].Data.State != "deleted" {
		t.Fatalf("got %+v", p)
	}
}

func TestAPIValidationAndCRUD(t *testing.T) { eachBackend(t, testAPIValidationAndCRUD) }

func testAPIValidationAndCRUD(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	for _, tt := range []struct {
		body, code string
		status     int
	}{
		{`{"url":"ftp://x.example/"}`, CodeInvalidURL, 400},
		{`{"url":"https://user:pw@x.example/"}`, CodeInvalidURL, 400},
		{`{"url":"/relative"}`, CodeInvalidURL, 400},
		{`{"url":"https://x.example/#frag"}`, CodeInvalidURL, 400},
		{`{"url":"https://x.example/","event_types":["job.exploded"]}`, CodeInvalidEventType, 400},
		{`{"url":"https://x.example/","event_types":[]}`, CodeInvalidEventType, 400},
		{`{"url":"https://x.example/","secret":"hunter2"}`, CodeInvalidSecret, 400},
		{`{"url":"https://x.example/","colour":"red"}`, "bad_request", 400},
		{``, "bad_request", 400},
	} {
		var e apiErr
		if code := f.call(t, http.MethodPost, "/v1/webhooks", tt.body, &e); code != tt.status || e.Error.Code != tt.code {
			t.Errorf("%s: %d %+v, want %d %s", tt.body, code, e, tt.status, tt.code)
		}
	}
	secret := NewSecret()
	var ep endpointJSON
	body := `{"url":"https://x.example/hook","secret":"` + secret + `","event_types":["job.ready","job.progress","job.ready"]}`
	if code := f.call(t, http.MethodPost, "/v1/webhooks", body, &ep); code != 201 || ep.Secret != secret ||
		strings.Join(ep.EventTypes, ",") != "job.ready,job.progress" || !jobid.Valid(ep.ID, endpointPrefix) {
		t.Fatalf("create: %d %+v", code, ep)
	}
	var got endpointJSON
	if code := f.call(t, http.MethodGet, "/v1/webhooks/"+ep.ID, "", &got); code != 200 || got.Secret != "" || got.URL != ep.URL {
		t.Fatalf("get: %d %+v (the secret must not be shown again)", code, got)
	}
	var list struct{ Webhooks []endpointJSON }
	if f.call(t, http.MethodGet, "/v1/webhooks", "", &list); len(list.Webhooks) != 1 {
		t.Fatalf("list %+v", list)
	}
	if code := f.call(t, http.MethodDelete, "/v1/webhooks/"+ep.ID, "", nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	var e apiErr
	if code := f.call(t, http.MethodGet, "/v1/webhooks/"+ep.ID, "", &e); code != 404 || e.Error.Code != "not_found" {
		t.Fatalf("after delete: %d %+v", code, e)
	}
	if code := f.call(t, http.MethodGet, "/v1/webhooks/whe_x", "", &e); code != 400 || e.Error.Code != "invalid_id" {
		t.Fatalf("bad id: %d %+v", code, e)
	}
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/webhooks", bytes.NewReader(nil))
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("no key: %d", rec.Code)
	}
}

func TestEnqueueIsIdempotentPerAttempt(t *testing.T) {
	eachBackend(t, testEnqueueIsIdempotentPerAttempt)
}

func testEnqueueIsIdempotentPerAttempt(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t)
	f.register(t, rcv.srv.URL)
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0))
	// The enqueue succeeded but the row was never marked (crash): the next
	// pass enqueues the same attempt again, which asynq refuses as a
	// duplicate task id, and the receiver sees one request.
	if err := f.svc.enqueueDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.db.ExecContext(t.Context(), `UPDATE webhook_deliveries SET status = 'pending', task_id = ''`)
	f.dispatch(t)
	if n := len(rcv.payloads()); n != 1 {
		t.Fatalf("receiver got %d requests", n)
	}
	var status string
	f.db.QueryRowContext(t.Context(), `SELECT status FROM webhook_deliveries`).Scan(&status)
	if status != "succeeded" {
		t.Fatalf("delivery %s", status)
	}
}

// TestUploadSecret: an upload's secret is a valid Standard Webhooks secret
// derived from the default secret and the job id only: the same for the same
// job, another for another job or another default secret, never the default.
func TestUploadSecret(t *testing.T) {
	def, other := NewSecret(), NewSecret()
	a, err := UploadSecret(def, "job_a")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := UploadSecret(def, "job_a"); again != a {
		t.Error("not deterministic")
	}
	b, _ := UploadSecret(def, "job_b")
	c, _ := UploadSecret(other, "job_a")
	if a == b || a == c || a == def {
		t.Errorf("secrets collide: %s %s %s", a, b, c)
	}
	if _, err := ParseSecret(a); err != nil {
		t.Errorf("not a valid secret: %v", err)
	}
	if _, err := UploadSecret("nonsense", "job_a"); err == nil {
		t.Error("a bad default secret gave an upload secret")
	}
}

// TestPerUploadWebhookFromBeforeUploadSecrets: a per-upload endpoint
// recorded before upload secrets existed keeps the default secret its
// receiver was given.
func TestPerUploadWebhookFromBeforeUploadSecrets(t *testing.T) {
	eachBackend(t, testPerUploadWebhookFromBeforeUploadSecrets)
}

func testPerUploadWebhookFromBeforeUploadSecrets(t *testing.T, open backend) {
	secret := NewSecret()
	f := newFixture(t, open, secret)
	rcv := newReceiver(t)
	rcv.secret = secret
	ev := jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0)
	ev.WebhookUrl = rcv.srv.URL + "/per-upload"
	f.store.Apply(t.Context(), ev)
	if _, err := f.db.ExecContext(t.Context(), `UPDATE webhook_endpoints SET derived_secret = 0 WHERE job_id = ?`, testJob); err != nil {
		t.Fatal(err)
	}
	f.store.Apply(t.Context(), jobEvent(kilnv1.JobState_JOB_STATE_READY, 1))
	f.dispatch(t)
	var types []string
	for _, p := range rcv.payloads() {
		types = append(types, p.Type)
	}
	if strings.Join(types, ",") != "job.created,job.ready" {
		t.Fatalf("legacy per-upload webhook got %v", types)
	}
}

// TestCreatedWhenQueuedComesLate: a job whose QUEUED is applied after its
// PROBING (ingest enqueues the probe first; a catalog replica that died
// holding the QUEUED has it redelivered later) still gets its job.created,
// once, before its other events.
func TestCreatedWhenQueuedComesLate(t *testing.T) { eachBackend(t, testCreatedWhenQueuedComesLate) }

func testCreatedWhenQueuedComesLate(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t)
	ep := f.register(t, rcv.srv.URL, EventTypes...)
	rcv.secret = ep.Secret
	for _, st := range []kilnv1.JobState{kilnv1.JobState_JOB_STATE_PROBING, kilnv1.JobState_JOB_STATE_QUEUED,
		kilnv1.JobState_JOB_STATE_TRANSCODING, kilnv1.JobState_JOB_STATE_READY} {
		if _, err := f.store.Apply(t.Context(), jobEvent(st, 0)); err != nil {
			t.Fatal(err)
		}
	}
	f.dispatch(t)
	var types []string
	for _, p := range rcv.payloads() {
		types = append(types, p.Type+":"+p.Data.State)
	}
	if got := strings.Join(types, ","); got != "job.created:queued,job.progress:probing,job.progress:transcoding,job.ready:ready" {
		t.Fatalf("delivered %s", got)
	}
}

// playableEvent is the job's playable event of attempt: the transcode's
// outputs play before READY (no MP4 yet).
func playableEvent(attempt int32) *kilnv1.JobEvent {
	ev := jobEvent(kilnv1.JobState_JOB_STATE_TRANSCODING, 0.1)
	ev.EventId += ".playable"
	ev.Attempt, ev.Playable = attempt, true
	ev.Outputs = &kilnv1.AssetOutputs{Bucket: "kiln-outputs", Prefix: "assets/" + testAsset + "/", DurationSeconds: 10,
		Renditions: []*kilnv1.Rendition{{Name: "360p", Width: 640, Height: 360, Bandwidth: 800000, Codecs: "avc1.64001e", PlaylistKey: "a/index.m3u8"}}}
	return ev
}

// TestPlayableOncePerAttempt: job.playable is recorded with the playable
// event in its transaction, once per attempt (repeats change nothing), is
// a default type (a per-upload webhook gets it) and is signed like the
// others.
func TestPlayableOncePerAttempt(t *testing.T) { eachBackend(t, testPlayableOncePerAttempt) }

func testPlayableOncePerAttempt(t *testing.T, open backend) {
	f := newFixture(t, open, "")
	rcv := newReceiver(t)
	ep := f.register(t, rcv.srv.URL) // the default types
	rcv.secret = ep.Secret
	if !strings.Contains(strings.Join(ep.EventTypes, ","), EventJobPlayable) {
		t.Fatalf("default event types %v lack %s", ep.EventTypes, EventJobPlayable)
	}
	retry := func(ev *kilnv1.JobEvent, attempt int32) *kilnv1.JobEvent { ev.Attempt = attempt; return ev }
	for _, ev := range []*kilnv1.JobEvent{
		jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0),
		playableEvent(1),
		playableEvent(1), // a repeat
		jobEvent(kilnv1.JobState_JOB_STATE_TRANSCODING, 0.5),
		playableEvent(1), // later still
		retry(jobEvent(kilnv1.JobState_JOB_STATE_FAILED, 0), 1),
		retry(jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0), 2),
		playableEvent(2),
		playableEvent(2),
		retry(jobEvent(kilnv1.JobState_JOB_STATE_READY, 1), 2),
		playableEvent(2), // after READY
	} {
		if _, err := f.store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	f.dispatch(t)
	var types []string
	for _, p := range rcv.payloads() {
		types = append(types, p.Type)
	}
	if got := strings.Join(types, ","); got != "job.created,job.playable,job.failed,job.created,job.playable,job.ready" {
		t.Fatalf("delivered %s", got)
	}
	p := rcv.payloads()[1]
	if p.Data.State != "transcoding" || p.Data.JobID != testJob || p.Data.Playback == nil ||
		p.Data.Playback.HLS != "https://kiln.example/v1/play/"+testAsset+"/master.m3u8" || p.Data.Playback.MP4 != "" || p.Data.Progress != nil {
		t.Fatalf("job.playable payload %+v (playback %+v)", p, p.Data.Playback)
	}
}
