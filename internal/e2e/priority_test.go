package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPriorityOrder is the priority test on the real stack: six low
// uploads, then one high, while the fleet (two transcode slots) is busy
// with the first lows. The high upload's transcode starts before the lows
// still waiting — it overtakes them, rather than taking its turn in upload
// order — and each job reports the priority it was uploaded with.
func TestPriorityOrder(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "priority.mp4", 8, "640x360")
	type upload struct{ name, priority, jobID string }
	var ups []upload
	send := func(name, priority string) {
		t.Helper()
		code, up, e := s.uploadMultipart(t, clip, "?priority="+priority)
		if code != http.StatusAccepted {
			t.Fatalf("upload %s: %d %+v", name, code, e)
		}
		ups = append(ups, upload{name: name, priority: priority, jobID: up.JobID})
	}
	for i := range 6 {
		send(fmt.Sprintf("low%d", i), "low")
	}
	send("high", "high")

	starts := map[string]time.Time{}
	for _, u := range ups {
		j := s.waitState(t, u.jobID, jobTimeout, "ready", "failed")
		if j.State != "ready" {
			t.Fatalf("%s: %s %+v", u.name, j.State, j.Error)
		}
		var p struct {
			Priority string `json:"priority"`
		}
		if s.do(t, http.MethodGet, "/v1/jobs/"+u.jobID, nil, "", &p); p.Priority != u.priority {
			t.Errorf("%s: job priority %q, want %q", u.name, p.Priority, u.priority)
		}
		starts[u.name] = j.Timestamps["transcoding"]
		if starts[u.name].IsZero() {
			t.Fatalf("%s: no transcoding timestamp: %v", u.name, j.Timestamps)
		}
	}
	order := slices.Clone(ups)
	slices.SortFunc(order, func(a, b upload) int { return starts[a.name].Compare(starts[b.name]) })
	var names []string
	for _, u := range order {
		names = append(names, fmt.Sprintf("%s@%.1fs", u.name, starts[u.name].Sub(starts[order[0].name]).Seconds()))
	}
	t.Logf("transcodes started: %s", strings.Join(names, " "))

	// In upload order (first in, first out) the high upload would start
	// last; it overtakes the lows still waiting when its probe handed it
	// over.
	high := ups[len(ups)-1]
	overtaken := 0
	for _, u := range ups[:len(ups)-1] {
		if starts[u.name].After(starts[high.name]) {
			overtaken++
		}
	}
	if overtaken < 2 {
		t.Fatalf("the high upload overtook %d of the 6 low ones uploaded before it, want at least 2 (the fleet was busy with 2)", overtaken)
	}
}
