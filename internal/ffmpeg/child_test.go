package ffmpeg_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// fakeFFmpeg writes a shell script standing in for ffmpeg that writes its
// environment and its address-space limit (ulimit -v, KiB) to dir/env and
// dir/limit.
func fakeFFmpeg(t *testing.T) (script, dir string) {
	t.Helper()
	dir = t.TempDir()
	script = filepath.Join(dir, "fake-ffmpeg")
	body := "#!/bin/sh\nenv > " + filepath.Join(dir, "env") + "\nulimit -v > " + filepath.Join(dir, "limit") + "\n"
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	return script, dir
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestChildEnvironment: ffmpeg decodes hostile files and must not see the
// worker's secrets: its environment is PATH, HOME and TMPDIR only.
func TestChildEnvironment(t *testing.T) {
	t.Setenv("KILN_S3_SECRET_KEY", "s3-secret")
	t.Setenv("KILN_API_KEYS", "kiln_apikey")
	t.Setenv("KILN_PLAYBACK_SIGNING_KEY", "signing-secret")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
	t.Setenv("HOME", "/home/kiln")
	for _, maxMemory := range []int64{0, 1 << 30} {
		script, dir := fakeFFmpeg(t)
		r := ffmpeg.New(ffmpeg.Config{FFmpegPath: script, FFprobePath: script, MaxMemory: maxMemory})
		for _, run := range []func() error{
			func() error { return r.Run(t.Context(), nil, nil) },
			func() error { _, err := r.Probe(t.Context(), "in.mp4", ffmpeg.ProbeOptions{}); return err },
		} {
			_ = run() // the fake probe prints no JSON
			env := readFile(t, filepath.Join(dir, "env"))
			for _, secret := range []string{"s3-secret", "kiln_apikey", "signing-secret", "aws-secret", "KILN_", "AWS_"} {
				if strings.Contains(env, secret) {
					t.Errorf("max memory %d: the child's environment holds %q:\n%s", maxMemory, secret, env)
				}
			}
			for _, want := range []string{"PATH=", "HOME=/home/kiln"} {
				if !strings.Contains(env, want) {
					t.Errorf("max memory %d: the child's environment lacks %s:\n%s", maxMemory, want, env)
				}
			}
		}
	}
}

func TestChildEnvOf(t *testing.T) {
	got := ffmpeg.ChildEnv([]string{"KILN_X=1", "HOME=/h", "AWS_Y=2", "TMPDIR=/t", "PATH=/p", "LD_PRELOAD=/evil.so", "PATHX=1"})
	if want := []string{"PATH=/p", "HOME=/h", "TMPDIR=/t"}; !slices.Equal(got, want) {
		t.Errorf("ChildEnv = %q, want %q", got, want)
	}
	if got := ffmpeg.ChildEnv(nil); len(got) != 1 || !strings.HasPrefix(got[0], "PATH=/") {
		t.Errorf("ChildEnv(nil) = %q, want a default PATH", got)
	}
}

// TestChildMemoryLimit: with MaxMemory, the child runs under RLIMIT_AS of
// that many bytes (set before ffmpeg starts, by the re-exec); without, none.
func TestChildMemoryLimit(t *testing.T) {
	for _, tt := range []struct {
		maxMemory int64
		want      string
	}{{0, "unlimited"}, {3 << 30, strconv.Itoa(3 << 20)}} {
		script, dir := fakeFFmpeg(t)
		r := ffmpeg.New(ffmpeg.Config{FFmpegPath: script, MaxMemory: tt.maxMemory})
		if err := r.Run(t.Context(), nil, nil); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(dir, "limit")); got != tt.want {
			t.Errorf("MaxMemory %d: ulimit -v = %s, want %s", tt.maxMemory, got, tt.want)
		}
	}
}

// TestMemoryLimitExceeded: a real encode that needs more than the limit
// fails with CauseMemory.
func TestMemoryLimitExceeded(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg")
	r := ffmpeg.New(ffmpeg.Config{MaxMemory: 400 << 20})
	args := []string{"-f", "lavfi", "-i", "testsrc2=s=1920x1080:r=30:d=2",
		"-filter_complex", "split=3[a][b][c];[b]scale=1280:720[b2];[c]scale=640:360[c2]",
		"-map", "[a]", "-c:v", "libx264", "-preset", "veryfast", "-f", "null", "-",
		"-map", "[b2]", "-c:v", "libx264", "-preset", "veryfast", "-f", "null", "-",
		"-map", "[c2]", "-c:v", "libx264", "-preset", "veryfast", "-f", "null", "-"}
	err := r.Run(t.Context(), args, nil)
	var ee *ffmpeg.ExitError
	if !errors.As(err, &ee) || ee.Cause() != ffmpeg.CauseMemory {
		t.Fatalf("got %v, want an ExitError with CauseMemory", err)
	}
	// The same run fits without the limit.
	if err := ffmpeg.New(ffmpeg.Config{}).Run(t.Context(), args, nil); err != nil {
		t.Fatalf("without a limit: %v", err)
	}
}

// TestLoggedArgvHasNoCredentials: the runner logs every command line; a
// presigned URL's signature and credential never appear in it.
func TestLoggedArgvHasNoCredentials(t *testing.T) {
	script, _ := fakeFFmpeg(t)
	core, logs := observer.New(zap.DebugLevel)
	r := ffmpeg.New(ffmpeg.Config{FFmpegPath: script, FFprobePath: script, Logger: zap.New(core), MaxMemory: 1 << 30})
	const u = "https://s3.example:9000/kiln-sources/uploads/x/clip.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=deadbeefcafe"
	_ = r.Run(t.Context(), []string{"-headers", "If-Match: \"abc\"\r\n", "-i", u, "-f", "null", "-"}, nil)
	_, _ = r.Probe(t.Context(), u, ffmpeg.ProbeOptions{})
	if logs.Len() == 0 {
		t.Fatal("nothing logged")
	}
	for _, e := range logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		for _, secret := range []string{"AKIAEXAMPLE", "deadbeefcafe", "X-Amz-Credential"} {
			if strings.Contains(line, secret) {
				t.Errorf("log %q shows %s", line, secret)
			}
		}
		if strings.Contains(line, "starting") && !strings.Contains(line, "REDACTED") {
			t.Errorf("log %q: want the URL's query redacted", line)
		}
	}
}
