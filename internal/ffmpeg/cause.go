package ffmpeg

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Cause is why ffmpeg or ffprobe failed, as far as its exit and its stderr
// tell. Only CauseInput is the input's fault; every other cause is the
// infrastructure's (or, for CauseMissing, the object's absence) and says
// nothing about the media.
type Cause int

const (
	// CauseInput: the demuxer or decoder rejected the input ("Invalid data
	// found when processing input", "moov atom not found", an unsupported
	// codec, no streams…), or nothing in stderr points elsewhere. Bad
	// input: retrying cannot help.
	CauseInput Cause = iota
	// CauseNetwork: reading the input over the network failed: connection
	// refused, reset or timed out, a DNS or TLS failure, HTTP 5xx, 401 or
	// 403 (an expired or invalid presigned URL), a response cut short.
	// Worth retrying.
	CauseNetwork
	// CauseResource: the machine failed ffmpeg, e.g. the work dir's disk
	// is full. Worth retrying (maybe on another worker).
	CauseResource
	// CauseMissing: the object store answered 404: the object is not
	// there. Object storage is read-after-write consistent (MinIO, and S3
	// since 2020) and every object kiln reads was written before the task
	// was enqueued, so this means the object was deleted: permanent, but
	// not the media's fault.
	CauseMissing
	// CauseKilled: the child was killed by a signal, or its context ended
	// (timeout, lease loss, shutdown). Worth retrying.
	CauseKilled
	// CauseMemory: the child ran out of memory: an allocation failed
	// under its memory limit (Config.MaxMemory: "Cannot allocate memory",
	// x264's "malloc of size … failed", a thread or a library that could
	// not be mapped), or something else than kiln SIGKILLed it, which on a
	// worker is the kernel's OOM killer. Worth one retry (another worker
	// may have more room), not more: the same input will need the same
	// memory (tasks.LimitRetries).
	CauseMemory
)

var causeNames = [...]string{
	CauseInput:    "input",
	CauseNetwork:  "network",
	CauseResource: "resource",
	CauseMissing:  "missing",
	CauseKilled:   "killed",
	CauseMemory:   "memory",
}

func (c Cause) String() string {
	if c >= 0 && int(c) < len(causeNames) {
		return causeNames[c]
	}
	return "Cause(" + strconv.Itoa(int(c)) + ")"
}

// Retryable reports whether a failure with this cause may go away on its
// own: network, resource, killed and memory (the last one retried once
// only, see CauseMemory).
func (c Cause) Retryable() bool {
	return c == CauseNetwork || c == CauseResource || c == CauseKilled || c == CauseMemory
}

// causeRules read one line of stderr each. They are anchored so that only
// ffmpeg's own words match, never an object key or file name inside a URL:
// a protocol's log prefix at the start of the line ("[tcp @ 0x…] "), or
// the error text at its end (ffmpeg prints "<url>: <strerror>" and
// "<what>: <strerror>"). The messages are those of ffmpeg 5.1 (Debian 12);
// internal/ffmpeg's cause tests make each of them happen with the real
// binaries.
//
// Deliberately absent, because bad input served correctly prints them too:
// a bare "End of file" (a truncated Ogg file) and a bare "Input/output
// error" (a truncated FLAC file), and so does a server that closes the
// connection before answering, which therefore stays CauseInput here; the
// stages confirm every such verdict with a read of their own before they
// fail a job (workers.readSource). Also
// absent: 400 and the other 4xx ffmpeg lumps together ("Server returned
// 4XX Client Error, but not one of 40{0,1,3,4}", which includes 416 for a
// seek a hostile file asks for).
var causeRules = []struct {
	cause Cause
	re    *regexp.Regexp
}{
	// Any error of the tcp or tls protocol layer: refused, timed out, DNS
	// ("Failed to resolve hostname"), TLS ("An unexpected TLS packet was
	// received.").
	{CauseNetwork, regexp.MustCompile(`^\[(tcp|tls) @ 0x[0-9a-f]+\] `)},
	// The HTTP response ended before its Content-Length: the server died
	// or the connection dropped mid-body. The demuxer then complains
	// ("moov atom not found", "partial file"), which this outranks.
	{CauseNetwork, regexp.MustCompile(`^\[https? @ 0x[0-9a-f]+\] Stream ends prematurely at \d+, should be \d+$`)},
	{CauseNetwork, regexp.MustCompile(`: (Connection refused|Connection reset by peer|Connection timed out)$`)},
	{CauseNetwork, regexp.MustCompile(`: Server returned (5XX Server Error reply|403 Forbidden \(access denied\)|401 Unauthorized \(authorization failed\))$`)},
	{CauseResource, regexp.MustCompile(`: No space left on device$`)},
	// Out of memory under the child's RLIMIT_AS: ffmpeg's ENOMEM, x264's
	// own message, a thread that could not be created (EAGAIN), the
	// dynamic loader unable to map a library.
	{CauseMemory, regexp.MustCompile(`: Cannot allocate memory$`)},
	{CauseMemory, regexp.MustCompile(`malloc of size \d+ failed$`)},
	{CauseMemory, regexp.MustCompile(`: Resource temporarily unavailable$`)},
	{CauseMemory, regexp.MustCompile(`: failed to map segment from shared object$`)},
	{CauseMissing, regexp.MustCompile(`: Server returned 404 Not Found$`)},
}

// StderrCause classifies a stderr tail by the rules above, on positive
// evidence only: network or resource evidence anywhere wins (the demuxer's
// complaints that follow a broken read are its consequence), then missing;
// anything else is CauseInput.
func StderrCause(stderr string) Cause {
	found := CauseInput
	for line := range strings.Lines(stderr) {
		line = strings.TrimRight(line, "\r\n")
		for _, r := range causeRules {
			if r.re.MatchString(line) {
				if r.cause.Retryable() {
					return r.cause
				}
				found = r.cause
			}
		}
	}
	return found
}

// Cause says why the child failed: CauseKilled when its context ended or a
// signal other than SIGKILL killed it, CauseMemory when a SIGKILL kiln did
// not send did (the OOM killer), otherwise what its stderr shows
// (StderrCause).
func (e *ExitError) Cause() Cause {
	switch {
	case errors.Is(e.Err, context.Canceled) || errors.Is(e.Err, context.DeadlineExceeded):
		return CauseKilled
	case e.Signal == syscall.SIGKILL:
		return CauseMemory
	case e.Signaled:
		return CauseKilled
	}
	return StderrCause(e.Stderr)
}

// ErrInputBroken is the Err of an *ExitError for a child that exited 0
// although its stderr shows its input broke off over the network (ffmpeg
// 5.1 treats a read error mid-stream as the end of the input and exits 0
// with a truncated output).
var ErrInputBroken = errors.New("exited 0, but reading its input failed")
