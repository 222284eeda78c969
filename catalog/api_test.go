package catalog

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/ingest"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

const canceledState = kilnv1.JobState_JOB_STATE_CANCELED

// apiFixture is a catalog with fake cancel/retry/remove dependencies.
type apiFixture struct {
	svc     *Service
	h       http.Handler
	store   Store
	objects fakeObjects
	cancels []string
	retries []*kilnv1.ProbeTask
	removed []string
	clock   time.Time
	mu      sync.Mutex
}

func (f *apiFixture) Cancel(ctx context.Context, jobID, assetID string) error {
	f.mu.Lock()
	f.cancels = append(f.cancels, jobID)
	f.mu.Unlock()
	ev := event(jobID, canceledState, 0)
	ev.Attempt = 0
	return f.svc.HandleEvent(ctx, ev)
}

func (f *apiFixture) Retry(_ context.Context, task *kilnv1.ProbeTask, policy string) (*kilnv1.JobEvent, error) {
	f.retries = append(f.retries, task)
	ev := event(task.JobId, queued, 0)
	ev.EventId += fmt.Sprint(".a", task.Attempt)
	ev.Attempt, ev.PlaybackPolicy = task.Attempt, policy
	return ev, nil
}

func (f *apiFixture) Remove(_ context.Context, bucket, key string) error {
	f.removed = append(f.removed, bucket+"/"+key)
	return nil
}

func (f *apiFixture) RemovePrefix(_ context.Context, bucket, prefix string) error {
	f.removed = append(f.removed, bucket+"/"+prefix+"*")
	return nil
}

func newAPIFixture(t *testing.T) *apiFixture {
	t.Helper()
	f := &apiFixture{objects: fakeObjects{}, clock: t0}
	f.store = newStoreAt(t, func() time.Time {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.clock = f.clock.Add(time.Second)
		return f.clock
	})
	svc, err := New(Config{Store: f.store, Objects: f.objects, PublicURL: testPublic, APIKeys: httpapi.NewKeys([]string{testKey}),
		Logger: zaptest.NewLogger(t), SigningKey: tokenKey, Canceler: f, Retrier: f, Remover: f, OutputsBucket: "outputs", SourcesBucket: "sources",
		Heartbeat: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f.svc, f.h = svc, svc.Handler()
	return f
}

func (f *apiFixture) apply(t *testing.T, evs ...*kilnv1.JobEvent) {
	t.Helper()
	for _, ev := range evs {
		if err := f.svc.HandleEvent(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *apiFixture) do(t *testing.T, method, target, body string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

func (f *apiFixture) job(t *testing.T, id string) jobJSON {
	t.Helper()
	rec := f.do(t, http.MethodGet, "/v1/jobs/"+id, "")
	if rec.Code != 200 {
		t.Fatalf("GET job: %d %s", rec.Code, rec.Body)
	}
	var j jobJSON
	decode(t, rec, &j)
	return j
}

func TestListJobs(t *testing.T) {
	f := newAPIFixture(t)
	var ids []string
	for i := range 5 {
		id, _ := testJob(fmt.Sprint("list-", i))
		ids = append(ids, id)
		f.apply(t, event(id, queued, 0))
		if i%2 == 1 {
			f.apply(t, event(id, failed, 0))
		}
	}
	slices.Reverse(ids) // newest first
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		target := "/v1/jobs?limit=2"
		if cursor != "" {
			target += "&cursor=" + url.QueryEscape(cursor)
		}
		rec := f.do(t, http.MethodGet, target, "")
		if rec.Code != 200 {
			t.Fatalf("list: %d %s", rec.Code, rec.Body)
		}
		var l listJobsJSON
		decode(t, rec, &l)
		for _, j := range l.Jobs {
			got = append(got, j.ID)
		}
		if l.NextCursor == nil {
			if page != 2 {
				t.Errorf("%d pages, want 3", page+1)
			}
			break
		}
		cursor = *l.NextCursor
	}
	if !slices.Equal(got, ids) {
		t.Errorf("listed %v, want %v", got, ids)
	}
	var l listJobsJSON
	decode(t, f.do(t, http.MethodGet, "/v1/jobs?state=failed", ""), &l)
	if len(l.Jobs) != 2 || l.Jobs[0].State != StateFailed || l.NextCursor != nil {
		t.Errorf("state=failed: %+v", l)
	}
	decode(t, f.do(t, http.MethodGet, "/v1/jobs?source_key="+url.QueryEscape(testSource(ids[0]).Key), ""), &l)
	if len(l.Jobs) != 1 || l.Jobs[0].ID != ids[0] {
		t.Errorf("source_key: %+v", l)
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "state=done", "cursor=%%%", "cursor=bm9wZQ", "foo=1", "limit=1&limit=2"} {
		rec := f.do(t, http.MethodGet, "/v1/jobs?"+q, "")
		if rec.Code != 400 || errorCode(t, rec) != httpapi.CodeBadRequest {
			t.Errorf("%s: %d %s", q, rec.Code, rec.Body)
		}
	}
}

func TestCancelRetryDelete(t *testing.T) {
	f := newAPIFixture(t)
	id, asset := testJob("crd")
	f.apply(t, event(id, queued, 0), event(id, probing, 0), event(id, transcoding, 0.3))
	if j := f.job(t, id); len(j.Renditions) != 2 || j.Renditions[0].State != "encoding" || j.Attempt != 1 {
		t.Fatalf("renditions of a transcoding job: %+v", j.Renditions)
	}
	// Retry and delete need an ended job.
	if rec := f.do(t, http.MethodPost, "/v1/jobs/"+id+"/retry", ""); rec.Code != 409 || errorCode(t, rec) != CodeConflict {
		t.Fatalf("retry running: %d %s", rec.Code, rec.Body)
	}
	if rec := f.do(t, http.MethodDelete, "/v1/assets/"+asset, ""); rec.Code != 409 || errorCode(t, rec) != CodeConflict {
		t.Fatalf("delete running: %d %s", rec.Code, rec.Body)
	}
	rec := f.do(t, http.MethodPost, "/v1/jobs/"+id+"/cancel", "")
	if rec.Code != 202 {
		t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
	}
	var j jobJSON
	decode(t, rec, &j)
	if j.State != StateCanceled || j.Error == nil || j.Error.Code != "canceled" || j.Renditions[1].State != "canceled" {
		t.Fatalf("canceled job: %+v", j)
	}
	if rec := f.do(t, http.MethodPost, "/v1/jobs/"+id+"/cancel", ""); rec.Code != 409 || errorCode(t, rec) != CodeConflict {
		t.Fatalf("cancel again: %d %s", rec.Code, rec.Body)
	}
	rec = f.do(t, http.MethodPost, "/v1/jobs/"+id+"/retry", "{}", "Content-Type", "application/json")
	if rec.Code != 202 {
		t.Fatalf("retry: %d %s", rec.Code, rec.Body)
	}
	j = jobJSON{}
	decode(t, rec, &j)
	if j.State != StateQueued || j.Attempt != 2 || j.Error != nil || len(f.retries) != 1 ||
		f.retries[0].Attempt != 2 || f.retries[0].Source.GetKey() == "" || f.retries[0].Preset != "default" {
		t.Fatalf("retried job: %+v; retries %v", j, f.retries)
	}
	f.apply(t, event(id, failed, 0)) // attempt 0 = 1: stale, ignored
	if j := f.job(t, id); j.State != StateQueued {
		t.Fatalf("stale failure applied: %s", j.State)
	}
	ev := event(id, failed, 0)
	ev.Attempt = 2
	f.apply(t, ev)
	if rec := f.do(t, http.MethodDelete, "/v1/assets/"+asset, ""); rec.Code != 204 {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	want := []string{"outputs/assets/" + asset + "/*", "sources/" + testSource(id).Key}
	if !slices.Equal(f.removed, want) {
		t.Errorf("removed %v, want %v", f.removed, want)
	}
	for _, target := range []string{"/v1/jobs/" + id, "/v1/assets/" + asset} {
		if rec := f.do(t, http.MethodGet, target, ""); rec.Code != 404 || errorCode(t, rec) != httpapi.CodeNotFound {
			t.Errorf("GET %s after delete: %d", target, rec.Code)
		}
	}
	if rec := f.do(t, http.MethodDelete, "/v1/assets/"+asset, ""); rec.Code != 204 {
		t.Fatalf("delete again: %d %s", rec.Code, rec.Body)
	}
	if rec := f.do(t, http.MethodPost, "/v1/jobs/"+id+"/retry", ""); rec.Code != 404 {
		t.Fatalf("retry deleted: %d %s", rec.Code, rec.Body)
	}
}

func TestNotConfigured(t *testing.T) {
	store := newStore(t)
	svc, err := New(Config{Store: store, Objects: fakeObjects{}, PublicURL: testPublic, APIKeys: httpapi.NewKeys([]string{testKey})})
	if err != nil {
		t.Fatal(err)
	}
	id, asset := testJob("nc")
	for _, ev := range []*kilnv1.JobEvent{event(id, queued, 0), event(id, failed, 0)} {
		if _, err := store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ method, target string }{
		{http.MethodPost, "/v1/jobs/" + id + "/retry"}, {http.MethodDelete, "/v1/assets/" + asset},
	} {
		req := httptest.NewRequestWithContext(t.Context(), c.method, c.target, nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, req)
		if rec.Code != 503 || errorCode(t, rec) != CodeNotConfigured {
			t.Errorf("%s %s: %d %s", c.method, c.target, rec.Code, rec.Body)
		}
	}
}

func TestBadInput(t *testing.T) {
	f := newAPIFixture(t)
	id, asset := testJob("bad")
	unknown, _ := testJob("unknown")
	f.apply(t, event(id, queued, 0))
	big := `{"x":"` + strings.Repeat("a", MaxJSONBody) + `"}`
	tests := []struct {
		name, method, target, body, contentType string
		status                                  int
		code                                    string
	}{
		{"malformed job id", "GET", "/v1/jobs/job_x", "", "", 400, httpapi.CodeInvalidID},
		{"malformed job id events", "GET", "/v1/jobs/nope/events", "", "", 400, httpapi.CodeInvalidID},
		{"malformed job id cancel", "POST", "/v1/jobs/JOB/cancel", "", "", 400, httpapi.CodeInvalidID},
		{"malformed asset id", "DELETE", "/v1/assets/ast_%2e%2e", "", "", 400, httpapi.CodeInvalidID},
		{"unknown job", "POST", "/v1/jobs/" + unknown + "/cancel", "", "", 404, httpapi.CodeNotFound},
		{"unknown field", "POST", "/v1/jobs/" + id + "/cancel", `{"force":true}`, "application/json", 400, httpapi.CodeBadRequest},
		{"not JSON", "POST", "/v1/jobs/" + id + "/cancel", `force`, "application/json", 400, httpapi.CodeBadRequest},
		{"wrong content type", "POST", "/v1/jobs/" + id + "/retry", `{}`, "text/plain", 415, httpapi.CodeUnsupportedMediaType},
		{"no content type", "POST", "/v1/jobs/" + id + "/cancel", `{}`, "", 415, httpapi.CodeUnsupportedMediaType},
		{"token wrong content type", "POST", "/v1/assets/" + asset + "/playback-token", `{"ttl_seconds":5}`, "application/x-www-form-urlencoded", 415, httpapi.CodeUnsupportedMediaType},
		{"over 1 MiB", "POST", "/v1/jobs/" + id + "/cancel", big, "application/json", 413, httpapi.CodeTooLarge},
		{"no key", "GET", "/v1/jobs", "", "", 401, httpapi.CodeUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequestWithContext(t.Context(), tt.method, tt.target, strings.NewReader(tt.body))
			if tt.code != httpapi.CodeUnauthorized {
				req.Header.Set("Authorization", "Bearer "+testKey)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, req)
			if rec.Code != tt.status || errorCode(t, rec) != tt.code {
				t.Fatalf("%d %s, want %d %s", rec.Code, rec.Body, tt.status, tt.code)
			}
		})
	}
	// Nothing was canceled, retried or removed.
	if len(f.cancels)+len(f.retries)+len(f.removed) != 0 {
		t.Errorf("side effects: %v %v %v", f.cancels, f.retries, f.removed)
	}
	if j := f.job(t, id); j.State != StateQueued {
		t.Errorf("job changed: %s", j.State)
	}
}

// readEvents reads server-sent "job" events from r until n arrived or the
// stream ended.
func readEvents(t *testing.T, sc *bufio.Scanner, n int) (jobs []jobJSON, heartbeats int) {
	t.Helper()
	for len(jobs) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ": heartbeat"):
			heartbeats++
		case strings.HasPrefix(line, "data: "):
			var j jobJSON
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &j); err != nil {
				t.Fatalf("event data: %v", err)
			}
			jobs = append(jobs, j)
		}
	}
	return jobs, heartbeats
}

func TestJobEvents(t *testing.T) {
	f := newAPIFixture(t)
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	id, _ := testJob("sse")
	f.apply(t, event(id, queued, 0))
	open := func(ctx context.Context) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/jobs/"+id+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return resp
	}
	// Two subscribers see the same changes; one leaves early.
	a, b := open(t.Context()), open(t.Context())
	defer a.Body.Close()
	scA, scB := bufio.NewScanner(a.Body), bufio.NewScanner(b.Body)
	for _, sc := range []*bufio.Scanner{scA, scB} {
		if jobs, _ := readEvents(t, sc, 1); len(jobs) != 1 || jobs[0].State != StateQueued {
			t.Fatalf("first event: %+v", jobs)
		}
	}
	f.apply(t, event(id, probing, 0))
	for name, sc := range map[string]*bufio.Scanner{"A": scA, "B": scB} {
		if jobs, _ := readEvents(t, sc, 1); len(jobs) != 1 || jobs[0].State != StateProbing {
			t.Fatalf("%s: %+v", name, jobs)
		}
	}
	b.Body.Close()
	waitFor(t, func() bool { return f.svc.hub.count() == 1 })
	// While nothing changes, heartbeats flow (every 20 ms here).
	for heartbeat := false; !heartbeat; {
		if !scA.Scan() {
			t.Fatal("A's stream ended before a heartbeat")
		}
		heartbeat = strings.HasPrefix(scA.Text(), ": heartbeat")
	}
	// Changes faster than a reader takes them may reach it as the latest
	// state only (a stream sends the job as it is when it writes): A sees
	// the states in order, and ready last.
	f.apply(t, event(id, transcoding, 0.5), event(id, packaging, 0), event(id, ready, 0))
	jobs, _ := readEvents(t, scA, 10)
	if scA.Scan() {
		t.Errorf("stream continues after ready: %q", scA.Text())
	}
	var states []State
	for _, j := range jobs {
		states = append(states, j.State)
	}
	order := map[State]int{StateTranscoding: 1, StatePackaging: 2, StateReady: 3}
	if len(states) == 0 || states[len(states)-1] != StateReady ||
		!slices.IsSortedFunc(states, func(x, y State) int { return order[x] - order[y] }) || slices.Contains(states, StateProbing) {
		t.Errorf("A saw %v after probing, want the later states in order, ready last", states)
	}
	waitFor(t, func() bool { return f.svc.hub.count() == 0 })

	// A cancelled request leaves nothing behind.
	other, _ := testJob("sse-cancel")
	f.apply(t, event(other, queued, 0))
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/jobs/"+other+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.svc.hub.count() == 1 })
	cancel()
	resp.Body.Close()
	waitFor(t, func() bool { return f.svc.hub.count() == 0 })
	// A finished job's stream is one event.
	resp = open(t.Context())
	defer resp.Body.Close()
	if jobs, _ := readEvents(t, bufio.NewScanner(resp.Body), 5); len(jobs) != 1 || jobs[0].State != StateReady {
		t.Errorf("ended job's stream: %+v", jobs)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 5s")
}

const storyboard = "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nsprite.jpg#xywh=0,0,160,90\n\n00:00:01.000 --> 00:00:02.000\nsprite.jpg#xywh=160,0,160,90\n"

func TestThumbnails(t *testing.T) {
	f := newPlaybackFixture(t, nil)
	for _, asset := range []string{f.public, f.signed} {
		p := "assets/" + asset + "/thumbnails/"
		out := testOutputs(asset)
		out.PosterKey = p + "poster.jpg"
		out.Thumbnails = &kilnv1.Thumbnails{PosterKey: p + "poster.jpg", Keys: []string{p + "t_00001.jpg", p + "t_00002.jpg"},
			IntervalSeconds: 1, SpriteKey: p + "sprite.jpg", StoryboardKey: p + "storyboard.vtt", Width: 160, Height: 90}
		ev := event(jobid.JobOf(asset), ready, 0)
		ev.Outputs = out
		// A repeated READY rewrites the asset (same attempt, not a change).
		if _, err := f.svc.store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		if _, err := dbOf(t, f.svc.store).ExecContext(t.Context(), `UPDATE assets SET thumbnails_json = ? WHERE id = ?`,
			mustProtoJSON(t, out.Thumbnails), asset); err != nil {
			t.Fatal(err)
		}
		f.objects["outputs/"+p+"storyboard.vtt"] = []byte(storyboard)
		f.objects["outputs/"+p+"sprite.jpg"] = []byte{0xff, 0xd8}
	}
	// Public: URLs without token; the storyboard is served as stored.
	rec := f.get(t, "/v1/assets/"+f.public, "Authorization", "Bearer "+testKey)
	var a assetJSON
	decode(t, rec, &a)
	base := "https://kiln.example.com/v1/play/" + f.public + "/thumbnails/"
	if a.Thumbnails == nil || a.Thumbnails.Poster != base+"poster.jpg" || a.Thumbnails.StoryboardVTT != base+"storyboard.vtt" ||
		a.Thumbnails.Sprite != base+"sprite.jpg" || len(a.Thumbnails.Images) != 2 || a.Thumbnails.Width != 160 || a.Thumbnails.IntervalSeconds != 1 {
		t.Fatalf("thumbnails = %+v", a.Thumbnails)
	}
	rec = f.get(t, "/v1/play/"+f.public+"/thumbnails/storyboard.vtt")
	if rec.Code != 200 || rec.Body.String() != storyboard || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/vtt") {
		t.Fatalf("public storyboard: %d %q", rec.Code, rec.Body)
	}
	if rec := f.get(t, "/v1/play/"+f.public+"/thumbnails/t_00002.jpg"); rec.Code != 302 ||
		!strings.Contains(rec.Header().Get("Location"), "/thumbnails/t_00002.jpg") {
		t.Fatalf("thumbnail: %d %v", rec.Code, rec.Header())
	}
	for _, file := range []string{"t_00009.jpg", "secret.vtt", "..%2fposter.jpg", "poster.png"} {
		if rec := f.get(t, "/v1/play/"+f.public+"/thumbnails/"+file); rec.Code != 404 {
			t.Errorf("%s: %d", file, rec.Code)
		}
	}
	// Signed: token needed; the storyboard's sprite URIs carry it before the fragment.
	if rec := f.get(t, "/v1/play/"+f.signed+"/thumbnails/storyboard.vtt"); rec.Code != 403 {
		t.Fatalf("signed storyboard without token: %d", rec.Code)
	}
	tok := f.token(f.signed, time.Hour)
	rec = f.get(t, "/v1/play/"+f.signed+"/thumbnails/storyboard.vtt?token="+url.QueryEscape(tok))
	want := strings.ReplaceAll(storyboard, "sprite.jpg#", "sprite.jpg?token="+url.QueryEscape(tok)+"#")
	if rec.Code != 200 || rec.Body.String() != want {
		t.Fatalf("signed storyboard: %d\n%s\nwant\n%s", rec.Code, rec.Body, want)
	}
	decode(t, f.get(t, "/v1/assets/"+f.signed, "Authorization", "Bearer "+testKey), &a)
	if !strings.Contains(a.Thumbnails.Sprite, "sprite.jpg?token=") {
		t.Errorf("signed sprite URL %q", a.Thumbnails.Sprite)
	}
	if rec := f.get(t, strings.TrimPrefix(a.Thumbnails.Sprite, "https://kiln.example.com")); rec.Code != 302 {
		t.Errorf("signed sprite: %d", rec.Code)
	}
}

func mustProtoJSON(t *testing.T, m *kilnv1.Thumbnails) string {
	t.Helper()
	b, err := protoOut.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOpenAPI checks the document against the routes and real responses.
func TestOpenAPI(t *testing.T) {
	f := newAPIFixture(t)
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/openapi.json", nil)) // no key
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if rec.Code != 200 {
		t.Fatalf("GET openapi.json: %d", rec.Code)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi.json: %v (%q)", err, doc.OpenAPI)
	}
	var patterns []string
	for _, r := range ingest.New(ingest.Config{}).Routes() {
		patterns = append(patterns, r.Pattern)
	}
	for _, r := range f.svc.Routes() {
		patterns = append(patterns, r.Pattern)
	}
	for _, p := range patterns {
		method, path, _ := strings.Cut(p, " ")
		if method == http.MethodOptions {
			continue // CORS preflight, described with the playback routes
		}
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %q is not in openapi.json", p)
		}
	}
	if _, ok := doc.Paths["/v1/play/{id}/thumbnails/{file}"]["get"]; !ok {
		t.Error("thumbnails route is not in openapi.json")
	}

	// Real responses have every required property, with the right types.
	id, asset := testJob("openapi")
	pf := newPlaybackFixture(t, nil)
	f.apply(t, event(id, queued, 0), event(id, probing, 0), event(id, failed, 0))
	check := func(schema string, rec *httptest.ResponseRecorder) {
		t.Helper()
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s: %v", schema, err)
		}
		for _, e := range validate(doc.Components.Schemas, json.RawMessage(`{"$ref":"#/components/schemas/`+schema+`"}`), v, schema) {
			t.Error(e)
		}
	}
	check("Job", f.do(t, http.MethodGet, "/v1/jobs/"+id, ""))
	chunked, _ := testJob("openapi-chunks")
	ev := event(chunked, transcoding, 0.5)
	ev.ChunksDone, ev.ChunksTotal = 2, 4
	f.apply(t, event(chunked, queued, 0), ev)
	if rec := f.do(t, http.MethodGet, "/v1/jobs/"+chunked, ""); !strings.Contains(rec.Body.String(), `"chunks"`) {
		t.Errorf("chunked job without chunks: %s", rec.Body)
	} else {
		check("Job", rec)
	}
	check("JobList", f.do(t, http.MethodGet, "/v1/jobs?limit=1", ""))
	check("Asset", f.do(t, http.MethodGet, "/v1/assets/"+asset, ""))
	check("Asset", pf.get(t, "/v1/assets/"+pf.signed, "Authorization", "Bearer "+testKey))
	check("Error", f.do(t, http.MethodGet, "/v1/jobs/job_x", ""))
	check("PlaybackToken", pf.do(t, http.MethodPost, "/v1/assets/"+pf.public+"/playback-token", nil, "Authorization", "Bearer "+testKey))
	check("Job", f.do(t, http.MethodPost, "/v1/jobs/"+id+"/retry", ""))
}

// validate is a small JSON Schema checker: $ref, type (one or a list),
// required, properties, items, oneOf; enough for kiln's response schemas.
// An object with properties declared and no additionalProperties may have
// no others: a response field missing from the document is an error.
func validate(schemas map[string]json.RawMessage, raw json.RawMessage, v any, at string) []string {
	var s struct {
		Ref        string                     `json:"$ref"`
		Type       json.RawMessage            `json:"type"`
		Required   []string                   `json:"required"`
		Properties map[string]json.RawMessage `json:"properties"`
		Additional json.RawMessage            `json:"additionalProperties"`
		Items      json.RawMessage            `json:"items"`
		OneOf      []json.RawMessage          `json:"oneOf"`
		Enum       []any                      `json:"enum"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return []string{at + ": bad schema: " + err.Error()}
	}
	if s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
		sub, ok := schemas[name]
		if !ok {
			return []string{at + ": unknown $ref " + s.Ref}
		}
		return validate(schemas, sub, v, at)
	}
	if len(s.OneOf) > 0 {
		for _, alt := range s.OneOf {
			if len(validate(schemas, alt, v, at)) == 0 {
				return nil
			}
		}
		return []string{at + ": matches no oneOf alternative"}
	}
	var types []string
	if len(s.Type) > 0 {
		var one string
		if json.Unmarshal(s.Type, &one) == nil {
			types = []string{one}
		} else {
			_ = json.Unmarshal(s.Type, &types)
		}
	}
	if len(types) > 0 && !slices.Contains(types, jsonType(v)) &&
		!(jsonType(v) == "integer" && slices.Contains(types, "number")) {
		return []string{fmt.Sprintf("%s: type %s, want %v", at, jsonType(v), types)}
	}
	if len(s.Enum) > 0 && !slices.Contains(s.Enum, v) {
		return []string{fmt.Sprintf("%s: %v not in %v", at, v, s.Enum)}
	}
	var errs []string
	switch v := v.(type) {
	case map[string]any:
		for _, r := range s.Required {
			if _, ok := v[r]; !ok {
				errs = append(errs, at+": missing required "+r)
			}
		}
		for name, sub := range s.Properties {
			if pv, ok := v[name]; ok {
				errs = append(errs, validate(schemas, sub, pv, at+"."+name)...)
			}
		}
		if len(s.Properties) > 0 && len(s.Additional) == 0 {
			for name := range v {
				if _, ok := s.Properties[name]; !ok {
					errs = append(errs, at+": property "+name+" is not in the document")
				}
			}
		}
	case []any:
		if len(s.Items) > 0 {
			for i, item := range v {
				errs = append(errs, validate(schemas, s.Items, item, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return errs
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if v == float64(int64(v)) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}
