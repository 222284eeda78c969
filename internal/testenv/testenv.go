// Package testenv is what kiln's tests need from their environment, in one
// place: the services of the test stack (KILN_TEST_* variables, exported by
// `go tool task test`), the binaries they run (ffmpeg, ffprobe, kiln), and
// the small generated clips they feed them. Only tests import it.
//
// The policy: when something a test needs is missing, the test skips if a
// developer runs `go test` by hand, and fails under `go tool task test`
// (KILN_TEST_REQUIRE_SERVICES=1), so the suite can never be green by
// skipping what it was meant to run.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/objstore"
)

// RequireServicesEnv is set to 1 by `go tool task test` (deploy/local/stack.sh).
const RequireServicesEnv = "KILN_TEST_REQUIRE_SERVICES"

// Required reports whether what the tests need must be there: true under
// `go tool task test`, which sets KILN_TEST_REQUIRE_SERVICES=1.
func Required() bool { return os.Getenv(RequireServicesEnv) == "1" }

// Missing stops tb because something it needs is missing; what names it.
// Under `go tool task test` (Required) this is tb.Fatal; otherwise, for a
// developer running `go test` by hand, tb.Skip.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	what := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatalf("%s; %s=1, so this fails instead of skipping: run the tests with `go tool task test`, which installs and starts what they need", what, RequireServicesEnv)
	}
	tb.Skipf("%s: skipping (run `go tool task test` to run this test)", what)
}

// RequireBinaries checks that every named program is in PATH, and stops tb
// through Missing otherwise.
func RequireBinaries(tb testing.TB, names ...string) {
	tb.Helper()
	var missing []string
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		Missing(tb, "%s not found in PATH (PATH=%s)", strings.Join(missing, ", "), os.Getenv("PATH"))
	}
}

// need returns the values of the named variables, stopping tb through
// Missing when any of them is empty.
func need(tb testing.TB, what string, names ...string) []string {
	tb.Helper()
	values := make([]string, len(names))
	var missing []string
	for i, name := range names {
		if values[i] = os.Getenv(name); values[i] == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		Missing(tb, "no %s: %s not set", what, strings.Join(missing, ", "))
	}
	return values
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Redis returns the address of the test stack's Redis (KILN_TEST_REDIS_ADDR).
func Redis(tb testing.TB) string {
	tb.Helper()
	return need(tb, "Redis", "KILN_TEST_REDIS_ADDR")[0]
}

// RedisPassword is the password of the test stack's Redis
// (KILN_TEST_REDIS_PASSWORD; the stack's Redis requires one).
func RedisPassword() string { return os.Getenv("KILN_TEST_REDIS_PASSWORD") }

// NATS returns the URL of the test stack's NATS (KILN_TEST_NATS_URL; kiln
// embeds it).
func NATS(tb testing.TB) string {
	tb.Helper()
	return need(tb, "NATS", "KILN_TEST_NATS_URL")[0]
}

// NATSPasswordEnv is the variable holding the password of user (one of
// bus.Users but serve) of the test stack's NATS:
// KILN_TEST_NATS_<USER>_PASSWORD.
func NATSPasswordEnv(user string) string {
	return "KILN_TEST_NATS_" + strings.ToUpper(user) + "_PASSWORD"
}

// NATSConn connects to the test stack's NATS as user, with that user's
// permissions (bus.Permissions) and inbox prefix, as a kiln process of
// that role does; it is closed at the end of the test.
func NATSConn(tb testing.TB, user string) *nats.Conn {
	tb.Helper()
	v := need(tb, "NATS", "KILN_TEST_NATS_URL", NATSPasswordEnv(user))
	nc, err := nats.Connect(v[0], nats.UserInfo(user, v[1]), nats.CustomInboxPrefix(bus.InboxPrefix(user)), nats.Timeout(5*time.Second))
	if err != nil {
		tb.Fatalf("connect to NATS %s as %s: %v", v[0], user, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// S3Env is the MinIO of the test stack.
type S3Env struct {
	Config  objstore.Config // endpoint and keys
	Sources string          // kiln's sources bucket (KILN_TEST_SOURCES_BUCKET, default kiln-sources)
	Outputs string          // kiln's outputs bucket (KILN_TEST_OUTPUTS_BUCKET, default kiln-outputs)
}

// S3 returns the test stack's MinIO (KILN_TEST_S3_ENDPOINT, _ACCESS_KEY,
// _SECRET_KEY) and kiln's buckets in it.
func S3(tb testing.TB) S3Env {
	tb.Helper()
	v := need(tb, "S3", "KILN_TEST_S3_ENDPOINT")
	return S3Env{
		Config: objstore.Config{
			Endpoint:  v[0],
			AccessKey: os.Getenv("KILN_TEST_S3_ACCESS_KEY"),
			SecretKey: os.Getenv("KILN_TEST_S3_SECRET_KEY"),
		},
		Sources: envOr("KILN_TEST_SOURCES_BUCKET", "kiln-sources"),
		Outputs: envOr("KILN_TEST_OUTPUTS_BUCKET", "kiln-outputs"),
	}
}

// StackEnv is where the services of the running test stack are.
type StackEnv struct {
	APIURL string // KILN_TEST_API_URL
	APIKey string // KILN_TEST_API_KEY (the default tenant's)
	// AdminKey is KILN_TEST_ADMIN_KEY, the stack's admin key (the tenant
	// and key API); may be empty (AdminKey fails or skips then).
	AdminKey  string
	S3        objstore.Config // KILN_TEST_S3_*
	Sources   string          // KILN_TEST_SOURCES_BUCKET, default kiln-sources
	Outputs   string          // KILN_TEST_OUTPUTS_BUCKET, default kiln-outputs
	RedisAddr string          // KILN_TEST_REDIS_ADDR (may be empty)
	// RedisPassword is KILN_TEST_REDIS_PASSWORD.
	RedisPassword string
	NATSURL       string // KILN_TEST_NATS_URL (may be empty); NATSConn connects to it
}

// Stack returns the running kiln stack: its API URL and key and its S3 are
// required; Redis and NATS are filled in when set (the tests that use them
// check, or call Redis and NATS).
func Stack(tb testing.TB) StackEnv {
	tb.Helper()
	v := need(tb, "kiln stack", "KILN_TEST_API_URL", "KILN_TEST_API_KEY", "KILN_TEST_S3_ENDPOINT")
	s3 := S3(tb)
	return StackEnv{
		APIURL:        v[0],
		APIKey:        v[1],
		AdminKey:      os.Getenv("KILN_TEST_ADMIN_KEY"),
		S3:            s3.Config,
		Sources:       s3.Sources,
		Outputs:       s3.Outputs,
		RedisAddr:     os.Getenv("KILN_TEST_REDIS_ADDR"),
		RedisPassword: RedisPassword(),
		NATSURL:       os.Getenv("KILN_TEST_NATS_URL"),
	}
}

// FreeAddr returns a loopback "host:port" nothing listens on right now, for
// a server the test starts.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
