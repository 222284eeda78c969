package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// proc is a kiln process the test started.
type proc struct {
	cmd *exec.Cmd
	log string
}

func startKiln(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.BuildKiln(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			t.Logf("%s log (tail):\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return p
}

// ffmpegParent returns the pid of the process that runs ffmpeg for jobID.
func ffmpegParent(jobID string) (ffmpegPID, parent int, ok bool) {
	out, _ := exec.Command("pgrep", "-f", "ffmpeg.*"+jobID).Output()
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may contain spaces, so cut at ')'.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
		fields := strings.Fields(rest)
		if len(fields) > 1 {
			ppid, _ := strconv.Atoi(fields[1])
			return pid, ppid, true
		}
	}
	return 0, 0, false
}

// TestWorkerKilledMidTranscode: a worker killed with -9 while encoding takes
// its ffmpeg with it; the task is recovered and finished by another worker;
// the outputs have exactly one copy of each rendition; the next worker
// started on the host removes the dead worker's temp folder.
func TestWorkerKilledMidTranscode(t *testing.T) {
	s := needStack(t)
	if s.RedisAddr == "" {
		t.Fatal("KILN_TEST_REDIS_ADDR is required")
	}
	t.Parallel() // mostly waiting for asynq's lease recovery
	work := t.TempDir()
	outputs := "kiln-crash-outputs"
	httpAddr, natsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	env := isolatedEnv(s, "crash", 3, work, httpAddr, natsAddr)
	// A serve process without workers (API, intake, catalog, NATS), and two
	// workers: whichever takes the transcode is killed.
	startKiln(t, "serve", append(env, "KILN_CONCURRENCY=0"), "serve")
	waitReady(t, "http://"+httpAddr)
	w1 := startKiln(t, "worker1", append(env, "KILN_CONCURRENCY=1", "KILN_HTTP_ADDR="+testenv.FreeAddr(t)), "worker")
	w2 := startKiln(t, "worker2", append(env, "KILN_CONCURRENCY=1", "KILN_HTTP_ADDR="+testenv.FreeAddr(t)), "worker")

	api := stack{APIURL: "http://" + httpAddr, APIKey: isolatedKey("crash")}
	clip := makeClip(t, "long.mp4", 20, "640x360")
	code, up, e := api.upload(t, openFile(t, clip), "video/mp4", "?filename=long.mp4")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, e)
	}

	// Wait for the encode to run, then kill its worker with -9.
	var ffPID, victim int
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var ok bool
		if ffPID, victim, ok = ffmpegParent(up.JobID); ok && (victim == w1.cmd.Process.Pid || victim == w2.cmd.Process.Pid) {
			if out, _ := exec.Command("ps", "-o", "args=", "-p", strconv.Itoa(ffPID)).Output(); strings.Contains(string(out), "split=") {
				break // the transcode, not the probe
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the transcode never started on a test worker")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // mid-encode: partial files exist in its temp dir
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*proc{w1, w2} { // reap it, as init would
		if w.cmd.Process.Pid == victim {
			_ = w.cmd.Wait()
		}
	}
	t.Logf("killed worker %d (ffmpeg %d) mid-transcode", victim, ffPID)
	gone := time.Now().Add(5 * time.Second)
	for syscall.Kill(ffPID, 0) == nil {
		if time.Now().After(gone) {
			t.Fatalf("ffmpeg %d outlived its worker", ffPID)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The other worker finishes the job once the lease of the dead one
	// expires (asynq: lease 30 s, recovery within about a minute more).
	job := api.waitJob(t, up.JobID, 4*time.Minute)
	if job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}
	var asset assetView
	api.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset)
	decode(t, asset.Playback.HLS, "-map", "0")

	// Deterministic keys: one playlist per rendition (the rungs and the
	// audio), at most the one MP4 download (built after READY), whatever
	// the dead worker had stored.
	objects, err := objstore.New(s.S3)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := objects.List(t.Context(), outputs, "assets/"+up.AssetID+"/")
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, o := range infos {
		switch {
		case strings.Contains(o.Key, "/mp4/"):
			counts["mp4"]++
		case strings.HasSuffix(o.Key, "/index.m3u8"):
			counts["playlist"]++
		}
	}
	if counts["mp4"] > 1 || counts["playlist"] != len(asset.Renditions) {
		t.Errorf("outputs: %v for %d renditions (%d objects)", counts, len(asset.Renditions), len(infos))
	}

	// A worker started afterwards cleans the dead worker's temp folder.
	dead := filepath.Join(work, "tmp", fmt.Sprintf("kiln-%d", victim))
	startKiln(t, "worker3", append(env, "KILN_CONCURRENCY=1", "KILN_HTTP_ADDR="+testenv.FreeAddr(t)), "worker")
	cleaned := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(dead); os.IsNotExist(err) {
			break
		}
		if time.Now().After(cleaned) {
			t.Fatalf("the dead worker's temp dir %s is still there", dead)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// isolatedEnv is the environment of a kiln the test starts itself, beside
// the shared stack: its own Redis database, NATS (embedded on natsAddr by
// serve, which creates the user worker; workers connect as it),
// buckets named kiln-<name>-sources/-outputs (no bucket notifications),
// SQLite file and work dir under work, and the API key isolatedKey(name).
func isolatedEnv(s stack, name string, redisDB int, work, httpAddr, natsAddr string) []string {
	return []string{
		"KILN_HTTP_ADDR=" + httpAddr, "KILN_API_KEYS=" + isolatedKey(name),
		"KILN_REDIS_ADDR=" + s.RedisAddr, "KILN_REDIS_PASSWORD=" + s.RedisPassword, fmt.Sprintf("KILN_REDIS_DB=%d", redisDB),
		"KILN_NATS_URL=nats://" + natsAddr, "KILN_NATS_LISTEN=" + natsAddr, "KILN_NATS_STORE_DIR=" + filepath.Join(work, "nats"),
		"KILN_NATS_WORKER_PASSWORD=" + name + "-nats-worker-password", "KILN_NATS_USER=" + bus.UserWorker,
		"KILN_NATS_PASSWORD=" + name + "-nats-worker-password",
		"KILN_S3_ENDPOINT=" + s.S3.Endpoint, "KILN_S3_ACCESS_KEY=" + s.S3.AccessKey, "KILN_S3_SECRET_KEY=" + s.S3.SecretKey,
		"KILN_SOURCES_BUCKET=kiln-" + name + "-sources", "KILN_OUTPUTS_BUCKET=kiln-" + name + "-outputs", "KILN_S3_NOTIFY_ARN=",
		"KILN_DATABASE=" + filepath.Join(work, "kiln.db"), "KILN_WORK_DIR=" + filepath.Join(work, "tmp"),
		"KILN_PLAYBACK_SIGNING_KEY=" + name + "-test-signing-key-0123456789",
	}
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready", base)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// isolatedKey is the API key of the kiln isolatedEnv configures (at least
// httpapi.MinKeyLength characters).
func isolatedKey(name string) string { return "kiln_" + name + "_key_0123456789abcdef" }
