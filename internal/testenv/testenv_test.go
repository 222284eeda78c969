package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how a helper stopped the test.
// Fatal and Skip end the calling goroutine, as the real ones do.
type recorder struct {
	testing.TB // the real test, for TempDir, Context and anything else
	outcome    string
	msg        string
}

func (r *recorder) Helper() {}
func (r *recorder) stop(outcome string, msg string) {
	r.outcome, r.msg = outcome, msg
	runtime.Goexit()
}
func (r *recorder) Fatal(args ...any)            { r.stop("fatal", fmt.Sprint(args...)) }
func (r *recorder) Fatalf(f string, args ...any) { r.stop("fatal", fmt.Sprintf(f, args...)) }
func (r *recorder) FailNow()                     { r.stop("fatal", "") }
func (r *recorder) Skip(args ...any)             { r.stop("skip", fmt.Sprint(args...)) }
func (r *recorder) Skipf(f string, args ...any)  { r.stop("skip", fmt.Sprintf(f, args...)) }
func (r *recorder) SkipNow()                     { r.stop("skip", "") }
func (r *recorder) Error(args ...any)            { r.outcome, r.msg = "error", fmt.Sprint(args...) }
func (r *recorder) Errorf(f string, args ...any) { r.outcome, r.msg = "error", fmt.Sprintf(f, args...) }

// run calls f with a recorder in its own goroutine and returns the
// recorder once f returned or stopped it.
func run(t *testing.T, f func(testing.TB)) *recorder {
	t.Helper()
	r := &recorder{TB: t, outcome: "passed"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

// TestPolicy: every helper fails the test when services are required and
// skips it otherwise, naming what is missing and how to get it.
func TestPolicy(t *testing.T) {
	noBinary := "kiln-testenv-no-such-binary"
	helpers := []struct {
		name  string
		unset []string
		call  func(testing.TB)
		want  string // in the message
	}{
		{"binaries", nil, func(tb testing.TB) { RequireBinaries(tb, "sh", noBinary) }, noBinary + " not found in PATH"},
		{"redis", []string{"KILN_TEST_REDIS_ADDR"}, func(tb testing.TB) { Redis(tb) }, "no Redis: KILN_TEST_REDIS_ADDR not set"},
		{"redisdb", []string{"KILN_TEST_REDIS_ADDR"}, func(tb testing.TB) { RedisDB(tb, 7) }, "no Redis: KILN_TEST_REDIS_ADDR not set"},
		{"nats", []string{"KILN_TEST_NATS_URL"}, func(tb testing.TB) { NATS(tb) }, "no NATS: KILN_TEST_NATS_URL not set"},
		{"nats user", []string{"KILN_TEST_NATS_WORKER_PASSWORD"}, func(tb testing.TB) { NATSConn(tb, "worker") }, "KILN_TEST_NATS_WORKER_PASSWORD not set"},
		{"s3", []string{"KILN_TEST_S3_ENDPOINT"}, func(tb testing.TB) { S3(tb) }, "no S3: KILN_TEST_S3_ENDPOINT not set"},
		{"stack", []string{"KILN_TEST_API_URL", "KILN_TEST_API_KEY", "KILN_TEST_S3_ENDPOINT"}, func(tb testing.TB) { Stack(tb) },
			"no kiln stack: KILN_TEST_API_URL, KILN_TEST_API_KEY, KILN_TEST_S3_ENDPOINT not set"},
		{"clip", []string{"PATH"}, func(tb testing.TB) { Clip(tb, ClipSpec{}) }, "ffmpeg not found in PATH"},
	}
	for _, h := range helpers {
		for _, required := range []bool{true, false} {
			name := h.name + "/by hand"
			if required {
				name = h.name + "/required"
			}
			t.Run(name, func(t *testing.T) {
				for _, k := range h.unset {
					t.Setenv(k, "")
				}
				t.Setenv(RequireServicesEnv, map[bool]string{true: "1", false: ""}[required])
				if Required() != required {
					t.Fatalf("Required() = %v with %s=%q", Required(), RequireServicesEnv, os.Getenv(RequireServicesEnv))
				}
				r := run(t, h.call)
				want := map[bool]string{true: "fatal", false: "skip"}[required]
				if r.outcome != want {
					t.Fatalf("outcome %s (%q), want %s", r.outcome, r.msg, want)
				}
				if !strings.Contains(r.msg, h.want) || !strings.Contains(r.msg, "`go tool task test`") {
					t.Errorf("message %q does not say %q and to run `go tool task test`", r.msg, h.want)
				}
			})
		}
	}
}

// TestPresent: with everything there, the helpers return it and go on.
func TestPresent(t *testing.T) {
	t.Setenv(RequireServicesEnv, "1")
	for k, v := range map[string]string{
		"KILN_TEST_API_URL": "http://127.0.0.1:8710", "KILN_TEST_API_KEY": "key", "KILN_TEST_ADMIN_KEY": "admin",
		"KILN_TEST_S3_ENDPOINT": "127.0.0.1:9710", "KILN_TEST_S3_ACCESS_KEY": "ak", "KILN_TEST_S3_SECRET_KEY": "sk",
		"KILN_TEST_REDIS_ADDR": "127.0.0.1:6710", "KILN_TEST_NATS_URL": "nats://127.0.0.1:4710",
		"KILN_TEST_SOURCES_BUCKET": "", "KILN_TEST_OUTPUTS_BUCKET": "outs", "KILN_TEST_REDIS_PASSWORD": "rpw",
	} {
		t.Setenv(k, v)
	}
	var s StackEnv
	r := run(t, func(tb testing.TB) {
		RequireBinaries(tb, "sh")
		if Redis(tb) != "127.0.0.1:6710" || NATS(tb) != "nats://127.0.0.1:4710" {
			tb.Errorf("redis %q nats %q", Redis(tb), NATS(tb))
		}
		s = Stack(tb)
	})
	if r.outcome != "passed" {
		t.Fatalf("%s: %s", r.outcome, r.msg)
	}
	want := StackEnv{APIURL: "http://127.0.0.1:8710", APIKey: "key", AdminKey: "admin", Sources: "kiln-sources", Outputs: "outs",
		RedisAddr: "127.0.0.1:6710", RedisPassword: "rpw", NATSURL: "nats://127.0.0.1:4710"}
	want.S3.Endpoint, want.S3.AccessKey, want.S3.SecretKey = "127.0.0.1:9710", "ak", "sk"
	if s != want {
		t.Fatalf("Stack = %+v, want %+v", s, want)
	}
}

// TestPolicyRealTest runs a test of this binary that needs a missing binary,
// with the real testing package: it must FAIL with services required and
// SKIP without.
func TestPolicyRealTest(t *testing.T) {
	for _, required := range []bool{true, false} {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestPolicyHelper$", "-test.v", "-test.count=1")
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, RequireServicesEnv+"=") })
		cmd.Env = append(cmd.Env, "KILN_TESTENV_HELPER=1")
		if required {
			cmd.Env = append(cmd.Env, RequireServicesEnv+"=1")
		}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case required && !(errors.As(err, &ee) && strings.Contains(string(out), "--- FAIL: TestPolicyHelper")):
			t.Errorf("required: %v, want a failed test:\n%s", err, out)
		case !required && (err != nil || !strings.Contains(string(out), "--- SKIP: TestPolicyHelper")):
			t.Errorf("by hand: %v, want a skipped test:\n%s", err, out)
		case !strings.Contains(string(out), "kiln-testenv-no-such-binary not found in PATH"):
			t.Errorf("required %v: output does not name the missing binary:\n%s", required, out)
		}
	}
}

// TestPolicyHelper is the test TestPolicyRealTest runs in a subprocess;
// anywhere else it does nothing (and does not skip, so a run of the suite
// shows no skip for it).
func TestPolicyHelper(t *testing.T) {
	if os.Getenv("KILN_TESTENV_HELPER") != "1" {
		return
	}
	RequireBinaries(t, "kiln-testenv-no-such-binary")
	t.Log("RequireBinaries returned although the binary is missing")
}

// TestClipArgs: the generated command of a few specs, exactly.
func TestClipArgs(t *testing.T) {
	pre := "-hide_banner -nostdin -v error -y "
	tests := []struct {
		spec ClipSpec
		want string
	}{
		{ClipSpec{}, "-f lavfi -i testsrc2=s=320x180:r=30:d=2 -f lavfi -i sine=f=440:d=2 " +
			"-c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -shortest out.mp4"},
		{ClipSpec{Seconds: 4, Width: 640, Height: 360, Rate: "30000/1001", SampleRate: 44100, Audio: []string{"-c:a", "aac", "-ac", "1"}},
			"-f lavfi -i testsrc2=s=640x360:r=30000/1001:d=4 -f lavfi -i sine=f=440:sample_rate=44100:d=4 " +
				"-c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -ac 1 -shortest out.mp4"},
		{ClipSpec{Source: "color=c=blue", Width: 8200, Height: 64, Rate: "1", Seconds: 1, NoAudio: true},
			"-f lavfi -i color=c=blue:s=8200x64:r=1:d=1 -c:v libx264 -preset ultrafast -pix_fmt yuv420p out.mp4"},
		{ClipSpec{Frames: 1, NoAudio: true, Video: []string{"-c:v", "libx264", "-pix_fmt", "yuv420p"}},
			"-f lavfi -i testsrc2=s=320x180:r=30 -c:v libx264 -pix_fmt yuv420p -frames:v 1 out.mp4"},
		{ClipSpec{NoVideo: true, Tone: 500, Seconds: 3.5}, "-f lavfi -i sine=f=500:d=3.5 -c:a aac out.mp4"},
		{ClipSpec{Seconds: 7, ExtraArgs: []string{"-g", "60"}}, "-f lavfi -i testsrc2=s=320x180:r=30:d=7 -f lavfi -i sine=f=440:d=7 " +
			"-c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -g 60 -shortest out.mp4"},
	}
	for _, tt := range tests {
		if got := strings.Join(tt.spec.Args("out.mp4"), " "); got != pre+tt.want {
			t.Errorf("%+v:\n got %s\nwant %s", tt.spec, got, pre+tt.want)
		}
	}
}

// TestClip generates a rotated clip with ffmpeg and checks what ffprobe
// sees.
func TestClip(t *testing.T) {
	RequireBinaries(t, "ffprobe")
	clip := Clip(t, ClipSpec{Name: "r.mp4", Seconds: 1, Width: 160, Height: 90, Rotate: 90})
	if filepath.Base(clip) != "r.mp4" {
		t.Errorf("clip %s, want r.mp4", clip)
	}
	out, err := exec.CommandContext(t.Context(), "ffprobe", "-v", "error", "-show_entries",
		"stream=codec_name,width,height:stream_side_data=rotation", "-of", "json", clip).Output()
	if err != nil {
		t.Fatal(err)
	}
	var probe struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
			SideData  []struct {
				Rotation int `json:"rotation"`
			} `json:"side_data_list"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range probe.Streams {
		g := fmt.Sprintf("%s %dx%d", st.CodecName, st.Width, st.Height)
		for _, sd := range st.SideData {
			g += fmt.Sprintf(" rotation %d", sd.Rotation)
		}
		got = append(got, g)
	}
	// ffprobe 5.1 prints 90; older builds print -90.
	if g := strings.Join(got, ", "); g != "h264 160x90 rotation 90, aac 0x0" && g != "h264 160x90 rotation -90, aac 0x0" {
		t.Errorf("streams %s, want h264 160x90 rotated 90 and aac", g)
	}
}

// TestBuildKilnFromEnv: KILN_BIN is used as is, without building.
func TestBuildKilnFromEnv(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(KilnBinEnv, sh)
	if got := BuildKiln(t); got != sh {
		t.Fatalf("BuildKiln = %s, want %s", got, sh)
	}
	t.Setenv(KilnBinEnv, filepath.Join(t.TempDir(), "none"))
	if r := run(t, func(tb testing.TB) { BuildKiln(tb) }); r.outcome != "fatal" || !strings.Contains(r.msg, KilnBinEnv) {
		t.Fatalf("missing KILN_BIN: %s %q, want fatal", r.outcome, r.msg)
	}
}
