package ffmpeg_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// mp4Whitelist is the demuxer whitelist used against hostile inputs here.
const mp4Whitelist = "mov,mp4,m4a,3gp,3g2,mj2"

func newRunner(t *testing.T) *ffmpeg.Runner {
	t.Helper()
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	return ffmpeg.New(ffmpeg.Config{Logger: zaptest.NewLogger(t)})
}

// clipSpec is a 2 s 320x240 testsrc + 440 Hz sine clip, stereo AAC.
var clipSpec = testenv.ClipSpec{
	Source: "testsrc", Width: 320, Height: 240, Rate: "25", Seconds: 2,
	Audio: []string{"-c:a", "aac", "-ac", "2"},
}

func TestProbe(t *testing.T) {
	r := newRunner(t)
	clip := testenv.Clip(t, clipSpec)

	p, err := r.Probe(t.Context(), clip, ffmpeg.ProbeOptions{
		FormatWhitelist:   mp4Whitelist,
		ProtocolWhitelist: "file",
		ProbeSize:         5 << 20,
		AnalyzeDuration:   5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Format.FormatName, "mp4") || p.Format.NbStreams != 2 || p.Format.Size == 0 {
		t.Errorf("format %+v", p.Format)
	}
	if d := p.Format.Duration; d < 1.9 || d > 2.2 {
		t.Errorf("duration %v, want ≈2", d)
	}
	v := p.Video()
	if v == nil {
		t.Fatal("no video stream")
	}
	if v.Width != 320 || v.Height != 240 || v.CodecName != "h264" || v.PixFmt != "yuv420p" || v.Rotation != 0 {
		t.Errorf("video %+v", v)
	}
	if fps := ffmpeg.ParseRational(v.AvgFrameRate); fps != 25 {
		t.Errorf("fps %v", fps)
	}
	a := p.Audio()
	if a == nil {
		t.Fatal("no audio stream")
	}
	if a.CodecName != "aac" || a.Channels != 2 || a.SampleRate == 0 {
		t.Errorf("audio %+v", a)
	}
	if len(p.Raw) == 0 {
		t.Error("raw JSON not kept")
	}
}

func TestProbeRotated(t *testing.T) {
	r := newRunner(t)
	// ffmpeg 5.1 has no -display_rotation; the rotate tag on a stream copy
	// into mp4 writes a display matrix.
	spec := clipSpec
	spec.Name, spec.Rotate = "rotated.mp4", 90
	rotated := testenv.Clip(t, spec)
	p, err := r.Probe(t.Context(), rotated, ffmpeg.ProbeOptions{FormatWhitelist: mp4Whitelist})
	if err != nil {
		t.Fatal(err)
	}
	// ffprobe 5.1 prints rotation 90 here; older builds print -90 (→ 270).
	if got := p.Video().Rotation; got != 90 && got != 270 {
		t.Errorf("Rotation = %d, want 90 or 270", got)
	}
}

func TestProbeRejectsDisguisedPlaylist(t *testing.T) {
	r := newRunner(t)
	evil := filepath.Join(t.TempDir(), "evil.mp4")
	playlist := "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
	if err := os.WriteFile(evil, []byte(playlist), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := r.Probe(t.Context(), evil, ffmpeg.ProbeOptions{FormatWhitelist: mp4Whitelist, ProtocolWhitelist: "file"})
	var ee *ffmpeg.ExitError
	if !errors.As(err, &ee) || ee.Program != "ffprobe" || ee.Signaled || !strings.Contains(ee.Stderr, "whitelist") {
		t.Fatalf("got %v, want ffprobe ExitError mentioning the whitelist", err)
	}
}

func TestRunProgress(t *testing.T) {
	r := newRunner(t)
	var got []ffmpeg.Progress
	err := r.Run(t.Context(), []string{
		"-f", "lavfi", "-i", "testsrc=size=320x240:rate=30:duration=3",
		"-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4", "-y", filepath.Join(t.TempDir(), "out.mp4"),
	}, func(p ffmpeg.Progress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		t.Fatal("onProgress never called")
	}
	last := got[len(got)-1]
	if !last.Done {
		t.Errorf("last progress %+v not Done", last)
	}
	if last.Frame != 90 || last.OutTime < 2900*time.Millisecond || last.OutTime > 3100*time.Millisecond {
		t.Errorf("last progress %+v, want 90 frames ≈3s", last)
	}
	for _, p := range got[:len(got)-1] {
		if p.Done {
			t.Errorf("Done before the end: %+v", got)
		}
	}
}

// TestRunSlowProgress: a progress callback that blocks (a publish waiting
// on a bus outage) neither stalls ffmpeg nor fails the run; it gets the
// latest report, and the last one is Done.
func TestRunSlowProgress(t *testing.T) {
	r := newRunner(t)
	var got []ffmpeg.Progress
	err := r.Run(t.Context(), []string{
		"-f", "lavfi", "-i", "testsrc=size=320x240:rate=30:duration=3",
		"-c:v", "libx264", "-preset", "ultrafast", "-f", "mp4", "-y", filepath.Join(t.TempDir(), "out.mp4"),
	}, func(p ffmpeg.Progress) {
		if len(got) == 0 {
			time.Sleep(7 * time.Second) // longer than the runner's WaitDelay (5 s)
		}
		got = append(got, p)
	})
	if err != nil {
		t.Fatalf("Run with a slow progress callback: %v", err)
	}
	if len(got) == 0 || !got[len(got)-1].Done {
		t.Fatalf("progress %+v: want the Done report last", got)
	}
}

func TestRunCancel(t *testing.T) {
	r := newRunner(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)

	start := time.Now()
	var calls int
	err := r.Run(ctx, []string{"-re", "-f", "lavfi", "-i", "testsrc=r=30", "-f", "null", "-"},
		func(ffmpeg.Progress) { calls++ })
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Run returned after %v, want < 3s", elapsed)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	var ee *ffmpeg.ExitError
	if !errors.As(err, &ee) || !ee.Signaled {
		t.Errorf("got %#v, want a signaled ExitError", err)
	}
	var xe *exec.ExitError
	if !errors.As(err, &xe) {
		t.Errorf("got %v, want it to wrap *exec.ExitError", err)
	}
}

func TestRunGarbageInput(t *testing.T) {
	r := newRunner(t)
	in := filepath.Join(t.TempDir(), "garbage.mp4")
	if err := os.WriteFile(in, []byte(strings.Repeat("not a video\x00\xff", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	err := r.Run(t.Context(), []string{"-i", in, "-f", "null", "-"}, nil)
	var ee *ffmpeg.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("got %v, want *ExitError", err)
	}
	if ee.Program != "ffmpeg" || ee.Signaled || strings.TrimSpace(ee.Stderr) == "" {
		t.Errorf("got %+v, want non-signaled ffmpeg error with stderr", ee)
	}
	if !strings.Contains(ee.Error(), ee.Stderr[:10]) {
		t.Errorf("Error() %q lacks stderr", ee.Error())
	}

	_, err = r.Probe(t.Context(), in, ffmpeg.ProbeOptions{})
	if !errors.As(err, &ee) || ee.Program != "ffprobe" || ee.Signaled || ee.Stderr == "" {
		t.Errorf("Probe: got %v, want non-signaled ffprobe ExitError", err)
	}
}

func TestRunNotInstalled(t *testing.T) {
	r := ffmpeg.New(ffmpeg.Config{FFmpegPath: filepath.Join(t.TempDir(), "no-ffmpeg")})
	err := r.Run(t.Context(), []string{"-version"}, nil)
	var ee *ffmpeg.ExitError
	if err == nil || errors.As(err, &ee) {
		t.Fatalf("got %v, want a plain start error", err)
	}
}

func TestRunStderrTailBounded(t *testing.T) {
	newRunner(t)
	r := ffmpeg.New(ffmpeg.Config{StderrTail: 64})
	// Ask for an unknown filter on a long line: stderr far exceeds 64 bytes.
	err := r.Run(t.Context(), []string{"-f", "lavfi", "-i", "nosuchfilter" + strings.Repeat("x", 500), "-f", "null", "-"}, nil)
	var ee *ffmpeg.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("got %v, want *ExitError", err)
	}
	if len(ee.Stderr) > 64+len("…") || ee.Stderr == "" {
		t.Errorf("stderr tail %d bytes: %q", len(ee.Stderr), ee.Stderr)
	}
}

// TestRunCancelKillsProcessGroup stands in a shell script for ffmpeg that
// leaves a grandchild holding stderr open; cancelling must kill both.
func TestRunCancelKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	script := filepath.Join(dir, "fake-ffmpeg")
	body := "#!/bin/sh\nsleep 60 &\necho $! > " + pidFile + "\nwait\n"
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	r := ffmpeg.New(ffmpeg.Config{FFmpegPath: script})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)

	start := time.Now()
	err := r.Run(ctx, nil, nil)
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Run returned after %v, want < 3s", elapsed)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	pid, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	// Killed grandchildren may linger as zombies if PID 1 does not reap.
	deadline := time.Now().Add(2 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %s still alive: %s", strings.TrimSpace(string(pid)), stat)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
