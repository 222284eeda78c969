package tenants_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/catalog/postgres"
	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/catalog/sqlstore"
	"github.com/kilnvideo/kiln/catalog/tenants"
	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/apikeys"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/sqldialect"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// redisDB is this package's database of the test stack's Redis.
const redisDB = 2

type store interface {
	catalog.Store
	DB() *sql.DB
	Dialect() sqldialect.Dialect
	OnApply(sqlstore.ApplyHook)
	OnDelete(sqlstore.DeleteHook)
}

var backends = []struct {
	name string
	open func(t *testing.T) store
}{
	{"sqlite", func(t *testing.T) store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "kiln.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}},
	{"postgres", func(t *testing.T) store {
		s, err := postgres.Open(t.Context(), testenv.Postgres(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}},
}

// noObjects is object storage with nothing in it (no test here plays).
type noObjects struct{}

func (noObjects) PresignGetWith(context.Context, string, string, time.Duration, objstore.PresignOptions) (*url.URL, error) {
	return nil, objstore.ErrNotFound
}
func (noObjects) Get(context.Context, string, string, int64) ([]byte, error) {
	return nil, objstore.ErrNotFound
}
func (noObjects) Open(context.Context, string, string) (io.ReadSeekCloser, objstore.Info, error) {
	return nil, objstore.Info{}, objstore.ErrNotFound
}

const (
	adminKey = "kiln_admin0123456789abcdef0123"
	opsKey   = "kiln_ops0123456789abcdef012345" // KILN_API_KEYS' write key: the default tenant's
)

// stack is the catalog's HTTP API as the catalog role mounts it — jobs and
// assets, webhooks, tenants — behind keys that consult the key directory
// on the real Redis, on a clock the test moves.
type stack struct {
	store  store
	h      http.Handler
	dir    *apikeys.Directory
	ten    *tenants.Service
	quotas *quota.Store
	mu     sync.Mutex
	now    time.Time
}

// sql is the store's database, binding SQLite's marks for either dialect.
func (s *stack) sql() sqldialect.DB {
	return sqldialect.DB{DB: s.store.DB(), Dialect: s.store.Dialect()}
}

func (s *stack) clock() time.Time { s.mu.Lock(); defer s.mu.Unlock(); return s.now }
func (s *stack) advance(d time.Duration) {
	s.mu.Lock()
	s.now = s.now.Add(d)
	s.mu.Unlock()
}

func newStack(t *testing.T, open func(*testing.T) store) *stack {
	t.Helper()
	st := &stack{store: open(t), now: time.Now()}
	st.dir = &apikeys.Directory{Redis: testenv.RedisClient(t, testenv.RedisDB(t, redisDB))}
	specs, err := httpapi.ParseKeys("admin=" + adminKey + ":admin,ops=" + opsKey + ":write")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := httpapi.NewKeySet(httpapi.KeysConfig{Keys: specs, Directory: st.dir, Now: st.clock})
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(catalog.Config{Store: st.store, Objects: noObjects{}, PublicURL: "https://kiln.example", APIKeys: keys,
		SigningKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := webhooks.New(t.Context(), webhooks.Config{DB: st.store.DB(), Dialect: st.store.Dialect(), APIKeys: keys,
		PublicURL: "https://kiln.example", Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	st.store.OnApply(wh.OnApply)
	st.quotas = &quota.Store{Redis: st.dir.Redis, Now: st.clock}
	ten, err := tenants.New(t.Context(), tenants.Config{DB: st.store.DB(), Dialect: st.store.Dialect(), Directory: st.dir,
		Usage: st.store, Quotas: st.quotas})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.Mount(mux, keys, cat.Routes())
	httpapi.Mount(mux, keys, wh.Routes())
	httpapi.Mount(mux, keys, ten.Routes())
	httpapi.Mount(mux, keys, ten.SelfServiceRoutes())
	st.h, st.ten = mux, ten
	return st
}

// call sends a request with key and decodes the answer into v (when not
// nil); it returns the status and the error code of an error answer.
func (s *stack) call(t *testing.T, key, method, path, body string, v any) (int, string) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, req)
	var e httpapi.ErrorBody
	if rec.Code >= 400 {
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message == "" {
			t.Fatalf("%s %s: %d without an error body: %s", method, path, rec.Code, rec.Body)
		}
	} else if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
		}
	}
	return rec.Code, e.Error.Code
}

type tenantOut struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Disabled bool   `json:"disabled"`
}

type keyOut struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	Name     string `json:"name"`
	Scope    string `json:"scope"`
	Secret   string `json:"secret"`
	Revoked  bool   `json:"revoked"`
}

func (s *stack) tenantWithKey(t *testing.T, name string) (tenantOut, keyOut) {
	t.Helper()
	var ten tenantOut
	if code, _ := s.call(t, adminKey, http.MethodPost, "/v1/tenants", `{"name":"`+name+`"}`, &ten); code != http.StatusCreated || ten.ID == "" {
		t.Fatalf("create tenant %s: %d", name, code)
	}
	var k keyOut
	if code, _ := s.call(t, adminKey, http.MethodPost, "/v1/tenants/"+ten.ID+"/keys", `{"name":"ci","scope":"write"}`, &k); code != http.StatusCreated ||
		!strings.HasPrefix(k.Secret, "kiln_") || k.TenantID != ten.ID {
		t.Fatalf("create key of %s: %d %+v", name, code, k)
	}
	return ten, k
}

// job records a ready job of tenant tn (its QUEUED names it), as the
// catalog does from the bus.
func (s *stack) job(t *testing.T, name, tn string) (jobID, assetID string) {
	t.Helper()
	jobID, assetID = eventtest.Job(name)
	q := eventtest.Event(jobID, kilnv1.JobState_JOB_STATE_QUEUED, 0)
	q.TenantId = tn
	for _, ev := range []*kilnv1.JobEvent{q, eventtest.Event(jobID, kilnv1.JobState_JOB_STATE_PROBING, 0),
		eventtest.Event(jobID, kilnv1.JobState_JOB_STATE_READY, 0)} {
		if _, err := s.store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	return jobID, assetID
}

// TestTenantsIsolated: a key of tenant A gets 404 not_found for tenant B's
// job, asset, webhook endpoint and its deliveries and events, and lists
// only A's jobs and endpoints; B's job events reach B's endpoints only;
// the default tenant (KILN_API_KEYS) sees neither; an admin key sees no
// tenant's data.
func TestTenantsIsolated(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := newStack(t, b.open)
			ta, ka := s.tenantWithKey(t, "acme")
			tb, kb := s.tenantWithKey(t, "bolt")
			var epA, epB struct {
				ID string `json:"id"`
			}
			if code, _ := s.call(t, ka.Secret, http.MethodPost, "/v1/webhooks", `{"url":"https://a.example/hook"}`, &epA); code != http.StatusCreated {
				t.Fatalf("A registers a webhook: %d", code)
			}
			if code, _ := s.call(t, kb.Secret, http.MethodPost, "/v1/webhooks", `{"url":"https://b.example/hook"}`, &epB); code != http.StatusCreated {
				t.Fatalf("B registers a webhook: %d", code)
			}
			jobA, assetA := s.job(t, "tenant-a", ta.ID)
			jobB, assetB := s.job(t, "tenant-b", tb.ID)

			// Each sees its own.
			for _, tt := range []struct {
				key, job, asset, ep string
			}{{ka.Secret, jobA, assetA, epA.ID}, {kb.Secret, jobB, assetB, epB.ID}} {
				for _, p := range []string{"/v1/jobs/" + tt.job, "/v1/assets/" + tt.asset, "/v1/webhooks/" + tt.ep, "/v1/webhooks/" + tt.ep + "/deliveries"} {
					if code, _ := s.call(t, tt.key, http.MethodGet, p, "", nil); code != http.StatusOK {
						t.Errorf("own %s: %d, want 200", p, code)
					}
				}
			}
			// A's key and the default tenant's get 404 for B's ids, and
			// cannot act on them.
			var eventB string
			if err := s.sql().QueryRowContext(t.Context(), `SELECT id FROM webhook_events WHERE job_id = ? LIMIT 1`, jobB).Scan(&eventB); err != nil {
				t.Fatalf("B's job has no webhook event: %v", err)
			}
			for _, key := range []string{ka.Secret, opsKey} {
				for _, r := range []struct{ method, path, body string }{
					{http.MethodGet, "/v1/jobs/" + jobB, ""},
					{http.MethodGet, "/v1/jobs/" + jobB + "/events", ""},
					{http.MethodPost, "/v1/jobs/" + jobB + "/cancel", ""},
					{http.MethodPost, "/v1/jobs/" + jobB + "/retry", ""},
					{http.MethodGet, "/v1/assets/" + assetB, ""},
					{http.MethodPost, "/v1/assets/" + assetB + "/playback-token", ""},
					{http.MethodPost, "/v1/assets/" + assetB + "/renditions/720p/retry", ""},
					{http.MethodDelete, "/v1/assets/" + assetB, ""},
					{http.MethodGet, "/v1/webhooks/" + epB.ID, ""},
					{http.MethodGet, "/v1/webhooks/" + epB.ID + "/deliveries", ""},
					{http.MethodPost, "/v1/webhooks/" + epB.ID + "/rotate-secret", ""},
					{http.MethodPost, "/v1/webhooks/" + epB.ID + "/enable", ""},
					{http.MethodDelete, "/v1/webhooks/" + epB.ID, ""},
					{http.MethodPost, "/v1/webhook-events/" + eventB + "/replay", ""},
				} {
					code, ecode := s.call(t, key, r.method, r.path, r.body, nil)
					if code != http.StatusNotFound || ecode != httpapi.CodeNotFound {
						who := "A"
						if key == opsKey {
							who = "default"
						}
						t.Errorf("%s: %s %s: %d %s, want 404 not_found", who, r.method, r.path, code, ecode)
					}
				}
			}
			// B's things are all still there.
			if code, _ := s.call(t, kb.Secret, http.MethodGet, "/v1/webhooks/"+epB.ID, "", nil); code != http.StatusOK {
				t.Fatalf("B's endpoint after A's attempts: %d", code)
			}
			if code, _ := s.call(t, kb.Secret, http.MethodGet, "/v1/assets/"+assetB, "", nil); code != http.StatusOK {
				t.Fatalf("B's asset after A's attempts: %d", code)
			}

			// Lists: only one's own.
			for _, tt := range []struct{ key, job, ep string }{{ka.Secret, jobA, epA.ID}, {kb.Secret, jobB, epB.ID}, {opsKey, "", ""}} {
				var jobs struct {
					Jobs []struct {
						ID string `json:"id"`
					} `json:"jobs"`
				}
				s.call(t, tt.key, http.MethodGet, "/v1/jobs", "", &jobs)
				var eps struct {
					Webhooks []struct {
						ID string `json:"id"`
					} `json:"webhooks"`
				}
				s.call(t, tt.key, http.MethodGet, "/v1/webhooks", "", &eps)
				if tt.job == "" {
					if len(jobs.Jobs) != 0 || len(eps.Webhooks) != 0 {
						t.Errorf("the default tenant lists %d jobs, %d webhooks; want none", len(jobs.Jobs), len(eps.Webhooks))
					}
					continue
				}
				if len(jobs.Jobs) != 1 || jobs.Jobs[0].ID != tt.job || len(eps.Webhooks) != 1 || eps.Webhooks[0].ID != tt.ep {
					t.Errorf("lists %+v and %+v, want only %s and %s", jobs, eps, tt.job, tt.ep)
				}
			}

			// Deliveries went to the job's own tenant's endpoint only.
			for _, tt := range []struct{ ep, job, other string }{{epA.ID, jobA, jobB}, {epB.ID, jobB, jobA}} {
				var own, other int
				err := s.sql().QueryRowContext(t.Context(),
					`SELECT (SELECT COUNT(*) FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id WHERE d.endpoint_id = ? AND e.job_id = ?),
						(SELECT COUNT(*) FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id WHERE d.endpoint_id = ? AND e.job_id = ?)`,
					tt.ep, tt.job, tt.ep, tt.other).Scan(&own, &other)
				if err != nil || own == 0 || other != 0 {
					t.Errorf("endpoint %s: %d deliveries of its tenant's job, %d of the other's (%v); want some and none", tt.ep, own, other, err)
				}
			}

			// An admin key manages tenants and keys, and sees no data.
			if code, ecode := s.call(t, adminKey, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusForbidden || ecode != httpapi.CodeForbidden {
				t.Errorf("admin key on /v1/jobs: %d %s, want 403 forbidden", code, ecode)
			}
			if code, _ := s.call(t, ka.Secret, http.MethodGet, "/v1/tenants", "", nil); code != http.StatusForbidden {
				t.Errorf("tenant key on /v1/tenants: %d, want 403", code)
			}
		})
	}
}

// TestKeyLifecycle: an admin creates a tenant and a key (its secret shown
// once, stored as a digest); the key works at once; listed without its
// secret; revoked, it gets 401 once the directory cache's bound
// (httpapi.DefaultDirectoryTTL) has passed on the keys' clock; a deleted
// tenant's keys all stop, and it gets no new ones; the default tenant
// cannot be deleted; a Redis that lost the directory is repaired by Sync.
func TestKeyLifecycle(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := newStack(t, b.open)
			ten, k := s.tenantWithKey(t, "acme")
			if code, _ := s.call(t, k.Secret, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusOK {
				t.Fatalf("new key: %d, want 200", code)
			}
			var digestCount int
			if err := s.sql().QueryRowContext(t.Context(),
				`SELECT COUNT(*) FROM api_keys WHERE digest = ? OR digest = ?`, k.Secret, strings.TrimPrefix(k.Secret, "kiln_")).Scan(&digestCount); err != nil || digestCount != 0 {
				t.Fatalf("the secret is stored as is (%d, %v)", digestCount, err)
			}
			var list struct {
				Keys []json.RawMessage `json:"keys"`
			}
			if code, _ := s.call(t, adminKey, http.MethodGet, "/v1/tenants/"+ten.ID+"/keys", "", &list); code != http.StatusOK || len(list.Keys) != 1 ||
				strings.Contains(string(list.Keys[0]), k.Secret) || strings.Contains(string(list.Keys[0]), `"secret"`) {
				t.Fatalf("key list: %d %s", code, list.Keys)
			}
			var read keyOut
			if code, _ := s.call(t, adminKey, http.MethodPost, "/v1/tenants/"+ten.ID+"/keys", `{"name":"dash","scope":"read"}`, &read); code != http.StatusCreated {
				t.Fatalf("read key: %d", code)
			}
			if code, _ := s.call(t, read.Secret, http.MethodPost, "/v1/webhooks", `{"url":"https://a.example/"}`, nil); code != http.StatusForbidden {
				t.Fatalf("read key POSTs: %d, want 403", code)
			}
			for _, body := range []string{`{"name":"x","scope":"admin"}`, `{"name":"","scope":"write"}`, `{"name":"a b"}`, `{"name":"x","colour":"red"}`} {
				if code, _ := s.call(t, adminKey, http.MethodPost, "/v1/tenants/"+ten.ID+"/keys", body, nil); code != http.StatusBadRequest {
					t.Errorf("key %s: %d, want 400", body, code)
				}
			}
			if code, ecode := s.call(t, adminKey, http.MethodPost, "/v1/tenants/ten_zzzzzzzzzzzzzzzzzzzzzzzzzz/keys", `{"name":"x"}`, nil); code != http.StatusNotFound || ecode != httpapi.CodeNotFound {
				t.Errorf("key of an unknown tenant: %d %s", code, ecode)
			}

			// Revoke: 204, and 401 within the bound.
			if code, _ := s.call(t, adminKey, http.MethodDelete, "/v1/keys/"+k.ID, "", nil); code != http.StatusNoContent {
				t.Fatalf("revoke: %d", code)
			}
			s.advance(httpapi.DefaultDirectoryTTL)
			if code, ecode := s.call(t, k.Secret, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusUnauthorized || ecode != httpapi.CodeUnauthorized {
				t.Fatalf("revoked key after %s: %d %s, want 401", httpapi.DefaultDirectoryTTL, code, ecode)
			}
			if code, _ := s.call(t, adminKey, http.MethodDelete, "/v1/keys/"+k.ID, "", nil); code != http.StatusNoContent {
				t.Fatalf("revoke again: %d, want 204", code)
			}
			if code, _ := s.call(t, adminKey, http.MethodDelete, "/v1/keys/key_zzzzzzzzzzzzzzzzzzzzzzzzzz", "", nil); code != http.StatusNotFound {
				t.Fatalf("revoke unknown: %d, want 404", code)
			}

			// A directory that lost its data is repaired by Sync.
			if err := s.dir.Redis.Del(t.Context(), apikeys.Key).Err(); err != nil {
				t.Fatal(err)
			}
			s.advance(httpapi.DefaultDirectoryTTL)
			if code, _ := s.call(t, read.Secret, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusUnauthorized {
				t.Fatalf("key missing from the directory: %d, want 401", code)
			}
			ten2, err := tenants.New(t.Context(), tenants.Config{DB: s.store.DB(), Dialect: s.store.Dialect(), Directory: s.dir})
			if err != nil {
				t.Fatal(err)
			}
			if err := ten2.Sync(t.Context()); err != nil {
				t.Fatal(err)
			}
			s.advance(httpapi.DefaultDirectoryTTL)
			if code, _ := s.call(t, read.Secret, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusOK {
				t.Fatalf("key after Sync: %d, want 200", code)
			}
			if code, _ := s.call(t, k.Secret, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusUnauthorized {
				t.Fatalf("revoked key after Sync: %d, want 401", code)
			}

			// Delete the tenant: its keys stop, it gets no new ones.
			if code, _ := s.call(t, adminKey, http.MethodDelete, "/v1/tenants/"+ten.ID, "", nil); code != http.StatusNoContent {
				t.Fatalf("delete tenant: %d", code)
			}
			s.advance(httpapi.DefaultDirectoryTTL)
			if code, _ := s.call(t, read.Secret, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusUnauthorized {
				t.Fatalf("key of a deleted tenant: %d, want 401", code)
			}
			if code, _ := s.call(t, adminKey, http.MethodPost, "/v1/tenants/"+ten.ID+"/keys", `{"name":"again"}`, nil); code != http.StatusConflict {
				t.Fatalf("key of a deleted tenant: %d, want 409", code)
			}
			var got tenantOut
			if code, _ := s.call(t, adminKey, http.MethodGet, "/v1/tenants/"+ten.ID, "", &got); code != http.StatusOK || !got.Disabled {
				t.Fatalf("deleted tenant: %d %+v", code, got)
			}
			if code, _ := s.call(t, adminKey, http.MethodDelete, "/v1/tenants/default", "", nil); code != http.StatusConflict {
				t.Fatalf("delete the default tenant: %d, want 409", code)
			}
			var all struct {
				Tenants []tenantOut `json:"tenants"`
			}
			if code, _ := s.call(t, adminKey, http.MethodGet, "/v1/tenants", "", &all); code != http.StatusOK || len(all.Tenants) != 2 || all.Tenants[0].ID != "default" {
				t.Fatalf("tenants: %d %+v", code, all)
			}
			for _, bad := range []string{`{"name":""}`, `{"name":"../x"}`, `{}`} {
				if code, ecode := s.call(t, adminKey, http.MethodPost, "/v1/tenants", bad, nil); code != http.StatusBadRequest || ecode == "" {
					t.Errorf("tenant %s: %d %s, want 400", bad, code, ecode)
				}
			}
			if code, ecode := s.call(t, adminKey, http.MethodGet, "/v1/tenants/nope", "", nil); code != http.StatusBadRequest || ecode != httpapi.CodeInvalidID {
				t.Errorf("malformed tenant id: %d %s", code, ecode)
			}
		})
	}
}
