package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestQuotas on the real stack: the admin gives a tenant a limit of one
// concurrent job (kiln tenants quotas); its second upload while the first
// runs is refused 429 concurrency_limit (Retry-After) and makes no job, and
// so is the retry of its failed job; once the first is ready the slot
// comes back within the catalog's usage pass (the retry takes it, then
// the next upload); kiln usage shows the tenant's figures; a stored_bytes limit just
// above its usage refuses the next clip 403 quota_exceeded; /metrics
// reports the usage and the refusals per tenant.
func TestQuotas(t *testing.T) {
	s := needStack(t)
	admin := adminCLI(t, s)
	ten := admin("tenants", "create", "quota")
	a := s
	a.APIKey = admin("keys", "create", ten, "--name", "ci")
	admin("tenants", "quotas", ten, "--concurrent-jobs", "1")

	// A job that fails (not a video), to retry while the slot is taken.
	const junk = "this is not a video"
	code, broken, bad := a.upload(t, strings.NewReader(junk), "video/mp4", "?filename=junk.mp4")
	if code != http.StatusAccepted {
		t.Fatalf("junk upload: %d %+v", code, bad)
	}
	if j := a.waitJob(t, broken.JobID, jobTimeout); j.State != "failed" {
		t.Fatalf("junk job: %s", j.State)
	}

	clip := makeClip(t, "quota.mp4", 2, "320x180")
	// uploadWhenFree uploads the clip as soon as the tenant's slot is
	// free: within a usage pass (2 s) of the job that held it ending.
	uploadWhenFree := func(what string) uploadResponse {
		t.Helper()
		start := time.Now()
		for {
			code, up, bad := a.uploadFile(t, clip)
			if code == http.StatusAccepted {
				t.Logf("%s: the slot was free %s after the job that held it ended", what, time.Since(start).Round(10*time.Millisecond))
				return up
			}
			if code != http.StatusTooManyRequests || time.Since(start) > 30*time.Second {
				t.Fatalf("%s: %d %+v (%s after the job that held the slot ended)", what, code, bad, time.Since(start))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	first := uploadWhenFree("first upload, after the junk failed")
	code, _, bad = a.uploadFile(t, clip)
	if code != http.StatusTooManyRequests || bad.Error.Code != "concurrency_limit" {
		t.Fatalf("second upload while the first runs: %d %+v, want 429 concurrency_limit", code, bad)
	}
	retry := func() (int, apiError) {
		var e apiError
		return a.do(t, http.MethodPost, "/v1/jobs/"+broken.JobID+"/retry", nil, "", &e), e
	}
	if code, e := retry(); code != http.StatusTooManyRequests || e.Error.Code != "concurrency_limit" {
		t.Fatalf("retry while the first runs: %d %+v, want 429 concurrency_limit", code, e)
	}
	if j := a.waitJob(t, first.JobID, jobTimeout); j.State != "ready" {
		t.Fatalf("first job: %s", j.State)
	}
	var page struct {
		Jobs []apiJob `json:"jobs"`
	}
	if code := a.do(t, http.MethodGet, "/v1/jobs", nil, "", &page); code != http.StatusOK || len(page.Jobs) != 2 {
		t.Fatalf("the tenant lists %d jobs (%d), want the junk and the first: the refused upload made none", len(page.Jobs), code)
	}
	// The slot comes back at the next usage pass: the retry takes it.
	readyAt := time.Now()
	for {
		code, e := retry()
		if code == http.StatusAccepted {
			break
		}
		if code != http.StatusTooManyRequests || time.Since(readyAt) > 30*time.Second {
			t.Fatalf("retry after the first job is ready: %d %+v (%s after ready)", code, e, time.Since(readyAt))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("retry: the slot was free %s after the first job was ready", time.Since(readyAt).Round(10*time.Millisecond))
	if j := a.waitJob(t, broken.JobID, jobTimeout); j.State != "failed" || j.Attempt != 2 {
		t.Fatalf("retried junk job: %s, attempt %d", j.State, j.Attempt)
	}
	second := uploadWhenFree("second upload, after the retried junk failed again")
	if j := a.waitJob(t, second.JobID, jobTimeout); j.State != "ready" {
		t.Fatalf("second job: %s", j.State)
	}

	// kiln usage, as the tenant: two clips stored, their minutes encoded.
	bin := testenv.BuildKiln(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, stderr, rc := cliRun(ctx, t, bin, a.APIURL, a.APIKey, "usage")
	if rc != 0 {
		t.Fatalf("kiln usage: exit %d: %s", rc, stderr)
	}
	fi, err := os.Stat(clip)
	if err != nil {
		t.Fatal(err)
	}
	stored := strconv.FormatInt(2*fi.Size()+int64(len(junk)), 10)
	if !regexp.MustCompile(`concurrent jobs\s+[01]\s+1\n`).MatchString(out) ||
		!regexp.MustCompile(`stored bytes\s+`+stored+`\s+no limit\n`).MatchString(out) ||
		!regexp.MustCompile(`encoded minutes this month\s+0\.0[5-9]\s+no limit\n`).MatchString(out) {
		t.Errorf("kiln usage:\n%s\nwant 1 concurrent job allowed, %s bytes stored, about 4 s (0.07 min) encoded", out, stored)
	}
	t.Logf("kiln usage:\n%s", out)

	// A stored_bytes limit just above the usage: the next clip passes it.
	limit := 2*fi.Size() + int64(len(junk)) + 100
	admin("tenants", "quotas", ten, "--concurrent-jobs", "1", "--stored-bytes", strconv.FormatInt(limit, 10))
	// Until the usage pass has seen the second job ready, the upload may
	// still count its slot (429), and the bytes may not count the second
	// clip yet: within a pass, it is 403.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, _, bad = a.uploadFile(t, clip)
		if code == http.StatusForbidden && bad.Error.Code == "quota_exceeded" && strings.Contains(bad.Error.Message, "stored_bytes") {
			break
		}
		if code != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("upload over stored_bytes: %d %+v, want 403 quota_exceeded", code, bad)
		}
	}

	resp, err := http.Get(s.APIURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kiln_tenant_usage{quota="stored_bytes",tenant="` + ten + `"} ` + stored,
		`kiln_tenant_quota_limit{quota="stored_bytes",tenant="` + ten + `"} ` + strconv.FormatInt(limit, 10),
	} {
		if !strings.Contains(string(text), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, q := range []string{"concurrent_jobs", "stored_bytes"} {
		if !regexp.MustCompile(`kiln_quota_refusals_total\{quota="` + q + `",tenant="` + ten + `"\} [1-9]`).Match(text) {
			t.Errorf("/metrics counts no %s refusal of the tenant", q)
		}
	}
}
