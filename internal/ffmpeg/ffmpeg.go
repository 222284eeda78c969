// Package ffmpeg is the one place kiln runs ffmpeg and ffprobe child processes.
//
// Every child runs under exec.CommandContext in its own process group, so
// cancelling the context (asynq timeout, lease loss, shutdown) kills ffmpeg
// and anything it spawned. Errors carry a bounded tail of stderr and say
// whether the child was killed by a signal; ExitError.Cause reads the tail to
// tell bad input from a network or disk failure (cause.go). A child that
// exits 0 although its input broke off over the network also fails (ffmpeg
// would otherwise leave a truncated output). Argument building lives with the callers;
// this package never goes through a shell.
package ffmpeg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/tracing"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultFFmpegPath  = "ffmpeg"
	DefaultFFprobePath = "ffprobe"
	DefaultStderrTail  = 4096
)

// waitDelay bounds how long Wait waits for the child's stdio to close after
// the process exited or was killed (e.g. a grandchild holding a pipe open).
const waitDelay = 5 * time.Second

// Config configures a Runner. Zero values get the documented defaults.
type Config struct {
	FFmpegPath  string      // ffmpeg binary; default "ffmpeg" (looked up in PATH)
	FFprobePath string      // ffprobe binary; default "ffprobe" (looked up in PATH)
	StderrTail  int         // bytes of stderr kept for errors; default 4096
	Logger      *zap.Logger // default zap.NewNop()
	// MaxMemory bounds the address space of every child (RLIMIT_AS, in
	// bytes; see child.go); 0: unbounded. Past it, allocations fail and
	// the run fails with CauseMemory.
	MaxMemory int64
	// Environ is what the children's environment is taken from (ChildEnv
	// keeps PATH, HOME and TMPDIR only); default os.Environ().
	Environ []string
	// TracerProvider gives every run a span ("ffmpeg", "ffprobe"), a child
	// of its task's; nil traces nothing.
	TracerProvider trace.TracerProvider
}

// Runner runs ffmpeg and ffprobe. It is safe for concurrent use.
type Runner struct {
	ffmpeg, ffprobe string
	tail            int
	log             *zap.Logger
	maxMemory       int64
	env             []string
	tracer          trace.Tracer
}

// New returns a Runner for cfg.
func New(cfg Config) *Runner {
	r := &Runner{
		ffmpeg:    cfg.FFmpegPath,
		ffprobe:   cfg.FFprobePath,
		tail:      cfg.StderrTail,
		log:       cfg.Logger,
		maxMemory: cfg.MaxMemory,
		tracer:    tracing.Provider(cfg.TracerProvider).Tracer("github.com/kilnvideo/kiln/internal/ffmpeg"),
	}
	environ := cfg.Environ
	if environ == nil {
		environ = os.Environ()
	}
	r.env = ChildEnv(environ)
	if r.ffmpeg == "" {
		r.ffmpeg = DefaultFFmpegPath
	}
	if r.ffprobe == "" {
		r.ffprobe = DefaultFFprobePath
	}
	if r.tail <= 0 {
		r.tail = DefaultStderrTail
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	return r
}

// ExitError reports that ffmpeg or ffprobe failed. Cause tells whose fault
// it is.
type ExitError struct {
	Program string // "ffmpeg" or "ffprobe"
	// Err is the underlying error: an *exec.ExitError, and when the context
	// ended, also the context's error (both match errors.Is / errors.As);
	// ErrInputBroken when the child exited 0 but its input broke off over
	// the network.
	Err    error
	Stderr string // bounded tail of stderr, URL query strings redacted
	// Signaled is true when the child was killed by a signal (context
	// cancellation, OOM killer, …): an infrastructure failure worth retrying.
	// False means it exited (see Cause for why).
	Signaled bool
	// Signal is the signal that killed the child, when one did (0 when it
	// exited, or when the context ended: then Err says why).
	Signal syscall.Signal
}

// Error includes the program, the underlying error and the stderr tail.
func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Program, e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *ExitError) Unwrap() error { return e.Err }

// Run runs ffmpeg with args (without the program name).
//
// It prepends "-hide_banner -nostdin" and, unless args set -loglevel or -v,
// "-loglevel error". When onProgress is non-nil it also prepends
// "-progress pipe:1 -stats_period 1 -nostats" and calls onProgress from a
// separate goroutine for every progress block ffmpeg writes (the last one has
// Done set); it should return quickly, as ffmpeg waits on the pipe meanwhile.
// Args must then not send output to stdout. Without onProgress,
// stdout is discarded.
//
// Cancelling ctx SIGKILLs ffmpeg's whole process group. A child that ran and
// failed yields an *ExitError; failing to start it yields a plain error.
func (r *Runner) Run(ctx context.Context, args []string, onProgress func(Progress)) error {
	full := []string{"-hide_banner", "-nostdin"}
	if !hasAnyFlag(args, "-loglevel", "-v") {
		full = append(full, "-loglevel", "error")
	}
	if onProgress != nil {
		full = append(full, "-progress", "pipe:1", "-stats_period", "1", "-nostats")
	}
	full = append(full, args...)

	if onProgress == nil {
		return r.run(ctx, "ffmpeg", r.ffmpeg, full, nil)
	}

	// exec copies stdout into pw from its own goroutine, so WaitDelay still
	// applies; we parse on the other end and keep draining even if parsing
	// stops early, so ffmpeg never blocks on a full pipe. onProgress runs on
	// a goroutine of its own and gets the latest report only: a slow
	// callback (a publish waiting on a bus outage) drops stale reports
	// instead of stalling the pipe.
	pr, pw := io.Pipe()
	latest := make(chan Progress, 1)
	parsed := make(chan error, 1)
	go func() {
		err := ParseProgress(pr, func(p Progress) {
			select {
			case <-latest: // superseded
			default:
			}
			latest <- p // never blocks: this goroutine is the only sender
		})
		_, _ = io.Copy(io.Discard, pr)
		close(latest)
		parsed <- err
	}()
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		for p := range latest {
			onProgress(p)
		}
	}()
	err := r.run(ctx, "ffmpeg", r.ffmpeg, full, pw)
	pw.Close()
	if perr := <-parsed; perr != nil {
		r.log.Warn("ffmpeg progress parsing stopped", zap.Error(perr))
	}
	<-delivered
	return err
}

// run starts program with args, waits for it and classifies failure.
func (r *Runner) run(ctx context.Context, name, path string, args []string, stdout io.Writer) (err error) {
	_, span := r.tracer.Start(ctx, name, trace.WithAttributes(attribute.String("process.executable.name", name)))
	defer func() {
		var ee *ExitError
		if errors.As(err, &ee) {
			span.SetAttributes(attribute.String("kiln.ffmpeg.cause", ee.Cause().String()))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	stderr := newTailBuffer(r.tail)
	cmd, err := r.command(ctx, path, args)
	if err != nil {
		return fmt.Errorf("%s: start: %w", name, err)
	}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	// Own process group, so cancelling kills ffmpeg and anything it spawned;
	// Pdeathsig, so a worker killed with -9 does not leave an orphan encode.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// The child leads its own group (pgid == pid): kill the whole group.
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = waitDelay

	log := r.log.With(zap.String("program", name))
	log.Debug("starting", zap.Strings("args", redactArgs(args)))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start: %w", name, err)
	}
	err = cmd.Wait()
	log.Debug("finished", zap.Duration("elapsed", time.Since(start)), zap.Error(err))
	if err == nil {
		// A read error mid-stream ends ffmpeg's input as if it were the
		// end of the file: it exits 0 with a truncated output. Not a
		// success when stderr says the network broke.
		if tail := stderr.String(); StderrCause(tail) == CauseNetwork {
			return &ExitError{Program: name, Err: ErrInputBroken, Stderr: redactURLs(tail)}
		}
		return nil
	}

	e := &ExitError{Program: name, Err: err, Stderr: redactURLs(stderr.String())}
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.Signaled, e.Signal = true, ws.Signal()
		}
	}
	if cerr := ctx.Err(); cerr != nil {
		// We killed it; report the cause so callers can tell shutdown and
		// timeouts apart from bad input.
		e.Err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
		e.Signaled, e.Signal = true, 0
	}
	return e
}

// hasAnyFlag reports whether args contain any of flags.
func hasAnyFlag(args []string, flags ...string) bool {
	for _, a := range args {
		for _, f := range flags {
			if a == f {
				return true
			}
		}
	}
	return false
}

// urlQuery matches the query string of URLs, which for presigned S3 URLs
// carries credentials. It stops before a trailing ':' or ',' so ffmpeg's
// "url: message" stays readable.
var urlQuery = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://[^\s?'"]*)\?[^\s'"]*[^\s'":,]`)

func redactURLs(s string) string { return urlQuery.ReplaceAllString(s, "$1?REDACTED") }

func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = redactURLs(a)
	}
	return out
}

// tailBuffer is an io.Writer that keeps only the last max bytes written.
type tailBuffer struct {
	buf       []byte
	max       int
	truncated bool
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.truncated = t.truncated || len(t.buf) > 0 || len(p) > t.max
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.truncated = true
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String returns the kept bytes; when earlier output was dropped, the
// partial first line is dropped too and the result starts with "…".
func (t *tailBuffer) String() string {
	b := t.buf
	if !t.truncated {
		return string(b)
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
		b = b[i+1:]
	}
	return "…" + strings.ToValidUTF8(string(b), "")
}
