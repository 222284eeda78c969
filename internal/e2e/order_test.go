package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// adminCLI returns a runner of the kiln CLI with the stack's admin key
// (the tenant and key API), failing the test on a non-zero exit; it
// returns the command's stdout, trimmed.
func adminCLI(t *testing.T, s stack) func(args ...string) string {
	t.Helper()
	if s.AdminKey == "" {
		testenv.Missing(t, "no admin key: KILN_TEST_ADMIN_KEY not set")
	}
	bin := testenv.BuildKiln(t)
	return func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		out, stderr, code := cliRun(ctx, t, bin, s.APIURL, s.AdminKey, args...)
		if code != 0 {
			t.Fatalf("kiln %v: exit %d\n%s", args, code, stderr)
		}
		return strings.TrimSpace(out)
	}
}

// queuedJob is an upload whose transcode's start a test compares; by is
// the stack (the key) that uploaded it.
type queuedJob struct {
	name, jobID string
	by          stack
}

// waitAllWaiting waits until the transcode of every one of jobs (of
// tenant) has been handed to admission: started (a transcoding timestamp)
// or waiting for a slot (kiln_admission_waiting_tasks{tenant} on
// /metrics). An order test uploads its late job only then, so that what it
// is to overtake is really waiting, however fast the fleet encodes and
// however slowly the uploads and probes before it went.
func waitAllWaiting(t *testing.T, s stack, tenant string, jobs []queuedJob) {
	t.Helper()
	waitingRE := regexp.MustCompile(`(?m)^kiln_admission_waiting_tasks\{[^}]*tenant="` + regexp.QuoteMeta(tenant) + `"[^}]*\} (\d+)$`)
	deadline := time.Now().Add(jobTimeout)
	for {
		started := 0
		for _, q := range jobs {
			var j apiJob
			if q.by.do(t, http.MethodGet, "/v1/jobs/"+q.jobID, nil, "", &j); !j.Timestamps["transcoding"].IsZero() {
				started++
			}
		}
		waiting := 0
		resp, err := http.Get(s.APIURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range waitingRE.FindAllSubmatch(text, -1) {
			n, _ := strconv.Atoi(string(m[1]))
			waiting += n
		}
		if started+waiting >= len(jobs) {
			t.Logf("%d of %d transcodes started, %d waiting for admission", started, len(jobs), waiting)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d of %d transcodes started, %d waiting", jobTimeout, started, len(jobs), waiting)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// transcodeOrder waits until every job is ready and returns their names in
// the order their transcodes started (the jobs' transcoding timestamps),
// and logs that order with each start's offset from the first.
func transcodeOrder(t *testing.T, jobs []queuedJob) []string {
	t.Helper()
	starts := map[string]time.Time{}
	for _, q := range jobs {
		j := q.by.waitState(t, q.jobID, jobTimeout, "ready", "failed")
		if j.State != "ready" {
			t.Fatalf("%s: %s %+v", q.name, j.State, j.Error)
		}
		if starts[q.name] = j.Timestamps["transcoding"]; starts[q.name].IsZero() {
			t.Fatalf("%s: no transcoding timestamp: %v", q.name, j.Timestamps)
		}
	}
	var order []string
	for _, q := range jobs {
		order = append(order, q.name)
	}
	slices.SortStableFunc(order, func(a, b string) int { return starts[a].Compare(starts[b]) })
	var shown []string
	for _, n := range order {
		shown = append(shown, fmt.Sprintf("%s@%.1fs", n, starts[n].Sub(starts[order[0]]).Seconds()))
	}
	t.Logf("transcodes started: %s", strings.Join(shown, " "))
	return order
}
