package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestFleet runs kiln as a fleet: one ingest, two workers and two catalog
// replicas, separate processes on one PostgreSQL. Jobs go through both
// catalogs (they share the durable consumer of job events); an event
// stream on catalog B follows every job, whichever replica applied its
// events; a webhook receiver that dedupes by webhook-id sees every event
// once; and a kill -9 of catalog A mid-run loses nothing. It runs under
// `go tool task test` (on the test stack's PostgreSQL) and with the fault
// suite.
func TestFleet(t *testing.T) {
	if os.Getenv(EnableEnv) != "1" && !testenv.Required() {
		t.Skipf("the fleet test runs with %s=1 (`go tool task faults`) and under `go tool task test`", EnableEnv)
	}
	c := startCluster(t, clusterConfig{catalogs: 2, database: testenv.Postgres(t), env: webhookEnv})
	b, a := c.catalogURLs[0], c.catalogURLs[1] // b serves the streams and the suite's reads; a is killed
	catalogA := c.catalogs[1]

	h := &hookReceiver{addr: testenv.FreePort(t), attempts: map[string]int{}, events: map[string]hookBody{}}
	if err := h.up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.srv.Close() })
	var ep struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	body := fmt.Sprintf(`{"url":%q,"event_types":["job.created","job.ready","job.failed"]}`, "http://"+h.addr+"/hooks")
	if _, err := c.api(t.Context(), http.MethodPost, a+"/v1/webhooks", strings.NewReader(body), "application/json", &ep); err != nil {
		t.Fatalf("register webhook on catalog A: %v", err)
	}
	h.mu.Lock()
	h.secret = ep.Secret
	h.mu.Unlock()

	// Phase 1, both catalogs up: every job's stream on B must hear the job
	// end as soon as either replica applied it.
	streams := &streamWatch{c: c, base: b, ended: map[string]time.Time{}}
	t0 := time.Now()
	first := c.submit(small, true)
	for _, j := range first {
		streams.follow(j.id)
	}
	last, _ := c.waitTerminal(first, recoverTimeout)
	streams.wait(first, 10*time.Second)
	appliedA, appliedB := c.applied(catalogA), c.applied(c.catalogs[0])
	t.Logf("phase 1: %d jobs in %s; job events applied by catalog A: %d, by catalog B: %d",
		len(first), time.Since(t0).Round(time.Millisecond), appliedA, appliedB)
	if appliedA == 0 || appliedB == 0 {
		t.Errorf("the catalogs do not share the job events: A applied %d, B %d", appliedA, appliedB)
	}
	var worstLag time.Duration
	for _, j := range first {
		times, _ := c.jobTimes(t.Context(), b, j.id)
		end, ok := times[last[j.id].State]
		heard, heardOK := streams.endedAt(j.id)
		switch {
		case !ok:
			t.Errorf("job %s has no %s timestamp", j.id, last[j.id].State)
		case !heardOK:
			t.Errorf("the event stream on catalog B never told job %s ended", j.id)
		default:
			lag := heard.Sub(end)
			worstLag = max(worstLag, lag)
			// A replica's streams look again at every heartbeat (15 s);
			// without the change notices, a job A finished would wait for it.
			if lag > 3*time.Second {
				t.Errorf("the event stream on catalog B told job %s ended %s after it did", j.id, lag.Round(time.Millisecond))
			}
		}
	}
	t.Logf("event streams on catalog B: the worst delay between a job's end and its stream telling it: %s", worstLag.Round(time.Millisecond))

	// Phase 2: kill -9 catalog A mid-run.
	second := c.submit(small, false)
	c.waitState(second, 2*time.Minute, "transcoding", "packaging")
	catalogA.Kill()
	tKill := time.Now()
	t.Log("killed catalog A with -9 mid-run")
	r := &result{name: "fleet"}
	jobs := append(first, second...)
	c.finish(r, jobs, tKill)

	// Webhooks: one logical event per webhook-id, each job's job.created
	// and its end exactly once, no attempt made twice.
	time.Sleep(2 * time.Second) // room for a late duplicate
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, bad := range h.bad {
		t.Errorf("webhook request did not verify: %s", bad)
	}
	perJob := map[string]int{}
	attempts, duplicates := 0, 0
	for id, n := range h.attempts {
		attempts += n
		duplicates += n - 1
		ev := h.events[id]
		perJob[ev.Data.JobID+" "+ev.Type]++
	}
	for _, j := range jobs {
		end := "job.ready"
		if j.bad {
			end = "job.failed"
		}
		for _, typ := range []string{"job.created", end} {
			if n := perJob[j.id+" "+typ]; n != 1 {
				t.Errorf("job %s: %d %s events (by webhook-id), want 1", j.id, n, typ)
			}
		}
	}
	if duplicates != 0 {
		t.Errorf("%d webhook attempts repeated an attempt the receiver had already acknowledged", duplicates)
	}
	t.Logf("fleet: %d jobs (lost %d, duplicated %d, orphaned %d), %d webhook events in %d attempts (%d duplicates); every job finished %s after catalog A was killed",
		len(jobs), r.lost, r.duplicated, r.orphaned, len(h.events), attempts, duplicates, r.recover.Round(time.Millisecond))
	c.saveMetrics(map[string]string{"ingest": c.ingestURL, "worker1": c.workerURLs[0], "worker2": c.workerURLs[1], "catalog": b})
}

// saveMetrics keeps each process's /metrics page in the scenario folder
// (metrics-<name>.txt), as it was at the end of the run.
func (c *cluster) saveMetrics(urls map[string]string) {
	c.t.Helper()
	for name, base := range urls {
		body, err := httpGet(c.t.Context(), base+"/metrics")
		if err != nil {
			c.t.Errorf("%s /metrics: %v", name, err)
			continue
		}
		path := filepath.Join(c.dir, "metrics-"+name+".txt")
		if err := os.WriteFile(path, body, 0o644); err != nil {
			c.t.Error(err)
		}
	}
	c.t.Logf("the processes' /metrics pages: %s", filepath.Join(c.dir, "metrics-*.txt"))
}

// applied counts the job events a catalog process applied ("job updated"
// in its log).
func (c *cluster) applied(p *testenv.Proc) int {
	c.t.Helper()
	f, err := os.Open(filepath.Join(c.log, p.Name+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "job updated") {
			n++
		}
	}
	return n
}

// jobTimes reads a job's per-state timestamps from the catalog at base.
func (c *cluster) jobTimes(ctx context.Context, base, id string) (map[string]time.Time, error) {
	var v struct {
		Timestamps map[string]time.Time `json:"timestamps"`
	}
	_, err := c.api(ctx, http.MethodGet, base+"/v1/jobs/"+id, nil, "", &v)
	return v.Timestamps, err
}

// streamWatch follows jobs' event streams (GET /v1/jobs/{id}/events) on
// one catalog and notes when each told its job ended.
type streamWatch struct {
	c    *cluster
	base string
	wg   sync.WaitGroup

	mu    sync.Mutex
	ended map[string]time.Time
}

// follow opens the job's stream (retrying while the catalog does not know
// the job yet) and reads it until the job ends.
func (s *streamWatch) follow(id string) {
	s.wg.Go(func() {
		ctx := s.c.t.Context()
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/v1/jobs/"+id+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+apiKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				if resp != nil {
					resp.Body.Close()
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				data, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				var v jobView
				if json.Unmarshal([]byte(data), &v) == nil && terminal(v.State) {
					s.mu.Lock()
					s.ended[id] = time.Now()
					s.mu.Unlock()
					resp.Body.Close()
					return
				}
			}
			resp.Body.Close()
		}
	})
}

// wait waits until every job's stream told it ended, or timeout.
func (s *streamWatch) wait(jobs []*job, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.ended)
		s.mu.Unlock()
		if n >= len(jobs) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *streamWatch) endedAt(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.ended[id]
	return t, ok
}
