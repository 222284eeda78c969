package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// hookReceiver is a webhook endpoint on 127.0.0.1 (the test stack runs kiln
// with KILN_WEBHOOK_ALLOW_LOOPBACK=true and a 200ms,500ms,1s,2s retry
// schedule). It verifies every request with the Standard Webhooks library,
// fails the first two attempts of each message with 500 and accepts the
// rest with 204.
type hookReceiver struct {
	t        *testing.T
	srv      *httptest.Server
	mu       sync.Mutex
	secret   string
	attempts map[string]int             // webhook-id → requests
	accepted map[string]int             // webhook-id → 204 answers
	payloads map[string]webhookEnvelope // webhook-id → verified body
	// also, when set, sees every request (under mu) before it is verified.
	also func(body []byte, h http.Header)
}

type webhookEnvelope struct {
	Type      string    `json:"type"`
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	Data      struct {
		JobID    string `json:"job_id"`
		AssetID  string `json:"asset_id"`
		State    string `json:"state"`
		Playback *struct {
			HLS    string `json:"hls"`
			MP4    string `json:"mp4"`
			Poster string `json:"poster"`
		} `json:"playback"`
	} `json:"data"`
}

func newHookReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{t: t, attempts: map[string]int{}, accepted: map[string]int{}, payloads: map[string]webhookEnvelope{}}
	r.srv = httptest.NewServer(r) // 127.0.0.1
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.also != nil {
		r.also(body, req.Header)
	}
	if r.secret == "" { // not registered yet: come back later
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	wh, werr := standardwebhooks.NewWebhook(r.secret)
	if err != nil || werr != nil {
		r.t.Errorf("receiver: %v %v", err, werr)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := wh.Verify(body, req.Header); err != nil {
		r.t.Errorf("receiver: signature does not verify: %v (headers %v)", err, req.Header)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		r.t.Errorf("receiver: Content-Type %q", ct)
	}
	var env webhookEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		r.t.Errorf("receiver: body %s: %v", body, err)
	}
	id := req.Header.Get("webhook-id")
	if env.ID != id {
		r.t.Errorf("receiver: webhook-id %q but body id %q", id, env.ID)
	}
	r.attempts[id]++
	if r.attempts[id] <= 2 {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if r.accepted[id] == 0 { // dedupe by webhook-id, as receivers must
		r.payloads[id] = env
	}
	r.accepted[id]++
	w.WriteHeader(http.StatusNoContent)
}

// events returns the verified, deduplicated events of one job by type.
func (r *hookReceiver) events(jobID string) map[string][]webhookEnvelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]webhookEnvelope{}
	for _, env := range r.payloads {
		if env.Data.JobID == jobID {
			out[env.Type] = append(out[env.Type], env)
		}
	}
	return out
}

func (r *hookReceiver) counts(id string) (attempts, accepted int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts[id], r.accepted[id]
}

type deliveryLogEntry struct {
	DeliveryID string    `json:"delivery_id"`
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	Attempt    int       `json:"attempt"`
	StatusCode int       `json:"status_code"`
	LatencyMS  int64     `json:"latency_ms"`
	Error      string    `json:"error"`
	At         time.Time `json:"at"`
}

// deliveryLog returns the endpoint's log of one event, oldest first.
func (s stack) deliveryLog(t *testing.T, endpointID, eventID string) []deliveryLogEntry {
	t.Helper()
	var out struct {
		Deliveries []deliveryLogEntry `json:"deliveries"`
	}
	if code := s.do(t, http.MethodGet, "/v1/webhooks/"+endpointID+"/deliveries?event_id="+eventID, nil, "", &out); code != http.StatusOK {
		t.Fatalf("delivery log: status %d", code)
	}
	sort.SliceStable(out.Deliveries, func(i, j int) bool { return out.Deliveries[i].At.Before(out.Deliveries[j].At) })
	return out.Deliveries
}

func statuses(entries []deliveryLogEntry) string {
	var s []string
	for _, e := range entries {
		s = append(s, fmt.Sprint(e.StatusCode))
	}
	return strings.Join(s, ",")
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestWebhooks registers a receiver, uploads a clip and checks that
// job.created and job.ready arrive signed, retried after 500s and exactly
// once each after deduplication; that the delivery log shows the attempts;
// and that a replay re-delivers the same message.
func TestWebhooks(t *testing.T) {
	s := needStack(t)
	rcv := newHookReceiver(t)

	var ep struct {
		ID         string   `json:"id"`
		URL        string   `json:"url"`
		Secret     string   `json:"secret"`
		EventTypes []string `json:"event_types"`
	}
	body := fmt.Sprintf(`{"url":%q,"event_types":["job.created","job.ready"]}`, rcv.srv.URL+"/hooks/kiln")
	if code := s.do(t, http.MethodPost, "/v1/webhooks", strings.NewReader(body), "application/json", &ep); code != http.StatusCreated {
		t.Fatalf("register webhook: status %d", code)
	}
	t.Cleanup(func() { // t.Context() is already canceled here
		req, _ := http.NewRequest(http.MethodDelete, s.APIURL+"/v1/webhooks/"+ep.ID, nil)
		req.Header.Set("Authorization", "Bearer "+s.APIKey)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	if !strings.HasPrefix(ep.Secret, "whsec_") || strings.Join(ep.EventTypes, ",") != "job.created,job.ready" {
		t.Fatalf("registered %+v", ep)
	}
	rcv.mu.Lock()
	rcv.secret = ep.Secret
	rcv.mu.Unlock()

	// Validation errors use the error envelope.
	var bad apiError
	if code := s.do(t, http.MethodPost, "/v1/webhooks", strings.NewReader(`{"url":"https://u:p@example.com/"}`), "application/json", &bad); code != http.StatusBadRequest || bad.Error.Code != "invalid_url" {
		t.Fatalf("URL with credentials: %d %+v", code, bad)
	}

	clip := makeClip(t, "webhooks.mp4", 2, "320x240")
	code, up, _ := s.uploadMultipart(t, clip, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: status %d", code)
	}
	if job := s.waitJob(t, up.JobID, jobTimeout); job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}

	eventually(t, time.Minute, "job.created and job.ready at the receiver", func() bool {
		ev := rcv.events(up.JobID)
		return len(ev["job.created"]) > 0 && len(ev["job.ready"]) > 0
	})
	ev := rcv.events(up.JobID)
	if len(ev) != 2 || len(ev["job.created"]) != 1 || len(ev["job.ready"]) != 1 {
		t.Fatalf("events for the job: %+v", ev)
	}
	created, ready := ev["job.created"][0], ev["job.ready"][0]
	if created.Data.State != "queued" || created.Data.AssetID != up.AssetID {
		t.Errorf("job.created %+v", created)
	}
	if ready.Data.State != "ready" || ready.Data.AssetID != up.AssetID || ready.Data.Playback == nil ||
		ready.Data.Playback.HLS != s.APIURL+"/v1/play/"+up.AssetID+"/master.m3u8" {
		t.Errorf("job.ready %+v", ready)
	}

	// Each was tried three times (500, 500, 204) and accepted once; the
	// delivery log shows it.
	for _, e := range []webhookEnvelope{created, ready} {
		var log []deliveryLogEntry
		eventually(t, 30*time.Second, e.Type+" attempts in the delivery log", func() bool {
			log = s.deliveryLog(t, ep.ID, e.ID)
			return len(log) >= 3
		})
		if got := statuses(log); got != "500,500,204" {
			t.Errorf("%s: delivery log statuses %s, want 500,500,204 (%+v)", e.Type, got, log)
		}
		for i, entry := range log {
			if entry.Attempt != i+1 || entry.EventType != e.Type || entry.DeliveryID != log[0].DeliveryID {
				t.Errorf("%s: log entry %d %+v", e.Type, i, entry)
			}
		}
		if attempts, accepted := rcv.counts(e.ID); attempts != 3 || accepted != 1 {
			t.Errorf("%s: receiver saw %d attempts, accepted %d; want 3 and 1", e.Type, attempts, accepted)
		}
	}

	// Replay job.ready: the same message (same webhook-id) again, now.
	var replay struct {
		EventID    string   `json:"event_id"`
		Deliveries []string `json:"deliveries"`
	}
	if code := s.do(t, http.MethodPost, "/v1/webhook-events/"+ready.ID+"/replay", nil, "", &replay); code != http.StatusAccepted ||
		replay.EventID != ready.ID || len(replay.Deliveries) != 1 {
		t.Fatalf("replay: %d %+v", code, replay)
	}
	eventually(t, 30*time.Second, "the replayed job.ready", func() bool {
		_, accepted := rcv.counts(ready.ID)
		return accepted == 2
	})
	if ev := rcv.events(up.JobID); len(ev["job.ready"]) != 1 {
		t.Errorf("after replay, deduplicated job.ready events: %d", len(ev["job.ready"]))
	}
	var log []deliveryLogEntry
	eventually(t, 30*time.Second, "the replay in the delivery log", func() bool {
		log = s.deliveryLog(t, ep.ID, ready.ID)
		return len(log) >= 4
	})
	if last := log[len(log)-1]; last.StatusCode != 204 || last.Attempt != 1 || last.DeliveryID != replay.Deliveries[0] {
		t.Errorf("replayed attempt %+v", last)
	}
	// job.created was not sent again.
	if attempts, _ := rcv.counts(created.ID); attempts != 3 {
		t.Errorf("job.created attempts %d after replaying job.ready", attempts)
	}
}

// TestPerUploadWebhook: an upload's own webhook_url receives the job's
// events signed with the secret its upload answer carried — that upload's
// own, not the server's default secret, which does not verify them — and
// deleting the asset sends asset.deleted.
func TestPerUploadWebhook(t *testing.T) {
	s := needStack(t)
	defaultSecret := os.Getenv("KILN_TEST_WEBHOOK_SECRET")
	if defaultSecret == "" {
		t.Fatal("KILN_TEST_WEBHOOK_SECRET is required")
	}
	rcv := newHookReceiver(t)
	// Every request is also checked against the default secret: it must
	// not verify.
	var defaultVerified int // under rcv.mu
	rcv.mu.Lock()
	rcv.also = func(body []byte, h http.Header) {
		if wh, err := standardwebhooks.NewWebhook(defaultSecret); err == nil && wh.Verify(body, h) == nil {
			defaultVerified++
		}
	}
	rcv.mu.Unlock()

	clip := makeClip(t, "perupload.mp4", 2, "320x240")
	code, up, _ := s.uploadMultipart(t, clip, "?webhook_url="+url.QueryEscape(rcv.srv.URL+"/per-upload"))
	if code != http.StatusAccepted {
		t.Fatalf("upload: status %d", code)
	}
	if !strings.HasPrefix(up.WebhookSecret, "whsec_") || up.WebhookSecret == defaultSecret {
		t.Fatalf("upload answer's webhook_secret %q: want the upload's own whsec_ secret", up.WebhookSecret)
	}
	rcv.mu.Lock()
	rcv.secret = up.WebhookSecret
	rcv.mu.Unlock()
	// Another upload gets another secret; one without webhook_url none.
	other := makeClip(t, "perupload-other.mp4", 1, "160x120")
	rcv2 := newHookReceiver(t) // verifies with the second upload's secret
	code, up2, _ := s.uploadMultipart(t, other, "?webhook_url="+url.QueryEscape(rcv2.srv.URL+"/other"))
	if code != http.StatusAccepted || up2.WebhookSecret == "" || up2.WebhookSecret == up.WebhookSecret {
		t.Errorf("second upload: %d, webhook_secret %q", code, up2.WebhookSecret)
	}
	rcv2.mu.Lock()
	rcv2.secret = up2.WebhookSecret
	rcv2.mu.Unlock()
	if code, up3, _ := s.uploadMultipart(t, other, ""); code != http.StatusAccepted || up3.WebhookSecret != "" {
		t.Errorf("upload without webhook_url: %d, webhook_secret %q", code, up3.WebhookSecret)
	}

	if job := s.waitJob(t, up.JobID, jobTimeout); job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}
	eventually(t, time.Minute, "job.created and job.ready at the per-upload URL", func() bool {
		ev := rcv.events(up.JobID)
		return len(ev["job.created"]) == 1 && len(ev["job.ready"]) == 1
	})
	if c := s.do(t, http.MethodDelete, "/v1/assets/"+up.AssetID, nil, "", nil); c != http.StatusNoContent {
		t.Fatalf("delete asset: %d", c)
	}
	eventually(t, time.Minute, "asset.deleted at the per-upload URL", func() bool {
		return len(rcv.events(up.JobID)["asset.deleted"]) == 1
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if defaultVerified != 0 {
		t.Errorf("%d deliveries verify with the server's default secret", defaultVerified)
	}
}
