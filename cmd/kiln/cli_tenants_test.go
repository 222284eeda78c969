package main

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/catalog/tenants"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/quota"
)

// memDirectory is the key directory in memory (apikeys.Directory is on
// Redis; catalog/tenants tests it there).
type memDirectory struct {
	mu   sync.Mutex
	keys map[string]httpapi.KeyRecord
}

func (d *memDirectory) Put(_ context.Context, digest string, rec httpapi.KeyRecord) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keys[digest] = rec
	return nil
}

func (d *memDirectory) Remove(_ context.Context, digests ...string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range digests {
		delete(d.keys, k)
	}
	return nil
}

// memQuotas is the quota store in memory with active concurrent jobs of
// every tenant (quota.Store is on Redis; internal/quota tests it there).
type memQuotas struct{ active int64 }

func (memQuotas) PutLimits(context.Context, string, quota.Limits) error { return nil }
func (memQuotas) Reservations(context.Context) (map[string][]string, error) {
	return nil, nil
}
func (q *memQuotas) Active(context.Context, string) (int64, error) { return q.active, nil }
func (memQuotas) Publish(context.Context, quota.Snapshot) error    { return nil }

// TestTenantsAndKeysCLI: kiln tenants, kiln keys and kiln usage against the tenant API
// itself (on SQLite), with testKey as the admin key.
func TestTenantsAndKeysCLI(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	dir := &memDirectory{keys: map[string]httpapi.KeyRecord{}}
	svc, err := tenants.New(t.Context(), tenants.Config{DB: st.DB(), Dialect: st.Dialect(), Directory: dir,
		Usage: st, Quotas: &memQuotas{active: 2}})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := httpapi.NewKeySet(httpapi.KeysConfig{Keys: []httpapi.APIKey{{Name: "admin", Secret: testKey, Scope: httpapi.ScopeAdmin}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.Handler(keys, svc.Routes()))
	defer srv.Close()

	run := func(args ...string) (string, string, error) {
		e, stdout, stderr := testEnv(t, srv)
		err := e.run(t.Context(), args[0], args[1:])
		return stdout.String(), stderr.String(), err
	}
	out, _, err := run("tenants", "create", "acme")
	id := strings.TrimSpace(out)
	if err != nil || !strings.HasPrefix(id, "ten_") {
		t.Fatalf("tenants create: %q, %v", out, err)
	}
	secret, info, err := run("keys", "create", id, "--name", "ci", "--scope", "read")
	secret = strings.TrimSpace(secret)
	if err != nil || !strings.HasPrefix(secret, "kiln_") || strings.Contains(secret, "\n") || !strings.Contains(info, "read scope") {
		t.Fatalf("keys create: %q %q %v", secret, info, err)
	}
	keyID := strings.Fields(strings.TrimPrefix(info, "created key "))[0]
	if len(dir.keys) != 1 {
		t.Fatalf("directory holds %d keys, want 1", len(dir.keys))
	}
	out, _, err = run("keys", "list", id)
	if err != nil || !strings.Contains(out, keyID) || !strings.Contains(out, "active") || strings.Contains(out, secret) {
		t.Fatalf("keys list:\n%s %v", out, err)
	}
	if out, _, err = run("keys", "revoke", keyID); err != nil || !strings.Contains(out, "revoked key "+keyID) {
		t.Fatalf("keys revoke: %q %v", out, err)
	}
	if out, _, err = run("keys", "list", id); err != nil || !strings.Contains(out, "revoked") || len(dir.keys) != 0 {
		t.Fatalf("after revoke:\n%s %v (directory %d)", out, err, len(dir.keys))
	}
	out, _, err = run("tenants", "quotas", id, "--concurrent-jobs", "3", "--stored-bytes", "1000")
	if err != nil || !strings.Contains(out, "quotas of "+id+": concurrent jobs 3, stored bytes 1000, encoded minutes per month no limit") {
		t.Fatalf("tenants quotas: %q %v", out, err)
	}
	if _, stderr, err := run("tenants", "quotas", id, "--encoded-minutes", "-5"); exitCode(err) != exitAPI || !strings.Contains(stderr+err.Error(), "invalid_quota") {
		t.Fatalf("tenants quotas with a negative limit: %v (exit %d) %s", err, exitCode(err), stderr)
	}
	out, _, err = run("usage", "--tenant", id)
	for _, want := range []string{"tenant " + id + ", ", "concurrent jobs             2     3\n", "stored bytes                0     1000\n",
		"encoded minutes this month  0.00  no limit\n"} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("usage --tenant: %v\n%s\nwant %q", err, out, want)
		}
	}
	out, _, err = run("tenants", "list")
	if err != nil || !strings.Contains(out, "default") || !strings.Contains(out, id) || !strings.Contains(out, "acme") {
		t.Fatalf("tenants list:\n%s %v", out, err)
	}
	if _, _, err = run("tenants", "delete", id); err != nil {
		t.Fatal(err)
	}
	if out, _, _ = run("tenants", "list"); !strings.Contains(out, "deleted") {
		t.Fatalf("after delete:\n%s", out)
	}
	// Refusals: the API's (exit 3), and bad usage (exit 2).
	if _, stderr, err := run("tenants", "delete", "default"); exitCode(err) != exitAPI || !strings.Contains(stderr+err.Error(), "conflict") {
		t.Fatalf("delete default: %v (exit %d) %s", err, exitCode(err), stderr)
	}
	for _, args := range [][]string{{"keys", "create", id}, {"keys"}, {"tenants", "rename"}, {"tenants", "create"}} {
		if _, _, err := run(args...); exitCode(err) != exitUsage {
			t.Errorf("%v: exit %d (%v), want %d", args, exitCode(err), err, exitUsage)
		}
	}
}
