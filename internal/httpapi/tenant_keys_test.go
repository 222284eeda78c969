package httpapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/tenant"
)

// memDirectory is a KeyDirectory in memory that counts its lookups.
type memDirectory struct {
	mu      sync.Mutex
	keys    map[[sha256.Size]byte]KeyRecord
	err     error
	lookups int
}

func (d *memDirectory) LookupKey(_ context.Context, digest [sha256.Size]byte) (KeyRecord, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	if d.err != nil {
		return KeyRecord{}, false, d.err
	}
	rec, ok := d.keys[digest]
	return rec, ok, nil
}

func (d *memDirectory) put(secret string, rec KeyRecord) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keys[sha256.Sum256([]byte(secret))] = rec
}

func (d *memDirectory) remove(secret string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.keys, sha256.Sum256([]byte(secret)))
}

// echoPrincipal answers 204 with the principal in headers.
var echoPrincipal = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	p, _ := PrincipalOf(r.Context())
	w.Header().Set("X-Tenant", Tenant(r.Context()))
	w.Header().Set("X-Key-Name", p.Name)
	w.Header().Set("X-Key-ID", p.KeyID)
	w.WriteHeader(http.StatusNoContent)
})

// TestDirectoryKeys: a key that is not configured is looked up in the
// directory; its principal (tenant, name, id, scope) reaches the handler;
// a revoked one keeps working until its cached answer expires
// (DirectoryTTL, on the injected clock) and then gets 401; a directory
// that cannot be asked answers 503, never 200.
func TestDirectoryKeys(t *testing.T) {
	const (
		tenA      = "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"
		secret    = "kiln_0123456789abcdef0123456789abcdef"
		reader    = "kiln_r123456789abcdef0123456789abcdef"
		configKey = "kiln_conf0123456789abcdef0123"
	)
	dir := &memDirectory{keys: map[[sha256.Size]byte]KeyRecord{}}
	dir.put(secret, KeyRecord{ID: "key_aaaaaaaaaaaaaaaaaaaaaaaaaa", Tenant: tenA, Name: "ci", Scope: ScopeWrite})
	dir.put(reader, KeyRecord{ID: "key_bbbbbbbbbbbbbbbbbbbbbbbbbb", Tenant: tenA, Name: "dash", Scope: ScopeRead})
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	keys, err := NewKeySet(KeysConfig{Keys: []APIKey{{Name: "ops", Secret: configKey}}, Directory: dir, DirectoryTTL: 5 * time.Second,
		RateLimit: 100, Burst: 100, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	h := keys.Require(echoPrincipal)

	rec := serve(h, http.MethodPost, secret)
	if rec.Code != http.StatusNoContent || rec.Header().Get("X-Tenant") != tenA || rec.Header().Get("X-Key-Name") != "ci" ||
		rec.Header().Get("X-Key-ID") != "key_aaaaaaaaaaaaaaaaaaaaaaaaaa" {
		t.Fatalf("directory key: %d, tenant %q, name %q, id %q", rec.Code, rec.Header().Get("X-Tenant"), rec.Header().Get("X-Key-Name"), rec.Header().Get("X-Key-ID"))
	}
	if rec := serve(h, http.MethodPost, reader); rec.Code != http.StatusForbidden {
		t.Fatalf("directory read key POSTs: %d, want 403", rec.Code)
	}
	if rec := serve(h, http.MethodGet, configKey); rec.Code != http.StatusNoContent || rec.Header().Get("X-Tenant") != tenant.Default {
		t.Fatalf("configured key: %d, tenant %q; want 204, the default tenant", rec.Code, rec.Header().Get("X-Tenant"))
	}
	lookups := dir.lookups
	serve(h, http.MethodGet, configKey)
	if dir.lookups != lookups {
		t.Fatal("a configured key was looked up in the directory")
	}

	// Revoked: cached until the TTL is over, then refused.
	dir.remove(secret)
	advance(4 * time.Second)
	if rec := serve(h, http.MethodGet, secret); rec.Code != http.StatusNoContent {
		t.Fatalf("within the cache bound: %d, want 204 (cached)", rec.Code)
	}
	advance(time.Second)
	if rec := serve(h, http.MethodGet, secret); rec.Code != http.StatusUnauthorized || errorCode(t, rec) != CodeUnauthorized {
		t.Fatalf("revoked key after the cache bound: %d, want 401", rec.Code)
	}

	// A key unknown to both; then a directory that fails.
	if rec := serve(h, http.MethodGet, "kiln_nope0123456789abcdef0123456789"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("unknown key: %d, want 401", rec.Code)
	}
	dir.mu.Lock()
	dir.err = errors.New("redis down")
	dir.mu.Unlock()
	advance(time.Minute)
	if rec := serve(h, http.MethodGet, reader); rec.Code != http.StatusServiceUnavailable || errorCode(t, rec) != CodeUnavailable {
		t.Fatalf("directory down: %d, want 503", rec.Code)
	}
	if rec := serve(h, http.MethodGet, configKey); rec.Code != http.StatusNoContent {
		t.Fatalf("configured key with the directory down: %d, want 204", rec.Code)
	}

	// A record kiln does not write (an admin scope, a bad tenant) is refused.
	dir.mu.Lock()
	dir.err = nil
	dir.mu.Unlock()
	dir.put("kiln_forged0123456789abcdef01234567", KeyRecord{ID: "key_x", Tenant: tenA, Name: "x", Scope: ScopeAdmin})
	dir.put("kiln_forged1123456789abcdef01234567", KeyRecord{ID: "key_y", Tenant: "../x", Name: "y", Scope: ScopeWrite})
	for _, k := range []string{"kiln_forged0123456789abcdef01234567", "kiln_forged1123456789abcdef01234567"} {
		if rec := serve(keys.RequireScope(ScopeAdmin, echoPrincipal), http.MethodGet, k); rec.Code != http.StatusUnauthorized {
			t.Errorf("forged directory record: %d, want 401", rec.Code)
		}
	}
}

// TestAdminScope: an admin key reaches admin routes and nothing else; no
// other key reaches admin routes.
func TestAdminScope(t *testing.T) {
	specs, err := ParseKeys("boss=kiln_a0123456789abcdef0123:admin,writer=kiln_w0123456789abcdef0123:write,reader=kiln_r0123456789abcdef0123:read")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewKeySet(KeysConfig{Keys: specs})
	if err != nil {
		t.Fatal(err)
	}
	mux := Handler(keys, []Route{AdminOnly("GET /v1/tenants", echoPrincipal), Authed("GET /v1/jobs", echoPrincipal),
		Authed("POST /v1/dead", OperatorOnly(echoPrincipal))})
	for _, tt := range []struct {
		key, path string
		want      int
	}{
		{"kiln_a0123456789abcdef0123", "/v1/tenants", http.StatusNoContent},
		{"kiln_a0123456789abcdef0123", "/v1/jobs", http.StatusForbidden},
		{"kiln_w0123456789abcdef0123", "/v1/tenants", http.StatusForbidden},
		{"kiln_r0123456789abcdef0123", "/v1/tenants", http.StatusForbidden},
		{"kiln_w0123456789abcdef0123", "/v1/jobs", http.StatusNoContent},
	} {
		req := newRequest(http.MethodGet, tt.path, tt.key)
		rec := record(mux, req)
		if rec.Code != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.key[:7], tt.path, rec.Code, tt.want)
		}
		if rec.Code == http.StatusForbidden && errorCode(t, rec) != CodeForbidden {
			t.Errorf("%s %s: code %s", tt.key[:7], tt.path, errorCode(t, rec))
		}
	}
	// OperatorOnly: a key of the default tenant passes, another tenant's not.
	ctx := WithPrincipal(t.Context(), Principal{Name: "ci", Scope: ScopeWrite, Tenant: "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"})
	rec := record(OperatorOnly(echoPrincipal), newRequest(http.MethodPost, "/v1/dead", "").WithContext(ctx))
	if rec.Code != http.StatusForbidden {
		t.Errorf("OperatorOnly with another tenant's key: %d, want 403", rec.Code)
	}
	if rec := record(mux, newRequest(http.MethodPost, "/v1/dead", "kiln_w0123456789abcdef0123")); rec.Code != http.StatusNoContent {
		t.Errorf("OperatorOnly with a configured key: %d, want 204", rec.Code)
	}
}

func newRequest(method, path, key string) *http.Request {
	req, _ := http.NewRequest(method, path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.RemoteAddr = "192.0.2.1:1234"
	return req
}

func record(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
