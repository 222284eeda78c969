package catalog

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/tenant"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// keyDir is a key directory in memory (a tenant's keys, as the tenant API
// would put them on Redis).
type keyDir map[[sha256.Size]byte]httpapi.KeyRecord

func (d keyDir) LookupKey(_ context.Context, digest [sha256.Size]byte) (httpapi.KeyRecord, bool, error) {
	rec, ok := d[digest]
	return rec, ok, nil
}

// sseEvent is one event of a stream: its name and data.
type sseEvent struct{ name, data string }

// streamEvents sends the events of an event stream to the returned channel
// until it ends.
func streamEvents(resp *http.Response) <-chan sseEvent {
	ch := make(chan sseEvent, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		name := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				ch <- sseEvent{name, v}
			}
		}
	}()
	return ch
}

// TestTenantEvents: GET /v1/events streams, after "ready", every change of
// the key's tenant's jobs (a "job" event per change of state or progress,
// "deleted" when its asset is deleted) and nothing of another tenant's.
func TestTenantEvents(t *testing.T) {
	f := newAPIFixture(t)
	const otherKey = "kiln_tenant_b_key_0123456789"
	tenantB := tenant.New()
	dir := keyDir{sha256.Sum256([]byte(otherKey)): {ID: "key_b", Tenant: tenantB, Name: "b", Scope: httpapi.ScopeWrite}}
	keys, err := httpapi.NewKeySet(httpapi.KeysConfig{Keys: []httpapi.APIKey{{Name: "a", Secret: testKey}}, Directory: dir})
	if err != nil {
		t.Fatal(err)
	}
	svc := newStreamService(t, f, keys, Config{Heartbeat: time.Hour, Remover: f, OutputsBucket: "outputs", SourcesBucket: "sources"})
	f.svc, f.h = svc, svc.Handler() // HandleEvent and DELETE notify this service's streams
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // an event that never comes fails
	defer cancel()
	open := func(key, query string) (*http.Response, <-chan sseEvent) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/events"+query, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			return resp, nil
		}
		return resp, streamEvents(resp)
	}
	next := func(who string, ch <-chan sseEvent) sseEvent {
		t.Helper()
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the stream ended", who)
			}
			return ev
		case <-ctx.Done():
			t.Fatalf("%s: no event", who)
		}
		return sseEvent{}
	}
	job := func(ev sseEvent) jobJSON {
		t.Helper()
		var j jobJSON
		if ev.name != "job" || json.Unmarshal([]byte(ev.data), &j) != nil {
			t.Fatalf("want a job event, got %s %s", ev.name, ev.data)
		}
		return j
	}
	if resp, _ := open(testKey, "?x=1"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a query: %d, want 400", resp.StatusCode)
	}
	_, a := open(testKey, "")
	_, b := open(otherKey, "")
	for who, ch := range map[string]<-chan sseEvent{"a": a, "b": b} {
		if ev := next(who, ch); ev.name != "ready" {
			t.Fatalf("%s: first event %s, want ready", who, ev.name)
		}
	}

	idA, assetA := testJob("tenant-events-a")
	f.apply(t, event(idA, queued, 0))
	if j := job(next("a", a)); j.ID != idA || j.State != StateQueued {
		t.Fatalf("a: %+v", j)
	}
	// Changes come coalesced: a slow reader gets the job's latest state.
	for _, ev := range []*kilnv1.JobEvent{event(idA, probing, 0), event(idA, transcoding, 0.5)} {
		f.apply(t, ev)
		if j := job(next("a", a)); j.ID != idA || j.State != State(strings.ToLower(strings.TrimPrefix(ev.State.String(), "JOB_STATE_"))) {
			t.Fatalf("a: %s %s after %s", j.ID, j.State, ev.State)
		}
	}
	// B's job reaches B's stream only.
	idB, _ := testJob("tenant-events-b")
	evB := event(idB, queued, 0)
	evB.TenantId = tenantB
	f.apply(t, evB)
	if j := job(next("b", b)); j.ID != idB {
		t.Fatalf("b: %+v", j)
	}
	f.apply(t, event(idA, failed, 0))
	if j := job(next("a", a)); j.ID != idA || j.State != StateFailed || j.Error == nil {
		t.Fatalf("a: %+v", j)
	}
	if rec := f.do(t, http.MethodDelete, "/v1/assets/"+assetA, ""); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	if ev := next("a", a); ev.name != "deleted" || !strings.Contains(ev.data, `"asset_id":"`+assetA+`"`) {
		t.Fatalf("a after delete: %s %s", ev.name, ev.data)
	}
	// B saw none of A's: its next event is its own job's.
	f.apply(t, &kilnv1.JobEvent{EventId: idB + "/p", JobId: idB, AssetId: evB.AssetId, State: probing, Time: evB.Time, Media: evB.Media})
	if j := job(next("b", b)); j.ID != idB || j.State != StateProbing {
		t.Fatalf("b: %+v", j)
	}
	select {
	case ev := <-b:
		t.Errorf("b got another event: %s %s", ev.name, ev.data)
	default:
	}
}
