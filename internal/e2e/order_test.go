package e2e

import (
	"context"
	"fmt"
	"slices"
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
