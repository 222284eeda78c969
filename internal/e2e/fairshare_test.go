package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// TestFairShareTenants is the starvation test on the real stack: tenant A
// uploads 12 videos and, once all 12 transcodes run or wait for a slot,
// tenant B uploads 1, while the fleet (two transcode slots) works through
// A's. In one FIFO queue B's transcode
// would start after A's 12; it starts at the next free slot instead, ahead
// of the A uploads still waiting.
func TestFairShareTenants(t *testing.T) {
	s := needStack(t)
	admin := adminCLI(t, s)
	a, b := s, s
	tenA := admin("tenants", "create", "fair-a")
	a.APIKey = admin("keys", "create", tenA, "--name", "fair")
	b.APIKey = admin("keys", "create", admin("tenants", "create", "fair-b"), "--name", "fair")

	clip := makeClip(t, "fair.mp4", 6, "640x360")
	var jobs []queuedJob
	send := func(by stack, name string) {
		t.Helper()
		code, up, e := by.uploadMultipart(t, clip, "")
		if code != http.StatusAccepted {
			t.Fatalf("upload %s: %d %+v", name, code, e)
		}
		jobs = append(jobs, queuedJob{name: name, jobID: up.JobID, by: by})
	}
	const n = 12
	for i := range n {
		send(a, fmt.Sprintf("A%02d", i))
	}
	waitAllWaiting(t, s, tenA, jobs)
	send(b, "B")
	order := transcodeOrder(t, jobs)
	if overtaken := n - slices.Index(order, "B"); overtaken < n/2 {
		t.Fatalf("B's transcode started after %d of A's %d earlier uploads: it overtook %d, want at least %d (fair turns, not first in, first out)",
			n-overtaken, n, overtaken, n/2)
	}
}
