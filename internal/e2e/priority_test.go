package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
)

// TestPriorityOrder is the priority test on the real stack: six low
// uploads, then one high, while the fleet (two transcode slots) is busy
// with the first lows. The high upload's transcode starts before the lows
// still waiting — it overtakes them, rather than taking its turn in upload
// order — and each job reports the priority it was uploaded with.
func TestPriorityOrder(t *testing.T) {
	s := needStack(t)
	// The clip is long enough that two lows still wait when the high one
	// is probed, on a fast machine too: its upload and probe come after six
	// others, on cores the first lows' encodes keep busy (an 8 s clip let
	// the lows finish first). Under 30 s, the stack's chunk threshold.
	clip := makeClip(t, "priority.mp4", 20, "640x360")
	var jobs []queuedJob
	priorities := map[string]string{}
	send := func(name, priority string) {
		t.Helper()
		code, up, e := s.uploadMultipart(t, clip, "?priority="+priority)
		if code != http.StatusAccepted {
			t.Fatalf("upload %s: %d %+v", name, code, e)
		}
		jobs = append(jobs, queuedJob{name: name, jobID: up.JobID, by: s})
		priorities[up.JobID] = priority
	}
	for i := range 6 {
		send(fmt.Sprintf("low%d", i), "low")
	}
	send("high", "high")
	order := transcodeOrder(t, jobs)
	for _, q := range jobs {
		var p struct {
			Priority string `json:"priority"`
		}
		if s.do(t, http.MethodGet, "/v1/jobs/"+q.jobID, nil, "", &p); p.Priority != priorities[q.jobID] {
			t.Errorf("%s: job priority %q, want %q", q.name, p.Priority, priorities[q.jobID])
		}
	}
	// In upload order (first in, first out) the high upload would start
	// last; it overtakes the lows still waiting when its probe handed it
	// over.
	if overtaken := len(order) - 1 - slices.Index(order, "high"); overtaken < 2 {
		t.Fatalf("the high upload overtook %d of the 6 low ones uploaded before it, want at least 2 (the fleet was busy with 2)", overtaken)
	}
}
