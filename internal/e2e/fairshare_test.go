package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestFairShareTenants is the starvation test on the real stack: tenant A
// uploads 12 videos, then tenant B uploads 1, while the fleet (two
// transcode slots) works through A's. In one FIFO queue B's transcode
// would start after A's 12; it starts at the next free slot instead, ahead
// of the A uploads still waiting.
func TestFairShareTenants(t *testing.T) {
	s := needStack(t)
	if s.AdminKey == "" {
		testenv.Missing(t, "no admin key: KILN_TEST_ADMIN_KEY not set")
	}
	bin := testenv.BuildKiln(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	admin := func(args ...string) string {
		t.Helper()
		out, stderr, code := cliRun(ctx, t, bin, s.APIURL, s.AdminKey, args...)
		if code != 0 {
			t.Fatalf("kiln %v: exit %d\n%s", args, code, stderr)
		}
		return strings.TrimSpace(out)
	}
	a, b := s, s
	a.APIKey = admin("keys", "create", admin("tenants", "create", "fair-a"), "--name", "fair")
	b.APIKey = admin("keys", "create", admin("tenants", "create", "fair-b"), "--name", "fair")

	clip := makeClip(t, "fair.mp4", 6, "640x360")
	type upload struct{ name, jobID string }
	var ups []upload
	send := func(st stack, name string) {
		t.Helper()
		code, up, e := st.uploadMultipart(t, clip, "")
		if code != http.StatusAccepted {
			t.Fatalf("upload %s: %d %+v", name, code, e)
		}
		ups = append(ups, upload{name: name, jobID: up.JobID})
	}
	const n = 12
	for i := range n {
		send(a, fmt.Sprintf("A%02d", i))
	}
	send(b, "B")

	starts := map[string]time.Time{}
	for i, u := range ups {
		st := a
		if i == n {
			st = b
		}
		j := st.waitState(t, u.jobID, jobTimeout, "ready", "failed")
		if j.State != "ready" {
			t.Fatalf("%s: %s %+v", u.name, j.State, j.Error)
		}
		if starts[u.name] = j.Timestamps["transcoding"]; starts[u.name].IsZero() {
			t.Fatalf("%s: no transcoding timestamp: %v", u.name, j.Timestamps)
		}
	}
	order := slices.Clone(ups)
	slices.SortFunc(order, func(x, y upload) int { return starts[x.name].Compare(starts[y.name]) })
	var names []string
	for _, u := range order {
		names = append(names, fmt.Sprintf("%s@%.1fs", u.name, starts[u.name].Sub(starts[order[0].name]).Seconds()))
	}
	t.Logf("transcodes started: %s", strings.Join(names, " "))
	at := slices.IndexFunc(order, func(u upload) bool { return u.name == "B" })
	if overtaken := n - at; overtaken < n/2 {
		t.Fatalf("B's transcode started %d-th of %d: it overtook %d of A's %d earlier uploads, want at least %d (fair turns, not first in first out)",
			at+1, n+1, overtaken, n, n/2)
	}
}
