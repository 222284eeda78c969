package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// cliRun runs the kiln client with the API URL and key in its environment.
func cliRun(ctx context.Context, t *testing.T, bin, apiURL, apiKey string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	env := []string{"KILN_API_URL=" + apiURL, "KILN_API_KEY=" + apiKey}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KILN_API_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("kiln %v: %v", args, err)
	}
	t.Logf("kiln %s → exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// TestCLI drives the pipeline with the kiln client the way a script does:
// upload --wait prints the job id then a playable HLS URL, job prints the
// job JSON, a wrong key exits 3 with the API's error code.
func TestCLI(t *testing.T) {
	s := needStack(t)
	bin := testenv.BuildKiln(t)
	clip := makeClip(t, "cli clip.mp4", 3, "320x180")

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	stdout, stderr, code := cliRun(ctx, t, bin, s.APIURL, s.APIKey, "upload", clip, "--wait")
	if code != 0 {
		t.Fatalf("kiln upload --wait: exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) < 2 {
		t.Fatalf("stdout %q: want the job id, then the HLS URL", stdout)
	}
	jobID, hls := lines[0], lines[len(lines)-1]
	if !strings.HasPrefix(jobID, "job_") {
		t.Fatalf("first line %q is not a job id", jobID)
	}
	if !strings.HasPrefix(hls, "http") || !strings.Contains(hls, "/master.m3u8") {
		t.Fatalf("last line %q is not an HLS URL", hls)
	}
	if !strings.Contains(stderr, "uploaded ") || !strings.Contains(stderr, "ready") {
		t.Fatalf("stderr lacks the upload summary or the final state:\n%s", stderr)
	}
	decode(t, hls)

	stdout, _, code = cliRun(ctx, t, bin, s.APIURL, s.APIKey, "job", jobID)
	if code != 0 {
		t.Fatalf("kiln job: exit %d", code)
	}
	var job jobView
	if err := json.Unmarshal([]byte(stdout), &job); err != nil {
		t.Fatalf("kiln job printed no JSON: %v\n%s", err, stdout)
	}
	if job.ID != jobID || job.State != "ready" {
		t.Fatalf("job %s state %q, want %s ready", job.ID, job.State, jobID)
	}
	if !strings.Contains(stdout, "\n  \"state\": \"ready\"") {
		t.Fatalf("kiln job output is not indented JSON:\n%s", stdout)
	}

	// The list endpoint may not exist on an older server: only check the
	// table when it does.
	if c := s.do(t, http.MethodGet, "/v1/jobs?limit=1", nil, "", nil); c == http.StatusOK {
		stdout, _, code = cliRun(ctx, t, bin, s.APIURL, s.APIKey, "jobs", "--state", "ready", "--limit", "5")
		if code != 0 || !strings.HasPrefix(stdout, "ID ") || !strings.Contains(stdout, "ready") {
			t.Fatalf("kiln jobs: exit %d\n%s", code, stdout)
		}
	} else {
		t.Logf("GET /v1/jobs answers %d: kiln jobs not checked", c)
	}

	for _, args := range [][]string{{"job", jobID}, {"upload", clip}} {
		stdout, stderr, code = cliRun(ctx, t, bin, s.APIURL, "kiln_wrong_key", args...)
		if code != 3 || !strings.Contains(stderr, "unauthorized") || stdout != "" {
			t.Fatalf("kiln %s with a wrong key: exit %d, stderr %q; want 3 and unauthorized", args[0], code, stderr)
		}
		if strings.Contains(stderr, "kiln_wrong_key") {
			t.Fatal("the key shows up on stderr")
		}
	}
	stdout, stderr, code = cliRun(ctx, t, bin, s.APIURL, s.APIKey, "job", "job_doesnotexist0000000000")
	if code != 3 || stdout != "" || !strings.Contains(stderr, "kiln: ") {
		t.Fatalf("kiln job of an unknown job: exit %d, stderr %q; want 3", code, stderr)
	}
}
