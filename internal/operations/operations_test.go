package operations_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/catalog/openapitest"
	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/metrics"
	"github.com/kilnvideo/kiln/internal/operations"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/tenant"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// queues is asynq's queue statistics as the Inspector reads them from
// Redis (internal/e2e's TestConsole reads the stack's real ones).
type queues map[string]*asynq.QueueInfo

func (q queues) Queues() ([]string, error) {
	var names []string
	for n := range q {
		names = append(names, n)
	}
	return names, nil
}

func (q queues) GetQueueInfo(name string) (*asynq.QueueInfo, error) { return q[name], nil }

// servers is asynq's server heartbeats, as the Inspector lists them.
type servers []*asynq.ServerInfo

func (s servers) Servers() ([]*asynq.ServerInfo, error) { return s, nil }

// tenantDir is a key directory in memory, by secret.
type tenantDir map[string]httpapi.KeyRecord

func (d tenantDir) LookupKey(_ context.Context, digest [sha256.Size]byte) (httpapi.KeyRecord, bool, error) {
	for secret, rec := range d {
		if sha256.Sum256([]byte(secret)) == digest {
			return rec, true, nil
		}
	}
	return httpapi.KeyRecord{}, false, nil
}

// TestSummary: GET /v1/operations shows what /metrics shows of the stage
// queues (their depths, the age of the oldest pending task, through the
// real queue scraper and registry) and of the catalog's jobs (a real
// SQLite store), the workers, and the latest failures by code across
// tenants; only the operator's keys (the default tenant's) get it.
func TestSummary(t *testing.T) {
	q := queues{tasks.QueueTranscode: {Pending: 3, Active: 1, Retry: 2, Latency: 1500 * time.Millisecond}, tasks.QueueProbe: {}}
	workers := servers{
		{ID: "w1", Host: "worker-b", PID: 7, Concurrency: 8, Queues: map[string]int{tasks.QueuePackage: 1}, Status: "active",
			ActiveWorkers: []*asynq.WorkerInfo{{TaskID: "t1"}}},
		{ID: "w0", Host: "worker-a", PID: 9, Concurrency: 2, Status: "active"},
	}
	store, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	other := tenant.New()
	for i, code := range []string{"invalid_media", "timeout", "invalid_media"} {
		id, _ := eventtest.Job(fmt.Sprint("ops-", i))
		queued := eventtest.Event(id, kilnv1.JobState_JOB_STATE_QUEUED, 0)
		if i == 1 {
			queued.TenantId = other // every tenant's failures count
		}
		failed := eventtest.Event(id, kilnv1.JobState_JOB_STATE_FAILED, 0)
		failed.Error.Code = code
		for _, ev := range []*kilnv1.JobEvent{queued, failed} {
			if _, err := store.Apply(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	reg := metrics.NewRegistry()
	if err := reg.AddScraper(metrics.QueueScraper(q, []string{tasks.QueueProbe, tasks.QueueTranscode, tasks.QueuePackage})); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddScraper(metrics.JobScraper(func(ctx context.Context) (map[string]int, error) {
		counts, err := store.CountJobs(ctx)
		out := map[string]int{}
		for st, n := range counts {
			out[string(st)] = n
		}
		return out, err
	}, []string{"queued", "failed"})); err != nil {
		t.Fatal(err)
	}

	const opsKey, tenantKey = "kiln_ops_key_0123456789abcdef", "kiln_tenant_key_0123456789abc"
	keys, err := httpapi.NewKeySet(httpapi.KeysConfig{Keys: []httpapi.APIKey{{Name: "ops", Secret: opsKey}},
		Directory: tenantDir{tenantKey: {ID: "key_t", Tenant: other, Name: "t", Scope: httpapi.ScopeWrite}}})
	if err != nil {
		t.Fatal(err)
	}
	svc := operations.New(operations.Config{Metrics: reg, Servers: workers, Jobs: store})
	srv := httptest.NewServer(httpapi.Handler(keys, svc.Routes()))
	defer srv.Close()
	get := func(key string) (int, operations.Summary) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/operations", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s operations.Summary
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, s
	}
	if code, _ := get(tenantKey); code != http.StatusForbidden {
		t.Errorf("a tenant's key: %d, want 403", code)
	}
	code, s := get(opsKey)
	if code != http.StatusOK {
		t.Fatalf("the operator's key: %d", code)
	}
	if !s.QueuesUp || len(s.Queues) != 3 || s.Queues[0].Name != tasks.QueueProbe {
		t.Fatalf("queues: %v %+v", s.QueuesUp, s.Queues)
	}
	if q := s.Queues[1]; q != (operations.Queue{Name: tasks.QueueTranscode, Pending: 3, Active: 1, Retry: 2, OldestPendingSeconds: 1.5}) {
		t.Errorf("transcode queue: %+v", q)
	}
	if q := s.Queues[2]; q != (operations.Queue{Name: tasks.QueuePackage}) { // never had a task: zeros
		t.Errorf("package queue: %+v", q)
	}
	if !s.WorkersUp || len(s.Workers) != 2 || s.Workers[0].Host != "worker-a" || s.Workers[1].Active != 1 || s.Workers[1].Concurrency != 8 ||
		s.Workers[1].Queues[tasks.QueuePackage] != 1 {
		t.Errorf("workers: %v %+v", s.WorkersUp, s.Workers)
	}
	if !s.JobsUp || s.Jobs["failed"] != 3 || s.Jobs["queued"] != 0 {
		t.Errorf("jobs: %v %+v", s.JobsUp, s.Jobs)
	}
	if !s.FailuresUp || len(s.Failures) != 2 || s.Failures[0].Code != "invalid_media" || s.Failures[0].Count != 2 ||
		s.Failures[1].Code != "timeout" || s.Failures[1].Count != 1 || s.Failures[0].LastMessage == "" || s.Failures[0].LastJobID == "" {
		t.Errorf("failures: %+v", s.Failures)
	}
	if s.DeadLettersUp || len(s.DeadLetters) != 0 { // no dead-letter scraper in this registry
		t.Errorf("dead letters: %v %+v", s.DeadLettersUp, s.DeadLetters)
	}
}

// TestRouteInOpenAPI: the route is in the catalog's OpenAPI document.
func TestRouteInOpenAPI(t *testing.T) {
	routes := operations.New(operations.Config{}).Routes()
	openapitest.Documented(t, routes)
	for _, r := range routes {
		if !r.Auth {
			t.Errorf("%s needs no key", r.Pattern)
		}
	}
}
