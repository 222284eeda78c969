package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/objstore"
)

// apiJob is the part of a job's JSON these tests read.
type apiJob struct {
	ID         string               `json:"id"`
	AssetID    string               `json:"asset_id"`
	State      string               `json:"state"`
	Attempt    int                  `json:"attempt"`
	CreatedAt  time.Time            `json:"created_at"`
	Timestamps map[string]time.Time `json:"timestamps"`
	Error      *struct {
		Code string `json:"code"`
	} `json:"error"`
	Source struct {
		Key string `json:"key"`
	} `json:"source"`
	Renditions []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"renditions"`
}

// request sends an API request with extra headers and returns the status
// and body.
func (s stack) request(t *testing.T, method, path string, body io.Reader, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.APIURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.APIKey)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// waitState polls the job until its state is one of states.
func (s stack) waitState(t *testing.T, jobID string, timeout time.Duration, states ...string) apiJob {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var j apiJob
	for time.Now().Before(deadline) {
		j = apiJob{}
		if code := s.do(t, http.MethodGet, "/v1/jobs/"+jobID, nil, "", &j); code == http.StatusOK {
			for _, st := range states {
				if j.State == st {
					return j
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("job %s not in %v after %v (state %q)", jobID, states, timeout, j.State)
	return j
}

func (s stack) uploadFile(t *testing.T, file string, header ...string) (int, uploadResponse, apiError) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	code, body := s.request(t, http.MethodPost, "/v1/uploads?filename=clip.mp4", bytes.NewReader(data),
		append([]string{"Content-Type", "video/mp4"}, header...)...)
	var up uploadResponse
	var bad apiError
	_ = json.Unmarshal(body, &up)
	_ = json.Unmarshal(body, &bad)
	return code, up, bad
}

func TestListJobsPagination(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "one.mp4", 1, "320x180")
	var ids []string
	for range 3 {
		code, up, _ := s.uploadFile(t, clip)
		if code != http.StatusAccepted {
			t.Fatalf("upload: %d", code)
		}
		ids = append(ids, up.JobID)
		s.waitState(t, up.JobID, time.Minute, "queued", "probing", "transcoding", "packaging", "ready")
		time.Sleep(10 * time.Millisecond) // distinct created_at
	}
	// Page through everything, two at a time, until ours are all seen:
	// newest first, no job twice.
	seen, order := map[string]bool{}, []string{}
	var last time.Time
	cursor := ""
	for pages := 0; len(order) < 3; pages++ {
		if pages > 500 {
			t.Fatal("too many pages")
		}
		q := "/v1/jobs?limit=2"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		var page struct {
			Jobs       []apiJob `json:"jobs"`
			NextCursor *string  `json:"next_cursor"`
		}
		if code := s.do(t, http.MethodGet, q, nil, "", &page); code != http.StatusOK || len(page.Jobs) > 2 {
			t.Fatalf("list: %d, %d jobs", code, len(page.Jobs))
		}
		for _, j := range page.Jobs {
			if seen[j.ID] {
				t.Fatalf("job %s listed twice", j.ID)
			}
			seen[j.ID] = true
			if !last.IsZero() && j.CreatedAt.After(last) {
				t.Fatalf("not newest first: %v after %v", j.CreatedAt, last)
			}
			last = j.CreatedAt
			for _, id := range ids {
				if j.ID == id {
					order = append(order, id)
				}
			}
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if len(order) != 3 || order[0] != ids[2] || order[2] != ids[0] {
		t.Fatalf("listed %v, want the reverse of %v", order, ids)
	}
	if code, body := s.request(t, http.MethodGet, "/v1/jobs?limit=500", nil); code != http.StatusBadRequest {
		t.Errorf("limit=500: %d %s", code, body)
	}
}

// processesOf lists the processes whose command line mentions id.
func processesOf(t *testing.T, id string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "pgrep", "-af", id).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 { // none
		return ""
	}
	if err != nil {
		t.Fatalf("pgrep: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestCancelRetryDelete(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "long.mp4", 30, "640x360")
	code, up, _ := s.uploadFile(t, clip)
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d", code)
	}
	s.waitState(t, up.JobID, 2*time.Minute, "transcoding")
	if procs := processesOf(t, up.JobID); procs == "" {
		t.Log("no ffmpeg seen for the job before cancel (it may not have started yet)")
	}
	code, body := s.request(t, http.MethodPost, "/v1/jobs/"+up.JobID+"/cancel", nil)
	if code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for procs := processesOf(t, up.JobID); procs != ""; procs = processesOf(t, up.JobID) {
		if time.Now().After(deadline) {
			t.Fatalf("processes of the canceled job still run after 10s:\n%s", procs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	j := s.waitState(t, up.JobID, 10*time.Second, "canceled", "failed", "ready")
	if j.State != "canceled" || j.Error == nil || j.Error.Code != "canceled" {
		t.Fatalf("job after cancel: %+v", j)
	}
	if code, body := s.request(t, http.MethodPost, "/v1/jobs/"+up.JobID+"/cancel", nil); code != http.StatusConflict {
		t.Errorf("cancel again: %d %s", code, body)
	}
	// The job stays canceled (the interrupted task does not fail it later).
	time.Sleep(2 * time.Second)
	if j := s.waitState(t, up.JobID, time.Second, "canceled", "failed", "ready"); j.State != "canceled" {
		t.Fatalf("canceled job became %s", j.State)
	}

	code, body = s.request(t, http.MethodPost, "/v1/jobs/"+up.JobID+"/retry", nil)
	if code != http.StatusAccepted {
		t.Fatalf("retry: %d %s", code, body)
	}
	j = s.waitState(t, up.JobID, 3*time.Minute, "ready", "failed", "canceled")
	if j.State != "ready" || j.Attempt != 2 {
		t.Fatalf("retried job: %+v", j)
	}

	store, err := objstore.New(s.S3)
	if err != nil {
		t.Fatal(err)
	}
	if objs, err := store.List(t.Context(), s.Outputs, "assets/"+up.AssetID+"/"); err != nil || len(objs) == 0 {
		t.Fatalf("outputs before delete: %d (%v)", len(objs), err)
	}
	code, body = s.request(t, http.MethodDelete, "/v1/assets/"+up.AssetID, nil)
	if code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	if objs, err := store.List(t.Context(), s.Outputs, "assets/"+up.AssetID+"/"); err != nil || len(objs) != 0 {
		t.Fatalf("outputs after delete: %d (%v)", len(objs), err)
	}
	if _, err := store.Stat(t.Context(), s.Sources, j.Source.Key); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("source after delete: %v", err)
	}
	for _, p := range []string{"/v1/jobs/" + up.JobID, "/v1/assets/" + up.AssetID} {
		var e apiError
		if code := s.do(t, http.MethodGet, p, nil, "", &e); code != http.StatusNotFound || e.Error.Code != "not_found" {
			t.Errorf("GET %s after delete: %d %+v", p, code, e)
		}
	}
}

func TestIdempotentUpload(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "idem.mp4", 1, "320x180")
	other := makeClip(t, "other.mp4", 2, "320x180")
	key := "e2e-" + time.Now().Format(time.RFC3339Nano)
	code, first, _ := s.uploadFile(t, clip, "Idempotency-Key", key)
	if code != http.StatusAccepted {
		t.Fatalf("first: %d", code)
	}
	code, again, _ := s.uploadFile(t, clip, "Idempotency-Key", key)
	if code != http.StatusOK || again.JobID != first.JobID {
		t.Fatalf("same key, same body: %d %+v, want 200 %s", code, again, first.JobID)
	}
	code, _, bad := s.uploadFile(t, other, "Idempotency-Key", key)
	if code != http.StatusConflict || bad.Error.Code != "idempotency_conflict" {
		t.Fatalf("same key, other body: %d %+v", code, bad)
	}
	code, _, bad = s.uploadFile(t, clip, "Idempotency-Key", strings.Repeat("k", 256))
	if code != http.StatusBadRequest {
		t.Fatalf("long key: %d %+v", code, bad)
	}
	if j := s.waitJob(t, first.JobID, jobTimeout); j.State != "ready" {
		t.Fatalf("job: %+v", j)
	}
}

func TestDirectUpload(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "direct.mp4", 2, "320x180")
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]any{"filename": "direct clip.mp4", "size": len(data), "preset": "default", "playback_policy": "public"})
	code, body := s.request(t, http.MethodPost, "/v1/direct-uploads", bytes.NewReader(req), "Content-Type", "application/json")
	if code != http.StatusCreated {
		t.Fatalf("direct upload: %d %s", code, body)
	}
	var du struct {
		UploadURL string            `json:"upload_url"`
		Method    string            `json:"method"`
		Headers   map[string]string `json:"headers"`
		Key       string            `json:"key"`
	}
	if err := json.Unmarshal(body, &du); err != nil || du.Method != http.MethodPut {
		t.Fatalf("direct upload answer: %v %s", err, body)
	}
	// A body longer than announced is refused (Content-Length is signed).
	put := func(b []byte) int {
		r, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, du.UploadURL, bytes.NewReader(b))
		for k, v := range du.Headers {
			if !strings.EqualFold(k, "Content-Length") {
				r.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(append(bytes.Clone(data), 0)); code == http.StatusOK {
		t.Fatal("PUT with another size succeeded")
	}
	if code := put(data); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	var found apiJob
	deadline := time.Now().Add(time.Minute)
	for found.ID == "" {
		if time.Now().After(deadline) {
			t.Fatal("no job for the direct upload")
		}
		var page struct {
			Jobs []apiJob `json:"jobs"`
		}
		if code := s.do(t, http.MethodGet, "/v1/jobs?source_key="+url.QueryEscape(du.Key), nil, "", &page); code != http.StatusOK {
			t.Fatalf("list by source_key: %d", code)
		}
		if len(page.Jobs) > 0 {
			found = page.Jobs[0]
		}
		time.Sleep(200 * time.Millisecond)
	}
	if j := s.waitJob(t, found.ID, jobTimeout); j.State != "ready" || j.Preset != "default" {
		t.Fatalf("direct upload job: %+v", j)
	}
}

func TestJobEventStream(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "sse.mp4", 3, "320x180")
	code, up, _ := s.uploadFile(t, clip)
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d", code)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var resp *http.Response
	for { // the catalog records the job a moment after the upload answers
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.APIURL+"/v1/jobs/"+up.JobID+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+s.APIKey)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode == http.StatusOK {
			resp = r
			break
		}
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Fatalf("events: %d", r.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	var states []string
	var first apiJob
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var j apiJob
		if err := json.Unmarshal([]byte(data), &j); err != nil {
			t.Fatal(err)
		}
		if len(states) == 0 {
			first = j
		}
		if len(states) == 0 || states[len(states)-1] != j.State {
			states = append(states, j.State)
		}
	}
	if len(states) < 3 || states[len(states)-1] != "ready" {
		t.Fatalf("states seen: %v", states)
	}
	// The stream starts from the job as it is: queued, or its queued time
	// when the first event came later.
	if states[0] != "queued" && first.Timestamps["queued"].IsZero() {
		t.Errorf("no queued state in the stream: %v", states)
	}
	t.Logf("states seen: %v", states)
}
