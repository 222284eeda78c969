package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kilnvideo/kiln/internal/bus"
)

// Services a test starts itself, as processes it may kill and restart: a
// Redis with AOF on and a password, a NATS server with JetStream and the
// per-role users of deploy/nats/nats-server.conf, a MinIO that notifies
// NATS (as the user notify) like the one of deploy/local/stack.sh, and
// kiln's roles. Each one
// listens on free loopback ports, keeps its data in a folder the test owns
// and logs to a file there; every process is stopped at the end of the test
// and, when the test failed, the tail of its log is printed.

// Environment variables naming service binaries (exported by
// deploy/local/stack.sh).
const (
	// MinIOBinEnv names the MinIO binary (default: <module>/.tools/bin/minio).
	MinIOBinEnv = "MINIO_BIN"
	// NATSServerBinEnv names a nats-server binary (default: built once
	// per test binary from the module's nats-server dependency).
	NATSServerBinEnv = "KILN_TEST_NATS_SERVER_BIN"
)

// FreePort returns a loopback address nothing listens on right now.
func FreePort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Proc is a long-running process started by a test: it can be killed,
// stopped and started again with the same command, environment and log
// file (appended, with a marker line at each start).
type Proc struct {
	Name string
	Log  string // log file path
	bin  string
	args []string
	env  []string
	// ready reports whether a started process serves (nil: started is
	// ready).
	ready func(ctx context.Context) error

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logf *os.File
}

// NewProc describes a process logging to logDir/<name>.log; Start runs it.
// env is added to the test's environment. It is stopped at the end of the
// test (the tail of its log is printed when the test failed).
func NewProc(tb testing.TB, name, logDir string, env []string, bin string, args ...string) *Proc {
	tb.Helper()
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	p := &Proc{Name: name, Log: filepath.Join(logDir, name+".log"), bin: bin, args: args, env: env}
	tb.Cleanup(func() {
		p.Stop(20 * time.Second)
		if tb.Failed() {
			tb.Logf("----- %s: last 40 lines of %s -----\n%s", name, p.Log, p.Tail(40))
		}
	})
	return p
}

// SetReady sets the check WaitReady polls.
func (p *Proc) SetReady(ready func(ctx context.Context) error) { p.ready = ready }

// Start starts the process (an error when it is running).
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s is already running (pid %d)", p.Name, p.cmd.Process.Pid)
		}
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: terminal signals reach the test only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(f, "===== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "===== %s: pid %d exited: %v\n", time.Now().Format(time.RFC3339Nano), cmd.Process.Pid, err)
		f.Close()
		close(done)
	}()
	p.cmd, p.done, p.logf = cmd, done, f
	return nil
}

// Pid is the pid of the running process (0 when it is not running).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || !p.running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process runs.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running()
}

func (p *Proc) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the process (only it: children that must die with
// it have to see to that themselves) and waits until it is reaped.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM and waits up to timeout, then SIGKILL.
func (p *Proc) Stop(timeout time.Duration) { p.signal(syscall.SIGTERM, timeout) }

func (p *Proc) signal(sig syscall.Signal, timeout time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return
	case <-time.After(timeout):
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// WaitReady polls the readiness check until it passes, the process exits
// or timeout passes.
func (p *Proc) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if !p.Running() {
			return fmt.Errorf("%s exited while waiting for it to be ready (log %s):\n%s", p.Name, p.Log, p.Tail(30))
		}
		if p.ready == nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last = p.ready(ctx)
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v (log %s):\n%s", p.Name, timeout, last, p.Log, p.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StartReady starts the process and waits until it is ready.
func (p *Proc) StartReady(timeout time.Duration) error {
	if err := p.Start(); err != nil {
		return err
	}
	return p.WaitReady(timeout)
}

// Tail returns the last n lines of the log.
func (p *Proc) Tail(n int) string {
	f, err := os.Open(p.Log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = lines[len(lines)-n:]
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// HTTPReady is a readiness check: GET url answers 200.
func HTTPReady(url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// RedisProc is a redis-server the test started.
type RedisProc struct {
	*Proc
	Addr string
	// Password is the one it requires (requirepass), like the stack's.
	Password string
}

// StartRedis starts redis-server on a free port with its data (an
// append-only file, fsynced every second like the stack's) in dir, and a
// password it requires (in dir/redis.conf, not on its command line).
func StartRedis(tb testing.TB, dir, logDir string) *RedisProc {
	tb.Helper()
	RequireBinaries(tb, "redis-server")
	addr := FreePort(tb)
	_, port, _ := net.SplitHostPort(addr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	password := rand.Text()
	conf := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(conf, []byte("requirepass "+password+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	p := NewProc(tb, "redis", logDir, nil, "redis-server", conf, "--bind", "127.0.0.1", "--port", port,
		"--dir", dir, "--appendonly", "yes", "--save", "", "--daemonize", "no")
	p.SetReady(func(ctx context.Context) error { return redisPing(ctx, addr, password) })
	if err := p.StartReady(30 * time.Second); err != nil {
		tb.Fatal(err)
	}
	return &RedisProc{Proc: p, Addr: addr, Password: password}
}

// redisPing authenticates with password and pings.
func redisPing(ctx context.Context, addr, password string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	r := bufio.NewReader(c)
	if _, err := fmt.Fprintf(c, "AUTH %s\r\n", password); err != nil {
		return err
	}
	if line, err := r.ReadString('\n'); err != nil || strings.TrimSpace(line) != "+OK" {
		return fmt.Errorf("redis AUTH: %q %v", line, err)
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("redis PING: %q", line)
	}
	return nil
}

// NATSProc is a nats-server with JetStream the test started.
type NATSProc struct {
	*Proc
	Addr string // host:port of clients
	URL  string // nats://Addr
	// Passwords of its users: the users of deploy/nats/nats-server.conf
	// (bus.Users but serve, each with bus.Permissions), and NATSAdmin.
	Passwords map[string]string
}

// NATSAdmin is the user of NATSProc that may do anything (what a test
// inspects or breaks: purging a stream…).
const NATSAdmin = "admin"

// Conn connects as user (its inbox prefix), closed at the end of the test.
func (n *NATSProc) Conn(tb testing.TB, user string) *nats.Conn {
	tb.Helper()
	opts := []nats.Option{nats.UserInfo(user, n.Passwords[user]), nats.Timeout(5 * time.Second)}
	if user != NATSAdmin {
		opts = append(opts, nats.CustomInboxPrefix(bus.InboxPrefix(user)))
	}
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		tb.Fatalf("connect to %s as %s: %v", n.URL, user, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// KilnEnv is the environment of a kiln process of role ("ingest",
// "worker" or "catalog") connecting to it as its role's user.
func (n *NATSProc) KilnEnv(role string) []string {
	return []string{"KILN_NATS_URL=" + n.URL, "KILN_NATS_USER=" + role, "KILN_NATS_PASSWORD=" + n.Passwords[role]}
}

// StartNATS starts nats-server (NATSServerBin) with JetStream, its store in
// dir, on a free port, with the users of deploy/nats/nats-server.conf
// (passwords made now) and NATSAdmin: nobody connects without one.
func StartNATS(tb testing.TB, dir, logDir string) *NATSProc {
	tb.Helper()
	bin := NATSServerBin(tb)
	addr, mon := FreePort(tb), FreePort(tb)
	_, port, _ := net.SplitHostPort(addr)
	_, monPort, _ := net.SplitHostPort(mon)
	n := &NATSProc{Addr: addr, URL: "nats://" + addr, Passwords: map[string]string{NATSAdmin: rand.Text()}}
	type subjects struct {
		Allow []string `json:"allow"`
	}
	type permissions struct {
		Publish   subjects `json:"publish"`
		Subscribe subjects `json:"subscribe"`
	}
	type user struct {
		User        string       `json:"user"`
		Password    string       `json:"password"`
		Permissions *permissions `json:"permissions,omitempty"`
	}
	users := []user{{User: NATSAdmin, Password: n.Passwords[NATSAdmin]}}
	for _, name := range bus.Users {
		if name == bus.UserServe {
			continue
		}
		perm, _ := bus.Permissions(name)
		n.Passwords[name] = rand.Text()
		users = append(users, user{User: name, Password: n.Passwords[name],
			Permissions: &permissions{subjects{perm.Publish}, subjects{perm.Subscribe}}})
	}
	// NATS's parser knows no \u escapes: subjects' '>' stays as is.
	var conf bytes.Buffer
	enc := json.NewEncoder(&conf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"authorization": map[string]any{"users": users}}); err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	confFile := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(confFile, conf.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	p := NewProc(tb, "nats", logDir, nil, bin, "-c", confFile, "-a", "127.0.0.1", "-p", port, "-m", monPort,
		"-js", "-sd", dir, "-n", "kiln-faults")
	p.SetReady(HTTPReady("http://" + mon + "/healthz?js-enabled-only=true"))
	if err := p.StartReady(30 * time.Second); err != nil {
		tb.Fatal(err)
	}
	n.Proc = p
	return n
}

// MinIOProc is a MinIO server the test started.
type MinIOProc struct {
	*Proc
	Endpoint             string // host:port of the S3 API
	AccessKey, SecretKey string
	// NotifyARN is the ARN of its NATS notification target.
	NotifyARN string
}

// StartMinIO starts MinIO (MinIOBin) on a free port with its data in dir
// and, when ns is set, the bucket notification target the local stack
// configures: JetStream subject kiln.s3.events on ns, as its user notify
// (which may publish only there), events queued in dir/../minio-events
// while NATS is away (NotifyARN names it).
func StartMinIO(tb testing.TB, dir, logDir string, ns *NATSProc) *MinIOProc {
	tb.Helper()
	bin := MinIOBin(tb)
	addr, console := FreePort(tb), FreePort(tb)
	m := &MinIOProc{Endpoint: addr, AccessKey: "kilnfaults", SecretKey: "kilnfaults-secret-0123456789"}
	queue := filepath.Join(filepath.Dir(dir), filepath.Base(dir)+"-events")
	for _, d := range []string{dir, queue} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	env := []string{
		"MINIO_ROOT_USER=" + m.AccessKey, "MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off",
	}
	if ns != nil {
		m.NotifyARN = "arn:minio:sqs::KILN:nats"
		env = append(env,
			"MINIO_NOTIFY_NATS_ENABLE_KILN=on",
			"MINIO_NOTIFY_NATS_ADDRESS_KILN="+ns.Addr,
			"MINIO_NOTIFY_NATS_USERNAME_KILN="+bus.UserNotify,
			"MINIO_NOTIFY_NATS_PASSWORD_KILN="+ns.Passwords[bus.UserNotify],
			"MINIO_NOTIFY_NATS_SUBJECT_KILN=kiln.s3.events",
			"MINIO_NOTIFY_NATS_JETSTREAM_KILN=on",
			"MINIO_NOTIFY_NATS_QUEUE_DIR_KILN="+queue,
		)
	}
	m.Proc = NewProc(tb, "minio", logDir, env, bin, "server", dir, "--address", addr, "--console-address", console, "--quiet")
	m.SetReady(HTTPReady("http://" + addr + "/minio/health/ready"))
	if err := m.StartReady(60 * time.Second); err != nil {
		tb.Fatal(err)
	}
	return m
}

var natsBin struct {
	mu  sync.Mutex
	bin string
	err error
}

// NATSServerBin returns a nats-server binary: $KILN_TEST_NATS_SERVER_BIN,
// or the module's nats-server dependency built once per test binary (from
// the module cache; its folder is removed by Main).
func NATSServerBin(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv(NATSServerBinEnv); bin != "" {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			tb.Fatalf("%s=%s is not an executable file (%v)", NATSServerBinEnv, bin, err)
		}
		return bin
	}
	natsBin.mu.Lock()
	defer natsBin.mu.Unlock()
	if natsBin.bin != "" || natsBin.err != nil {
		if natsBin.err != nil {
			tb.Fatal(natsBin.err)
		}
		return natsBin.bin
	}
	RequireBinaries(tb, "go")
	dir := tempBinDir(tb)
	bin := filepath.Join(dir, "nats-server")
	cmd := exec.CommandContext(tb.Context(), "go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	if out, err := cmd.CombinedOutput(); err != nil {
		natsBin.err = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		tb.Fatal(natsBin.err)
	}
	natsBin.bin = bin
	return bin
}

// MinIOBin returns the MinIO binary: $MINIO_BIN, or .tools/bin/minio of
// the module (installed by `go tool task install`); without one the test
// stops through Missing.
func MinIOBin(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv(MinIOBinEnv); bin != "" {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			tb.Fatalf("%s=%s is not an executable file (%v)", MinIOBinEnv, bin, err)
		}
		return bin
	}
	if root, err := moduleRoot(); err == nil {
		bin := filepath.Join(root, ".tools", "bin", "minio")
		if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o111 != 0 {
			return bin
		}
	}
	Missing(tb, "no MinIO: %s not set and no .tools/bin/minio (go tool task install)", MinIOBinEnv)
	return ""
}

// moduleRoot is the folder of the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// tempBinDir returns the folder of binaries built by this test binary,
// removed by Main: BuildKiln's when it builds kiln (it would replace a
// folder created before it), else one of its own in the same place.
func tempBinDir(tb testing.TB) string {
	tb.Helper()
	if os.Getenv(KilnBinEnv) == "" {
		return filepath.Dir(BuildKiln(tb))
	}
	kiln.mu.Lock()
	defer kiln.mu.Unlock()
	if kiln.dir == "" {
		dir, err := os.MkdirTemp("", "kiln-testenv-")
		if err != nil {
			tb.Fatal(err)
		}
		kiln.dir = dir
	}
	return kiln.dir
}
