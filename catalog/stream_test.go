package catalog

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/internal/httpapi"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

var playableEvent = eventtest.Playable

// newStreamService is the API fixture's service with its own stream limits.
func newStreamService(t *testing.T, f *apiFixture, keys *httpapi.Keys, cfg Config) *Service {
	t.Helper()
	cfg.Store, cfg.Objects, cfg.PublicURL, cfg.APIKeys, cfg.Logger = f.store, f.objects, testPublic, keys, zaptest.NewLogger(t)
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// TestJobEventsStalledReader: a client that opens an event stream and never
// reads it does not hold its handler forever: once the socket buffers are
// full, the next write misses its deadline and the stream is closed.
func TestJobEventsStalledReader(t *testing.T) {
	f := newAPIFixture(t)
	svc := newStreamService(t, f, httpapi.NewKeys([]string{testKey}), Config{
		Heartbeat: time.Millisecond, StreamWriteTimeout: 100 * time.Millisecond})
	srv := httptest.NewUnstartedServer(svc.Handler())
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if tc, ok := c.(*net.TCPConn); ok && st == http.StateNew {
			_ = tc.SetWriteBuffer(4096) // fill up quickly
		}
	}
	srv.Start()
	defer srv.Close()
	id, _ := testJob("sse-stalled")
	f.apply(t, event(id, queued, 0))

	d := net.Dialer{Control: nil}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := conn.Write([]byte("GET /v1/jobs/" + id + "/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testKey + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Never read: heartbeats (one a millisecond) fill the buffers.
	waitFor(t, func() bool { return svc.hub.count() == 1 })
	deadline := time.Now().Add(20 * time.Second)
	for svc.hub.count() != 0 {
		if time.Now().After(deadline) {
			conn.Close()
			t.Fatal("the stream of a client that stopped reading is still open after 20 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestJobEventsPerKeyCap: one API key holds at most MaxStreamsPerKey event
// streams; the next gets 429 too_many_streams with Retry-After, another key
// is not affected, and closing a stream frees its place.
func TestJobEventsPerKeyCap(t *testing.T) {
	f := newAPIFixture(t)
	const other = "kiln_other_key_0123456789"
	keys, err := httpapi.NewKeySet(httpapi.KeysConfig{Keys: []httpapi.APIKey{{Name: "a", Secret: testKey}, {Name: "b", Secret: other}}})
	if err != nil {
		t.Fatal(err)
	}
	svc := newStreamService(t, f, keys, Config{MaxStreamsPerKey: 2})
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	var bodies []*http.Response
	defer func() { // before srv.Close, which waits for open streams
		for _, r := range bodies {
			r.Body.Close()
		}
	}()
	id, _ := testJob("sse-cap")
	f.apply(t, event(id, queued, 0))
	open := func(key string) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/jobs/"+id+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, resp)
		if resp.StatusCode == http.StatusOK {
			bufio.NewReader(resp.Body).ReadString('\n') // the stream is registered once it writes
		}
		return resp
	}
	a1, a2 := open(testKey), open(testKey)
	defer a2.Body.Close()
	if a1.StatusCode != 200 || a2.StatusCode != 200 {
		t.Fatalf("first two streams: %d %d", a1.StatusCode, a2.StatusCode)
	}
	a3 := open(testKey)
	var body httpapi.ErrorBody
	if a3.StatusCode != http.StatusOK { // a stream would never end
		_ = json.NewDecoder(a3.Body).Decode(&body)
	}
	a3.Body.Close()
	if a3.StatusCode != http.StatusTooManyRequests || body.Error.Code != CodeTooManyStreams || a3.Header.Get("Retry-After") == "" {
		t.Fatalf("third stream of the key: %d %+v Retry-After %q; want 429 too_many_streams", a3.StatusCode, body, a3.Header.Get("Retry-After"))
	}
	b1 := open(other)
	defer b1.Body.Close()
	if b1.StatusCode != 200 {
		t.Fatalf("another key's stream: %d", b1.StatusCode)
	}
	a1.Body.Close()
	waitFor(t, func() bool { return svc.hub.count() == 2 })
	a4 := open(testKey)
	defer a4.Body.Close()
	if a4.StatusCode != 200 {
		t.Fatalf("after closing one: %d", a4.StatusCode)
	}
}

// TestJobEventsPlayable: the stream shows the moment a job becomes
// playable: its "job" event carries playable_at and a "playable" event
// follows, once; a stream opened later starts with both.
func TestJobEventsPlayable(t *testing.T) {
	f := newAPIFixture(t)
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	id, asset := testJob("sse-playable")
	f.apply(t, event(id, queued, 0), event(id, probing, 0))
	open := func() *bufio.Scanner {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/jobs/"+id+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return bufio.NewScanner(resp.Body)
	}
	// next reads the next event: its name and job.
	next := func(sc *bufio.Scanner) (string, jobJSON) {
		t.Helper()
		name := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				var j jobJSON
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &j); err != nil {
					t.Fatalf("event data: %v", err)
				}
				return name, j
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return "", jobJSON{}
	}
	a := open()
	if name, j := next(a); name != "job" || j.State != StateProbing || j.PlayableAt != nil {
		t.Fatalf("first event %s %+v", name, j)
	}
	pl := playableEvent(id)
	f.apply(t, pl)
	if name, j := next(a); name != "job" || j.State != StateTranscoding || j.PlayableAt == nil || !j.PlayableAt.Equal(pl.GetTime().AsTime()) {
		t.Fatalf("event after playable: %s %+v", name, j)
	}
	if name, j := next(a); name != "playable" || j.PlayableAt == nil {
		t.Fatalf("no playable event: %s %+v", name, j)
	}
	later := open()
	for _, want := range []string{"job", "playable"} {
		if name, j := next(later); name != want || j.PlayableAt == nil {
			t.Fatalf("stream opened after playable: %s %+v, want %s", name, j, want)
		}
	}
	f.apply(t, event(id, transcoding, 0.7))
	if name, j := next(a); name != "job" || j.Progress != 0.7 {
		t.Fatalf("progress after playable: %s %+v (a second playable event?)", name, j)
	}
	f.apply(t, event(id, ready, 0))
	if name, j := next(a); name != "job" || j.State != StateReady {
		t.Fatalf("last event %s %+v", name, j)
	}
	for a.Scan() {
		if a.Text() != "" {
			t.Errorf("stream continues after ready: %q", a.Text())
		}
	}
	if rec := f.do(t, http.MethodGet, "/v1/assets/"+asset, ""); !strings.Contains(rec.Body.String(), `"playable_at"`) {
		t.Errorf("asset JSON without playable_at: %s", rec.Body)
	}
}

// TestJobEventsChunks: a chunked transcode's progress is in the job's JSON
// (GET, the list and the stream's job events) as chunks {done, total}, a
// stream event follows a change of the chunk counts alone, a late event
// does not lower them, and a job that is not chunked has no chunks.
func TestJobEventsChunks(t *testing.T) {
	f := newAPIFixture(t)
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	id, _ := testJob("sse-chunks")
	f.apply(t, event(id, queued, 0), event(id, probing, 0))
	chunked := func(p float64, done, total int32) *kilnv1.JobEvent {
		ev := event(id, transcoding, p)
		ev.ChunksDone, ev.ChunksTotal = done, total
		return ev
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // an event that never comes fails
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/jobs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	// next reads the next job event's data and its chunks object (nil when absent).
	next := func() (string, *struct{ Done, Total int32 }) {
		t.Helper()
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var j struct {
				Chunks *struct{ Done, Total int32 } `json:"chunks"`
			}
			if err := json.Unmarshal([]byte(data), &j); err != nil {
				t.Fatalf("event data: %v", err)
			}
			return data, j.Chunks
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return "", nil
	}
	want := func(what string, done, total int32) {
		t.Helper()
		data, c := next()
		if c == nil || c.Done != done || c.Total != total {
			t.Fatalf("%s: event %s; want chunks %d/%d", what, data, done, total)
		}
	}
	if data, c := next(); c != nil || strings.Contains(data, `"chunks"`) {
		t.Fatalf("first event of a job not chunked yet: %s", data)
	}
	f.apply(t, chunked(0.25, 1, 4))
	want("first chunk", 1, 4)
	f.apply(t, chunked(0.25, 2, 4)) // the chunks alone change
	want("second chunk", 2, 4)
	f.apply(t, chunked(0.2, 1, 4), chunked(0.25, 4, 4)) // a late event, then the last chunk
	want("last chunk", 4, 4)

	if j := f.job(t, id); j.Chunks == nil || *j.Chunks != (chunksJSON{Done: 4, Total: 4}) {
		t.Errorf("GET job: chunks %+v, want 4/4", j.Chunks)
	}
	var page struct{ Jobs []jobJSON }
	decode(t, f.do(t, http.MethodGet, "/v1/jobs", ""), &page)
	if len(page.Jobs) != 1 || page.Jobs[0].Chunks == nil || *page.Jobs[0].Chunks != (chunksJSON{Done: 4, Total: 4}) {
		t.Errorf("list: %+v, want chunks 4/4", page.Jobs)
	}
	f.apply(t, event(id, packaging, 0))
	want("packaging", 4, 4)
	f.apply(t, event(id, ready, 0))
	want("ready", 4, 4)

	other, _ := testJob("sse-not-chunked")
	f.apply(t, event(other, queued, 0), event(other, transcoding, 0.5))
	if rec := f.do(t, http.MethodGet, "/v1/jobs/"+other, ""); strings.Contains(rec.Body.String(), `"chunks"`) {
		t.Errorf("a job not chunked: %s", rec.Body)
	}
}
