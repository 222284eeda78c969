package app

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// startTLSRedis starts a redis-server that accepts TLS only, with a
// password, and returns its address.
func startTLSRedis(t *testing.T, files testenv.TLSFiles, password string) string {
	t.Helper()
	testenv.RequireBinaries(t, "redis-server")
	addr := testenv.FreePort(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	conf := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(conf, []byte("requirepass "+password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProc(t, "redis-tls", dir, nil, "redis-server", conf, "--bind", "127.0.0.1", "--port", "0", "--tls-port", port,
		"--tls-cert-file", files.ServerCert, "--tls-key-file", files.ServerKey, "--tls-ca-cert-file", files.CA,
		"--tls-auth-clients", "no", "--dir", dir, "--save", "", "--daemonize", "no")
	p.SetReady(func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err := p.StartReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestRedisTLS: with KILN_REDIS_TLS and KILN_REDIS_CA every Redis client of
// a process (asynq's client, inspector and server, the cancel marks) talks
// TLS to a Redis that accepts nothing else: a worker becomes ready; without
// the CA the certificate is refused.
func TestRedisTLS(t *testing.T) {
	s3 := testenv.S3(t)
	files := testenv.NewTLSFiles(t)
	const password = "redis-tls-test-password"
	addr := startTLSRedis(t, files, password)

	noCA, err := redisTLSConfig(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: addr, Password: password, TLSConfig: noCA})
	if _, err := insp.Queues(); err == nil {
		t.Error("TLS without the CA: the server's certificate was accepted")
	}
	_ = insp.Close()
	if _, err := redisTLSConfig(addr, files.ServerKey); err == nil {
		t.Error("a CA file without a certificate accepted")
	}

	dir := t.TempDir()
	cfg := Defaults()
	cfg.Roles, cfg.EmbedNATS = []Role{RoleWorker, RoleCatalog}, true
	cfg.NATSListen, cfg.NATSStoreDir = "127.0.0.1:-1", filepath.Join(dir, "nats")
	cfg.HTTPAddr = testenv.FreeAddr(t)
	cfg.PublicURL = "http://" + cfg.HTTPAddr
	cfg.APIKeys = []httpapi.APIKey{{Secret: "kiln_tls_test_key", Scope: httpapi.ScopeWrite}}
	cfg.RedisAddr, cfg.RedisPassword, cfg.RedisTLS, cfg.RedisCAFile = addr, password, true, files.CA
	cfg.S3, cfg.SourcesBucket, cfg.OutputsBucket = s3.Config, s3.Sources, s3.Outputs
	cfg.Database, cfg.WorkDir = filepath.Join(dir, "kiln.db"), filepath.Join(dir, "work")
	cfg.Concurrency = 1
	cfg.Logger = zaptest.NewLogger(t)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	waitReady(t, cfg.PublicURL, done) // readiness checks Redis
	resp, err := http.Get(cfg.PublicURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/metrics = %d", resp.StatusCode)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
