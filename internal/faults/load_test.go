package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// webhookRetries is the catalog's retry schedule in webhook_down: short,
// so that three failed attempts take seconds.
const webhookRetries = "1s,1s,2s,2s,4s,4s,8s,8s"

// hookReceiver is a registered webhook endpoint that starts down (nothing
// listens on its address) and comes up when told. It verifies every
// request's signature and counts attempts and logical events by
// webhook-id, as a receiver must dedupe.
type hookReceiver struct {
	addr   string
	secret string
	srv    *http.Server

	mu       sync.Mutex
	bad      []string            // requests that did not verify
	attempts map[string]int      // webhook-id → requests
	events   map[string]hookBody // webhook-id → first verified body
}

type hookBody struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		JobID string `json:"job_id"`
		State string `json:"state"`
	} `json:"data"`
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	wh, werr := standardwebhooks.NewWebhook(h.secret)
	if err == nil && werr == nil {
		err = wh.Verify(body, req.Header)
	}
	var b hookBody
	if err == nil {
		err = json.Unmarshal(body, &b)
	}
	id := req.Header.Get("webhook-id")
	if err == nil && b.ID != id {
		err = fmt.Errorf("webhook-id %q, body id %q", id, b.ID)
	}
	if err != nil || werr != nil {
		h.bad = append(h.bad, fmt.Sprintf("%v %v", err, werr))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h.attempts[id]++
	if _, ok := h.events[id]; !ok {
		h.events[id] = b
	}
	w.WriteHeader(http.StatusNoContent)
}

// up starts listening on the receiver's address.
func (h *hookReceiver) up() error {
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		return err
	}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.srv.Serve(ln) }()
	return nil
}

// webhookDown: the only registered webhook endpoint is down (connection
// refused) until every job's job.created was attempted three times, then
// comes up. Every job's job.created and its job.ready or job.failed must
// then arrive, signed, once per webhook-id after deduplication.
func webhookDown(c *cluster, r *result) {
	h := &hookReceiver{addr: testenv.FreePort(c.t), attempts: map[string]int{}, events: map[string]hookBody{}}
	var ep struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	body := fmt.Sprintf(`{"url":%q,"event_types":["job.created","job.ready","job.failed"]}`, "http://"+h.addr+"/hooks")
	if _, err := c.api(c.t.Context(), http.MethodPost, c.catalogURL+"/v1/webhooks", strings.NewReader(body), "application/json", &ep); err != nil {
		c.t.Fatalf("register webhook: %v", err)
	}
	h.secret = ep.Secret
	defer func() {
		if h.srv != nil {
			_ = h.srv.Close()
		}
	}()

	jobs := c.submit(small, true)
	c.waitTerminal(jobs, recoverTimeout)
	// Down until each of the jobs' events (job.created and the end) was
	// attempted three times.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		events, least := c.failedAttempts(ep.ID)
		if events == 2*len(jobs) && least >= 3 {
			c.t.Logf("webhook endpoint down: each of %d events failed at least %d times", events, least)
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after 2 minutes the delivery log holds %d events, the least tried failed %d times; want %d events failed 3 times each", events, least, 2*len(jobs))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := h.up(); err != nil {
		c.t.Fatal(err)
	}
	t0 := time.Now()
	c.t.Logf("webhook receiver up at %s", h.addr)
	c.finish(r, jobs, t0)

	// Every job's two events, once each by id; nothing unsigned.
	want := 2 * len(jobs)
	deadline = time.Now().Add(2 * time.Minute)
	for {
		h.mu.Lock()
		n := len(h.events)
		h.mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.recover = time.Since(t0)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bad {
		c.problem(r, "webhook request did not verify: %s", b)
	}
	perJob := map[string]map[string]int{}
	for _, e := range h.events {
		if perJob[e.Data.JobID] == nil {
			perJob[e.Data.JobID] = map[string]int{}
		}
		perJob[e.Data.JobID][e.Type]++
	}
	for _, j := range jobs {
		end := "job.ready"
		if j.bad {
			end = "job.failed"
		}
		got := perJob[j.id]
		if got["job.created"] != 1 || got[end] != 1 || len(got) != 2 {
			r.lost++
			c.problem(r, "job %s (%s): logical webhook events %v, want job.created and %s once each", j.id, j.file, got, end)
		}
	}
	redelivered := 0
	for _, n := range h.attempts {
		redelivered += n - 1
	}
	c.t.Logf("webhook receiver: %d logical events, %d redelivered requests (deduplicated by webhook-id)", len(h.events), redelivered)
}

// failedAttempts reads an endpoint's delivery log: how many events it
// holds, and the fewest failed attempts of any of them.
func (c *cluster) failedAttempts(endpointID string) (events, least int) {
	var out struct {
		Deliveries []struct {
			EventID    string `json:"event_id"`
			StatusCode int    `json:"status_code"`
		} `json:"deliveries"`
	}
	if _, err := c.api(c.t.Context(), http.MethodGet, c.catalogURL+"/v1/webhooks/"+endpointID+"/deliveries?limit=500", nil, "", &out); err != nil {
		return 0, 0
	}
	failed := map[string]int{}
	for _, d := range out.Deliveries {
		if d.StatusCode == 0 || d.StatusCode >= 300 {
			failed[d.EventID]++
		} else if _, ok := failed[d.EventID]; !ok {
			failed[d.EventID] = 0
		}
	}
	least = -1
	for _, n := range failed {
		if least < 0 || n < least {
			least = n
		}
	}
	return len(failed), least
}

// burstUploads is how many uploads uploadBurst sends at once.
const burstUploads = 200

// uploadBurst: 200 uploads at once against an ingest limited to 20
// requests/s (burst 40) per key. Each refusal must be 429 or 503 with a
// Retry-After; the client honours it and sends again; every accepted
// upload must end ready.
func uploadBurst(c *cluster, r *result) {
	spec := clipSpec{1, 160, 90}
	file := c.makeClip(spec)
	data, err := os.ReadFile(file)
	if err != nil {
		c.t.Fatal(err)
	}
	jobs := make([]*job, burstUploads)
	var mu sync.Mutex
	refusals := map[int]int{}
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range jobs {
		j := &job{file: fmt.Sprintf("burst%03d.mp4", i), frames: spec.frames()}
		jobs[i] = j
		wg.Go(func() {
			for try := 1; ; try++ {
				code, retryAfter, err := c.tryUpload(j, data)
				if err != nil {
					mu.Lock()
					c.problem(r, "upload %s: %v", j.file, err)
					mu.Unlock()
					return
				}
				if code == http.StatusAccepted {
					return
				}
				mu.Lock()
				refusals[code]++
				if (code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable) || retryAfter <= 0 {
					c.problem(r, "upload %s: refused with %d and Retry-After %d, want 429 or 503 with a Retry-After", j.file, code, retryAfter)
					mu.Unlock()
					return
				}
				mu.Unlock()
				if try == 50 {
					mu.Lock()
					c.problem(r, "upload %s: still refused after 50 tries", j.file)
					mu.Unlock()
					return
				}
				time.Sleep(time.Duration(retryAfter) * time.Second)
			}
		})
	}
	wg.Wait()
	var accepted []*job
	for _, j := range jobs {
		if j.id != "" {
			accepted = append(accepted, j)
		}
	}
	c.t.Logf("%d uploads at once: %d accepted in %s; refusals by status (each with Retry-After, then sent again): %v",
		burstUploads, len(accepted), time.Since(t0).Round(100*time.Millisecond), refusals)
	if len(accepted) != burstUploads {
		r.lost += burstUploads - len(accepted)
	}
	c.finish(r, accepted, t0)
}

// tryUpload sends one upload and returns the status, the Retry-After
// seconds of a refusal, and a transport error.
func (c *cluster) tryUpload(j *job, data []byte) (int, int, error) {
	req, err := http.NewRequestWithContext(c.t.Context(), http.MethodPost,
		c.ingestURL+"/v1/uploads?filename="+url.QueryEscape(j.file), bytes.NewReader(data))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "video/mp4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		_, _ = io.Copy(io.Discard, resp.Body)
		ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return resp.StatusCode, ra, nil
	}
	var up struct {
		JobID   string `json:"job_id"`
		AssetID string `json:"asset_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&up); err != nil {
		return 0, 0, err
	}
	j.id, j.asset = up.JobID, up.AssetID
	return resp.StatusCode, 0, nil
}
