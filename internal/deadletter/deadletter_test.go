package deadletter_test

// Tests against a real in-process nats-server (bus.StartEmbedded on a free
// loopback port): messages a consumer dead-letters are listed, shown and
// replayed through the HTTP API, and the replay reaches the consumer again.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/catalog/openapitest"
	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/deadletter"
	"github.com/kilnvideo/kiln/internal/httpapi"
)

func setup(t *testing.T) (*bus.Bus, jetstream.JetStream) {
	t.Helper()
	const user, password = "admin", "deadletter-test-password-0123"
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Logger: zap.NewNop(),
		Users: []bus.User{{Name: user, Password: password}}})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := bus.Connect(ctx, bus.Config{URL: e.ClientURL(), Name: t.Name(), User: user, Password: password, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(b.Close)
	nc, err := nats.Connect(e.ClientURL(), nats.UserInfo(user, password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return b, js
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consumer runs an "ingest" consumer that dead-letters data starting with
// "bad" until fixed is called, and counts deliveries.
type consumer struct {
	mu    sync.Mutex
	fixed bool
	seen  map[string]int
}

func (c *consumer) handle(_ context.Context, _ string, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[string(data)]++
	if !c.fixed && strings.HasPrefix(string(data), "bad") {
		return fmt.Errorf("decode: %w", bus.ErrPermanent)
	}
	return nil
}

func (c *consumer) n(data string) int { c.mu.Lock(); defer c.mu.Unlock(); return c.seen[data] }

func do(t *testing.T, h http.Handler, method, target string) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), method, target, nil))
	var body map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	return rec, body
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func TestAPI(t *testing.T) {
	b, js := setup(t)
	c := &consumer{seen: map[string]int{}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(ctx, bus.ConsumerConfig{Durable: "ingest", Subjects: []string{bus.SubjectS3Events}, MinBackoff: 20 * time.Millisecond}, c.handle)
	}()
	t.Cleanup(func() { cancel(); <-done })

	h := httpapi.Handler(nil, deadletter.New(deadletter.Config{Store: b}).Routes())
	for i := range 3 {
		if _, err := js.Publish(t.Context(), bus.SubjectS3Events, fmt.Appendf(nil, "bad-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	list := func(query string) ([]deadletter.DeadLetter, *string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/dead-letters"+query, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("list%s: %d %s", query, rec.Code, rec.Body)
		}
		var page deadletter.List
		if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
			t.Fatal(err)
		}
		return page.DeadLetters, page.NextCursor
	}
	waitFor(t, "3 dead letters", func() bool { dls, _ := list("?limit=100"); return len(dls) == 3 })

	// Pages, oldest first; the cursor continues; the last page has none.
	dls, next := list("?limit=2")
	if len(dls) != 2 || next == nil || dls[0].Seq != 1 || dls[1].Seq != 2 {
		t.Fatalf("first page: %+v next %v", dls, next)
	}
	if d := dls[0]; d.Consumer != "ingest" || d.Subject != bus.SubjectS3Events || d.Reason != "decode: permanent" ||
		d.Size != len("bad-0") || d.Data != "" || d.Deliveries != 1 || d.StreamSeq == 0 || time.Since(d.FailedAt) > time.Minute {
		t.Errorf("dead letter: %+v", d)
	}
	dls, next = list("?limit=2&cursor=" + *next)
	if len(dls) != 1 || next != nil || dls[0].Seq != 3 {
		t.Fatalf("second page: %+v next %v", dls, next)
	}
	if dls, _ := list("?consumer=catalog"); len(dls) != 0 {
		t.Errorf("catalog's: %+v", dls)
	}
	// One, with its data.
	rec, body := do(t, h, http.MethodGet, "/v1/dead-letters/2")
	if rec.Code != http.StatusOK || body["data"] != base64.StdEncoding.EncodeToString([]byte("bad-1")) {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}

	// Errors.
	for _, tt := range []struct {
		method, target string
		status         int
		code           string
	}{
		{http.MethodGet, "/v1/dead-letters/99", http.StatusNotFound, httpapi.CodeNotFound},
		{http.MethodPost, "/v1/dead-letters/99/replay", http.StatusNotFound, httpapi.CodeNotFound},
		{http.MethodGet, "/v1/dead-letters/abc", http.StatusBadRequest, httpapi.CodeInvalidID},
		{http.MethodGet, "/v1/dead-letters/0", http.StatusBadRequest, httpapi.CodeInvalidID},
		{http.MethodPost, "/v1/dead-letters/-1/replay", http.StatusBadRequest, httpapi.CodeInvalidID},
		{http.MethodGet, "/v1/dead-letters?limit=0", http.StatusBadRequest, httpapi.CodeBadRequest},
		{http.MethodGet, "/v1/dead-letters?limit=101", http.StatusBadRequest, httpapi.CodeBadRequest},
		{http.MethodGet, "/v1/dead-letters?cursor=x", http.StatusBadRequest, httpapi.CodeBadRequest},
		{http.MethodGet, "/v1/dead-letters?consumer=a.b", http.StatusBadRequest, httpapi.CodeBadRequest},
	} {
		if rec, body := do(t, h, tt.method, tt.target); rec.Code != tt.status || errCode(body) != tt.code {
			t.Errorf("%s %s: %d %s, want %d %s", tt.method, tt.target, rec.Code, rec.Body, tt.status, tt.code)
		}
	}

	// Replay: back to the consumer (fixed now), and the dead letter is gone.
	c.mu.Lock()
	c.fixed = true
	c.mu.Unlock()
	rec, body = do(t, h, http.MethodPost, "/v1/dead-letters/2/replay")
	if rec.Code != http.StatusAccepted || body["replayed"] != true || body["subject"] != bus.SubjectS3Events {
		t.Fatalf("replay: %d %s", rec.Code, rec.Body)
	}
	waitFor(t, "the replayed message at the consumer", func() bool { return c.n("bad-1") == 2 })
	if rec, body := do(t, h, http.MethodPost, "/v1/dead-letters/2/replay"); rec.Code != http.StatusNotFound || errCode(body) != httpapi.CodeNotFound {
		t.Errorf("second replay: %d %s", rec.Code, rec.Body)
	}
	if dls, _ := list(""); len(dls) != 2 || dls[0].Seq != 1 || dls[1].Seq != 3 {
		t.Errorf("after replay: %+v", dls)
	}
}

// failing is a Store whose bus is down.
type failing struct{}

var errDown = errors.New("nats: no responders")

func (failing) DeadLetters(context.Context, bus.DeadLetterQuery) ([]bus.DeadLetter, bool, error) {
	return nil, false, errDown
}
func (failing) DeadLetter(context.Context, uint64) (bus.DeadLetter, error) {
	return bus.DeadLetter{}, errDown
}
func (failing) ReplayDeadLetter(context.Context, uint64) (bus.DeadLetter, error) {
	return bus.DeadLetter{}, errDown
}

func TestBusDown(t *testing.T) {
	h := httpapi.Handler(nil, deadletter.New(deadletter.Config{Store: failing{}}).Routes())
	for _, r := range []struct{ method, target string }{
		{http.MethodGet, "/v1/dead-letters"}, {http.MethodGet, "/v1/dead-letters/1"}, {http.MethodPost, "/v1/dead-letters/1/replay"},
	} {
		rec, body := do(t, h, r.method, r.target)
		if rec.Code != http.StatusServiceUnavailable || errCode(body) != httpapi.CodeUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s %s: %d %s", r.method, r.target, rec.Code, rec.Body)
		}
	}
}

// TestRoutesInOpenAPI: every dead-letter route is described in the
// catalog's OpenAPI document (served at /v1/openapi.json).
func TestRoutesInOpenAPI(t *testing.T) {
	routes := deadletter.New(deadletter.Config{}).Routes()
	if len(routes) != 3 {
		t.Fatalf("%d dead-letter routes, want 3", len(routes))
	}
	openapitest.Documented(t, routes)
}
