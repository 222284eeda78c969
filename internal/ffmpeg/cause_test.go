package ffmpeg_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/ffmpeg/ffmpegtest"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestStderrCause pins every rule on lines ffmpeg 5.1 printed (copied from
// the runs of TestCauseOfRealFailures), and the anchoring that keeps an
// object key from posing as an error.
func TestStderrCause(t *testing.T) {
	const u = "http://127.0.0.1:9700/kiln-sources/uploads/0123/clip.mp4?REDACTED"
	tests := []struct {
		name   string
		stderr string
		want   ffmpeg.Cause
	}{
		{"refused", "[tcp @ 0x55d87ceeb8c0] Connection to tcp://127.0.0.1:1 failed: Connection refused\n" + u + ": Connection refused\n", ffmpeg.CauseNetwork},
		{"refused, top line only", u + ": Connection refused", ffmpeg.CauseNetwork},
		{"reset", u + ": Connection reset by peer\n", ffmpeg.CauseNetwork},
		{"timed out", u + ": Connection timed out\n", ffmpeg.CauseNetwork},
		{"dns", "[tcp @ 0x55ae71cd08c0] Failed to resolve hostname no-such-host.invalid: Name or service not known\n" + u + ": Input/output error\n", ffmpeg.CauseNetwork},
		{"tls", "[tls @ 0x5595d1cd58c0] An unexpected TLS packet was received.\n" + u + ": Input/output error\n", ffmpeg.CauseNetwork},
		{"5xx", u + ": Server returned 5XX Server Error reply\n", ffmpeg.CauseNetwork},
		{"403", u + ": Server returned 403 Forbidden (access denied)\n", ffmpeg.CauseNetwork},
		{"401", u + ": Server returned 401 Unauthorized (authorization failed)\n", ffmpeg.CauseNetwork},
		{"cut before moov", "[http @ 0x56080798fb00] Stream ends prematurely at 407614, should be 412378\n    Last message repeated 3 times\n" +
			"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x56080798f280] moov atom not found\n" + u + ": Invalid data found when processing input\n", ffmpeg.CauseNetwork},
		{"cut over https", "[https @ 0x56080798fb00] Stream ends prematurely at 1, should be 2\n", ffmpeg.CauseNetwork},
		{"cut mid-body", "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x555deb532ac0] stream 1, offset 0x32da0: partial file\n" + u + ": Input/output error\n" +
			"Error while decoding stream #0:0: Invalid data found when processing input\n[http @ 0x1] Stream ends prematurely at 206189, should be 412378\n", ffmpeg.CauseNetwork},
		{"disk full", "Could not write header for output file #0 (incorrect codec parameters ?): No space left on device\nError initializing output stream 0:0 -- \n", ffmpeg.CauseResource},
		{"disk full writing", "av_interleaved_write_frame(): No space left on device\n    Last message repeated 6 times\nError writing trailer of /tmp/o.mp4: No space left on device\n", ffmpeg.CauseResource},
		{"404", u + ": Server returned 404 Not Found\n", ffmpeg.CauseMissing},
		// Out of memory under KILN_FFMPEG_MAX_MEMORY (ffmpeg 5.1's words
		// with RLIMIT_AS at 400 MiB, 800 MiB and 100 MiB).
		{"enomem", "Error while decoding stream #0:0: Cannot allocate memory\n", ffmpeg.CauseMemory},
		{"x264 malloc", "x264 [error]: malloc of size 7332480 failed\nError submitting video frame to the encoder\n", ffmpeg.CauseMemory},
		{"no thread", "Failed to inject frame into filter network: Resource temporarily unavailable\nError while processing the decoded data for stream #0:0\n", ffmpeg.CauseMemory},
		{"no library", "ffmpeg: error while loading shared libraries: libgomp.so.1: failed to map segment from shared object\n", ffmpeg.CauseMemory},
		{"404 then refused: retry wins", u + ": Server returned 404 Not Found\n" + u + ": Connection refused\n", ffmpeg.CauseNetwork},

		{"invalid data", u + ": Invalid data found when processing input\n", ffmpeg.CauseInput},
		{"moov atom not found", "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x5589bff05ac0] moov atom not found\n" + u + ": Invalid data found when processing input\n", ffmpeg.CauseInput},
		{"partial file served complete", "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] stream 1, offset 0x32da0: partial file\nError while decoding stream #0:0: Invalid data found when processing input\n", ffmpeg.CauseInput},
		{"matroska ended prematurely", "[matroska,webm @ 0x55639ce2c280] File ended prematurely at pos. 4 (0x4)\n[matroska,webm @ 0x1] EBML header parsing failed\n" + u + ": Invalid data found when processing input\n", ffmpeg.CauseInput},
		{"bare end of file", u + ": End of file\n", ffmpeg.CauseInput},
		{"bare input/output error", u + ": Input/output error\n", ffmpeg.CauseInput},
		{"other 4xx", u + ": Server returned 4XX Client Error, but not one of 40{0,1,3,4}\n", ffmpeg.CauseInput},
		{"400", u + ": Server returned 400 Bad Request\n", ffmpeg.CauseInput},
		{"no streams", "Output file #0 does not contain any stream\n", ffmpeg.CauseInput},
		{"whitelist", "Format hls is not on format whitelist 'mov,mp4'\n", ffmpeg.CauseInput},
		{"empty", "", ffmpeg.CauseInput},
		// A key is the user's (any S3 client may name it): mid-line it
		// never counts, only ffmpeg's own words at the end.
		{"key that says refused", "http://h/kiln-sources/x:%20Connection%20refused: Invalid data found when processing input\n", ffmpeg.CauseInput},
		{"key with a space that says refused", "http://h/b/x: Connection refused.mp4: Invalid data found when processing input\n", ffmpeg.CauseInput},
		{"key that says tcp", "http://h/b/[tcp @ 0x1] x: Invalid data found when processing input\n", ffmpeg.CauseInput},
		{"truncated tail", "…@ 0x1] Connection to tcp://127.0.0.1:1 failed\n" + u + ": Connection refused\n", ffmpeg.CauseNetwork},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ffmpeg.StderrCause(tt.stderr); got != tt.want {
				t.Errorf("StderrCause(%q) = %v, want %v", tt.stderr, got, tt.want)
			}
			ee := &ffmpeg.ExitError{Program: "ffmpeg", Err: errors.New("exit status 1"), Stderr: tt.stderr}
			if got := ee.Cause(); got != tt.want {
				t.Errorf("Cause() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCauseKilled(t *testing.T) {
	invalid := "x: Invalid data found when processing input"
	tests := []struct {
		name string
		err  *ffmpeg.ExitError
	}{
		{"signaled", &ffmpeg.ExitError{Err: errors.New("signal: killed"), Signaled: true, Stderr: invalid}},
		{"deadline", &ffmpeg.ExitError{Err: fmt.Errorf("%w: %w", context.DeadlineExceeded, errors.New("exit status 255")), Stderr: invalid}},
		{"canceled", &ffmpeg.ExitError{Err: fmt.Errorf("%w: %w", context.Canceled, errors.New("exit status 255")), Stderr: invalid}},
	}
	for _, tt := range tests {
		if got := tt.err.Cause(); got != ffmpeg.CauseKilled || !got.Retryable() {
			t.Errorf("%s: Cause() = %v, want killed (retryable)", tt.name, got)
		}
	}
	// SIGKILL that kiln did not send (its context is live): the OOM killer.
	oom := &ffmpeg.ExitError{Err: errors.New("signal: killed"), Signaled: true, Signal: syscall.SIGKILL, Stderr: invalid}
	if got := oom.Cause(); got != ffmpeg.CauseMemory || !got.Retryable() {
		t.Errorf("SIGKILL: Cause() = %v, want memory (retryable)", got)
	}
	// Other signals (a crash) stay killed; kiln's own kill on a timeout too.
	segv := &ffmpeg.ExitError{Err: errors.New("signal: segmentation fault"), Signaled: true, Signal: syscall.SIGSEGV}
	ours := &ffmpeg.ExitError{Err: fmt.Errorf("%w: %w", context.DeadlineExceeded, errors.New("signal: killed")), Signaled: true, Signal: syscall.SIGKILL}
	if segv.Cause() != ffmpeg.CauseKilled || ours.Cause() != ffmpeg.CauseKilled {
		t.Errorf("SIGSEGV: %v, kiln's SIGKILL: %v; want killed", segv.Cause(), ours.Cause())
	}
	for c, retry := range map[ffmpeg.Cause]bool{ffmpeg.CauseInput: false, ffmpeg.CauseMissing: false, ffmpeg.CauseNetwork: true, ffmpeg.CauseResource: true} {
		if c.Retryable() != retry {
			t.Errorf("%v.Retryable() = %v", c, !retry)
		}
	}
}

// causeWhitelist is the demuxers of these tests: the clip's and those of the
// hand-made truncated files.
const causeWhitelist = "mov,mp4,m4a,3gp,3g2,mj2,ogg,flac"

// TestCauseOfRealFailures makes each failure happen to the real ffprobe
// and ffmpeg, read over HTTP the way the workers read presigned URLs (with
// a 1 s -rw_timeout), and checks the cause and the words it was read from.
func TestCauseOfRealFailures(t *testing.T) {
	r := newRunner(t)
	// The mp4 muxer writes the moov atom at the end unless told otherwise;
	// uploads come both ways.
	moovAtEnd := ffmpegtest.NewSources(t, testenv.Clip(t, testenv.ClipSpec{Seconds: 4}))
	faststart := ffmpegtest.NewSources(t, testenv.Clip(t, testenv.ClipSpec{Seconds: 4, ExtraArgs: []string{"-movflags", "+faststart"}}))
	flac := filepath.Join(t.TempDir(), "truncated.flac")
	if err := os.WriteFile(flac, []byte("fLaC\x00\x00\x00\x22"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/dev/full"); err != nil {
		testenv.Missing(t, "no /dev/full to fill a disk with: %v", err)
	}

	tests := []struct {
		name  string
		input string
		out   string // ffmpeg's output; default a file in a temp dir
		// which programs run: ffprobe, ffmpeg or both
		probe, run bool
		want       ffmpeg.Cause
		evidence   string // in stderr
		// exit0: ffmpeg exited 0 (truncated output), reported as
		// ErrInputBroken.
		exit0 bool
	}{
		{name: "closed port", input: ffmpegtest.RefusedURL(t), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: ": Connection refused"},
		{name: "bad hostname", input: ffmpegtest.BadHostURL, probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: "Failed to resolve hostname kiln-no-such-host.invalid"},
		{name: "tls failure", input: moovAtEnd.HTTPSURL(ffmpegtest.OK), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: "An unexpected TLS packet was received."},
		{name: "503", input: moovAtEnd.URL(ffmpegtest.Status503), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: "Server returned 5XX Server Error reply"},
		{name: "500", input: moovAtEnd.URL(ffmpegtest.Status500), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: "Server returned 5XX Server Error reply"},
		{name: "403 expired presigned URL", input: moovAtEnd.URL(ffmpegtest.Status403), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: "Server returned 403 Forbidden (access denied)"},
		{name: "401", input: moovAtEnd.URL(ffmpegtest.Status401), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: "Server returned 401 Unauthorized (authorization failed)"},
		{name: "never answers", input: moovAtEnd.URL(ffmpegtest.Stall), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: ": Connection timed out"},
		{name: "closes mid-body before the moov", input: moovAtEnd.URL(ffmpegtest.Cut), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: "Stream ends prematurely at"},
		{name: "resets mid-body before the moov", input: moovAtEnd.URL(ffmpegtest.Reset), probe: true, run: true, want: ffmpeg.CauseNetwork, evidence: "Stream ends prematurely at"},
		{name: "closes mid-body while encoding", input: faststart.URL(ffmpegtest.Cut), run: true, want: ffmpeg.CauseNetwork, evidence: "Stream ends prematurely at", exit0: true},
		{name: "resets mid-body while encoding", input: faststart.URL(ffmpegtest.Reset), run: true, want: ffmpeg.CauseNetwork, evidence: ": Connection reset by peer", exit0: true},
		{name: "stalls mid-body while encoding", input: faststart.URL(ffmpegtest.StallMidBody), run: true, want: ffmpeg.CauseNetwork, evidence: ": Connection timed out", exit0: true},
		{name: "disk full", input: faststart.URL(ffmpegtest.OK), out: "/dev/full", run: true, want: ffmpeg.CauseResource, evidence: ": No space left on device"},
		{name: "404", input: moovAtEnd.URL(ffmpegtest.Status404), probe: true, run: true, want: ffmpeg.CauseMissing, evidence: "Server returned 404 Not Found"},

		{name: "garbage with 200", input: moovAtEnd.URL(ffmpegtest.Garbage), probe: true, run: true, want: ffmpeg.CauseInput, evidence: "Invalid data found when processing input"},
		{name: "mp4 without moov", input: moovAtEnd.URL(ffmpegtest.TruncatedMoov), probe: true, run: true, want: ffmpeg.CauseInput, evidence: "moov atom not found"},
		// The words of bad input that network failures share, which is
		// why they are not evidence: a truncated Ogg file says "End of
		// file", and so does a server closing before it answers (a
		// network failure this cannot tell from bad input).
		{name: "truncated ogg", input: moovAtEnd.URL(ffmpegtest.TruncatedOgg), probe: true, run: true, want: ffmpeg.CauseInput, evidence: ": End of file"},
		{name: "closes before answering", input: moovAtEnd.URL(ffmpegtest.CloseBeforeAnswer), probe: true, run: true, want: ffmpeg.CauseInput, evidence: ": End of file"},
		// A truncated FLAC file says "Input/output error" (from disk; over
		// HTTP it says "Invalid data").
		{name: "truncated flac file", input: flac, probe: true, run: true, want: ffmpeg.CauseInput, evidence: ": Input/output error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(program string, err error) {
				t.Helper()
				var ee *ffmpeg.ExitError
				if !errors.As(err, &ee) {
					t.Fatalf("%s: got %v, want *ffmpeg.ExitError", program, err)
				}
				if got := ee.Cause(); got != tt.want {
					t.Errorf("%s: Cause() = %v, want %v; stderr:\n%s", program, got, tt.want, ee.Stderr)
				}
				if !strings.Contains(ee.Stderr, tt.evidence) {
					t.Errorf("%s: stderr lacks %q:\n%s", program, tt.evidence, ee.Stderr)
				}
				if strings.Contains(ee.Error(), "secret") {
					t.Errorf("%s: the presigned query leaked: %v", program, ee)
				}
				if program == "ffmpeg" && errors.Is(err, ffmpeg.ErrInputBroken) != tt.exit0 {
					t.Errorf("ffmpeg: errors.Is(err, ErrInputBroken) = %v, want %v: %v", !tt.exit0, tt.exit0, err)
				}
			}
			if tt.probe {
				_, err := r.Probe(t.Context(), tt.input, ffmpeg.ProbeOptions{
					FormatWhitelist: causeWhitelist, ProtocolWhitelist: "http,https,tcp,tls,file", ReadTimeout: time.Second,
				})
				check("ffprobe", err)
			}
			if tt.run {
				out := tt.out
				if out == "" {
					out = filepath.Join(t.TempDir(), "out.mp4")
				}
				err := r.Run(t.Context(), []string{
					"-format_whitelist", causeWhitelist, "-protocol_whitelist", "http,https,tcp,tls,file", "-rw_timeout", "1000000",
					"-i", tt.input, "-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4", "-y", out,
				}, nil)
				check("ffmpeg", err)
			}
		})
	}
}

// TestCauseNoFalseAlarm: reading a healthy source over HTTP, with seeks
// and an early stop, prints nothing the rules take for a network failure.
func TestCauseNoFalseAlarm(t *testing.T) {
	r := newRunner(t)
	for _, spec := range []testenv.ClipSpec{{Seconds: 4}, {Seconds: 4, ExtraArgs: []string{"-movflags", "+faststart"}}} {
		src := ffmpegtest.NewSources(t, testenv.Clip(t, spec)).URL(ffmpegtest.OK)
		if _, err := r.Probe(t.Context(), src, ffmpeg.ProbeOptions{FormatWhitelist: causeWhitelist, ProtocolWhitelist: "http,tcp", ReadTimeout: time.Second}); err != nil {
			t.Errorf("probe: %v", err)
		}
		dir := t.TempDir()
		for _, args := range [][]string{
			{"-rw_timeout", "1000000", "-i", src, "-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4", filepath.Join(dir, "all.mp4")},
			{"-ss", "3", "-rw_timeout", "1000000", "-i", src, "-frames:v", "1", "-update", "1", "-f", "image2", filepath.Join(dir, "poster.jpg")},
		} {
			if err := r.Run(t.Context(), append([]string{"-protocol_whitelist", "http,tcp"}, args...), nil); err != nil {
				t.Errorf("ffmpeg %q: %v", args, err)
			}
		}
	}
}
