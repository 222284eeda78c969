package app

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// testRedisDB keeps these processes' queues away from the test stack's.
const testRedisDB = 9

// TestRunRoles runs a process of each role against the real Redis and
// MinIO of the test stack (with its own embedded NATS) and checks that it
// becomes ready, serves exactly its role's routes, and stops cleanly when
// its context ends.
func TestRunRoles(t *testing.T) {
	redisAddr, s3 := testenv.Redis(t), testenv.S3(t)
	const key = "kiln_apptest_key"
	probe := []struct{ method, path string }{
		{"POST", "/v1/uploads"},
		{"GET", "/v1/jobs"},
		{"GET", "/v1/webhooks"},
		{"GET", "/v1/openapi.json"},
		{"GET", "/metrics"},
	}
	tests := []struct {
		name  string
		roles []Role
		want  map[string]int // path -> status
	}{
		{"ingest", []Role{RoleIngest}, map[string]int{"/v1/uploads": 400, "/v1/jobs": 404, "/v1/webhooks": 404, "/v1/openapi.json": 404, "/metrics": 200}},
		{"catalog", []Role{RoleCatalog}, map[string]int{"/v1/uploads": 404, "/v1/jobs": 200, "/v1/webhooks": 200, "/v1/openapi.json": 200, "/metrics": 200}},
		{"worker", []Role{RoleWorker}, map[string]int{"/v1/uploads": 404, "/v1/jobs": 404, "/v1/webhooks": 404, "/metrics": 200}},
		{"serve", []Role{RoleIngest, RoleWorker, RoleCatalog}, map[string]int{"/v1/uploads": 400, "/v1/jobs": 200, "/v1/webhooks": 200, "/v1/openapi.json": 200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Defaults()
			cfg.Roles, cfg.EmbedNATS = tt.roles, true
			cfg.NATSListen, cfg.NATSStoreDir = "127.0.0.1:-1", filepath.Join(dir, "nats")
			cfg.HTTPAddr = testenv.FreeAddr(t)
			cfg.PublicURL = "http://" + cfg.HTTPAddr
			cfg.APIKeys = []httpapi.APIKey{{Secret: key, Scope: httpapi.ScopeWrite}}
			cfg.RedisAddr, cfg.RedisPassword, cfg.RedisDB = redisAddr, testenv.RedisPassword(), testRedisDB
			cfg.S3, cfg.SourcesBucket, cfg.OutputsBucket = s3.Config, s3.Sources, s3.Outputs
			cfg.Database, cfg.WorkDir = filepath.Join(dir, "kiln.db"), filepath.Join(dir, "work")
			cfg.Concurrency = 1
			cfg.Logger = zaptest.NewLogger(t)

			ctx, stop := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg) }()
			base := cfg.PublicURL
			waitReady(t, base, done)
			for _, p := range probe {
				want, ok := tt.want[p.path]
				if !ok {
					continue
				}
				req, _ := http.NewRequestWithContext(t.Context(), p.method, base+p.path, nil)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("%s %s = %d, want %d", p.method, p.path, resp.StatusCode, want)
				}
			}
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run after cancel = %v, want nil", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("Run did not return after its context ended")
			}
		})
	}
}

func waitReady(t *testing.T, base string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("Run returned before it was ready: %v", err)
		default:
		}
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz not ready after 30s (last: %v)", base, errors.Join(err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRunFailsFast: a process that cannot start says why instead of
// running half configured.
func TestRunFailsFast(t *testing.T) {
	cfg := Defaults()
	cfg.Roles = []Role{RoleCatalog}
	cfg.NATSURL = "nats://127.0.0.1:1" // nothing listens there
	cfg.Logger = zaptest.NewLogger(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := Run(ctx, cfg); err == nil {
		t.Fatal("Run without a reachable NATS = nil, want an error")
	}
}
