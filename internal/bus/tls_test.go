package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestConnectTLS: against a NATS server that requires TLS and a client
// certificate (an external server configured as deploy/nats/nats-server.conf
// suggests), Connect succeeds with the CA and the client certificate, and
// fails without either.
func TestConnectTLS(t *testing.T) {
	files := testenv.NewTLSFiles(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: files.ServerCert, KeyFile: files.ServerKey, CaFile: files.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	perm, _ := bus.Permissions(bus.UserCatalog)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		TLSConfig: tc, TLS: true, TLSVerify: true, TLSTimeout: 2,
		Users: []*server.User{{Username: bus.UserCatalog, Password: testPassword, Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: perm.Publish}, Subscribe: &server.SubjectPermission{Allow: perm.Subscribe}}}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	url := ns.ClientURL()
	base := bus.Config{URL: url, User: bus.UserCatalog, Password: testPassword, InboxPrefix: bus.InboxPrefix(bus.UserCatalog), Logger: zap.NewNop()}
	connect := func(cfg bus.Config, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		b, err := bus.Connect(ctx, cfg)
		if err == nil {
			b.Close()
		}
		return err
	}
	ok := base
	ok.CAFile, ok.CertFile, ok.KeyFile = files.CA, files.ClientCert, files.ClientKey
	if err := connect(ok, 20*time.Second); err != nil {
		t.Fatalf("Connect with the CA and a client certificate: %v", err)
	}
	noCert := base
	noCert.CAFile = files.CA
	noCA := base
	noCA.CertFile, noCA.KeyFile = files.ClientCert, files.ClientKey
	for name, cfg := range map[string]bus.Config{"no client certificate": noCert, "server not verified": noCA, "no TLS": base} {
		if err := connect(cfg, 3*time.Second); err == nil {
			t.Errorf("%s: Connect = nil error", name)
		}
	}
}
