package webhooks

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/internal/httpapi"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// registerAs registers an endpoint for every event type as a key of tenant tn.
func (f *fixture) registerAs(t *testing.T, tn, url string) endpointJSON {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"url": url, "event_types": EventTypes})
	ctx := httpapi.WithPrincipal(t.Context(), httpapi.Principal{Name: "ci", Scope: httpapi.ScopeWrite, Tenant: tn})
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/webhooks", strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	httpapi.Handler(nil, f.svc.Routes()).ServeHTTP(rec, req)
	var ep endpointJSON
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &ep) != nil {
		t.Fatalf("register as %s: %d %s", tn, rec.Code, rec.Body)
	}
	return ep
}

// TestEventsReachTheirTenantOnly: a job's events go to its own tenant's
// endpoints; those of a job whose QUEUED (which names the tenant) comes
// late are held, then delivered to that tenant's endpoints, oldest first,
// and never to another tenant's (here the default one's).
func TestEventsReachTheirTenantOnly(t *testing.T) { eachBackend(t, testEventsReachTheirTenantOnly) }

func testEventsReachTheirTenantOnly(t *testing.T, open backend) {
	const tenA = "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"
	f := newFixture(t, open, "")
	mine, other := newReceiver(t), newReceiver(t)
	mine.secret = f.registerAs(t, tenA, mine.srv.URL).Secret
	other.secret = f.register(t, other.srv.URL, EventTypes...).Secret // the default tenant's
	queued := jobEvent(kilnv1.JobState_JOB_STATE_QUEUED, 0)
	queued.TenantId = tenA
	for _, ev := range []*kilnv1.JobEvent{jobEvent(kilnv1.JobState_JOB_STATE_PROBING, 0), queued,
		jobEvent(kilnv1.JobState_JOB_STATE_TRANSCODING, 0), jobEvent(kilnv1.JobState_JOB_STATE_READY, 0)} {
		if _, err := f.store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		if ev == queued {
			continue
		}
		if ev.GetState() == kilnv1.JobState_JOB_STATE_PROBING {
			f.dispatch(t) // held: nobody's yet
			if n := len(mine.payloads()) + len(other.payloads()); n != 0 {
				t.Fatalf("%d deliveries before the job's tenant is known", n)
			}
		}
	}
	f.dispatch(t)
	var types []string
	for _, p := range mine.payloads() {
		types = append(types, p.Type+":"+p.Data.State)
	}
	if got := strings.Join(types, ","); got != "job.created:queued,job.progress:probing,job.progress:transcoding,job.ready:ready" {
		t.Fatalf("tenant A's endpoint got %s", got)
	}
	if p := other.payloads(); len(p) != 0 {
		t.Fatalf("the default tenant's endpoint got %d events of tenant A's job", len(p))
	}
}
