package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

const testKey = "kiln_test"

// testEnv is a cliEnv talking to srv with captured output.
func testEnv(t *testing.T, srv *httptest.Server) (*cliEnv, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	url := "http://127.0.0.1:1"
	if srv != nil {
		url = srv.URL
	}
	env := map[string]string{"KILN_API_URL": url, "KILN_API_KEY": testKey}
	return &cliEnv{
		stdout: &stdout, stderr: &stderr, http: &http.Client{Timeout: 10 * time.Second}, now: time.Now,
		pollEvery: time.Millisecond, notFoundGrace: time.Second, retryWait: time.Millisecond,
		getenv: func(k string) string { return env[k] },
	}, &stdout, &stderr
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
}

func authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+testKey {
		writeError(w, http.StatusUnauthorized, "unauthorized", "invalid API key")
		return false
	}
	return true
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		args    []string
		want    int
		errHas  string
	}{
		{"ok", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"id":"job_1","state":"ready"}`)
		}, []string{"job", "job_1"}, exitOK, ""},
		{"unauthorized", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid API key")
		}, []string{"job", "job_1"}, exitAPI, "unauthorized: invalid API key"},
		{"forbidden delete", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusForbidden, "forbidden", "read scope")
		}, []string{"delete", "ast_1"}, exitAPI, "forbidden: read scope"},
		{"not found", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "not_found", "job not found")
		}, []string{"job", "job_1"}, exitAPI, "not_found: job not found"},
		{"rate limited after retries", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "0")
			writeError(w, http.StatusTooManyRequests, "rate_limited", "slow down")
		}, []string{"job", "job_1"}, exitAPI, "rate_limited: slow down"},
		{"plain 404 of a missing route", func(w http.ResponseWriter, r *http.Request) {
			http.NotFound(w, r)
		}, []string{"jobs"}, exitAPI, "HTTP 404 Not Found: 404 page not found"},
		{"server error", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusInternalServerError, "internal", "internal error")
		}, []string{"job", "job_1"}, exitServer, "internal: internal error"},
		{"bad gateway text", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upstream down", http.StatusBadGateway)
		}, []string{"jobs"}, exitServer, "HTTP 502 Bad Gateway: upstream down"},
		{"unreadable answer", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"jobs":`)
		}, []string{"jobs"}, exitServer, "unreadable answer"},
		{"delete ok", func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodDelete || r.URL.Path != "/v1/assets/ast_1" {
				http.Error(w, "wrong", http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}, []string{"delete", "ast_1"}, exitOK, ""},
		{"missing argument", nil, []string{"job"}, exitUsage, "missing argument"},
		{"extra argument", nil, []string{"job", "a", "b"}, exitUsage, "unexpected arguments: b"},
		{"unknown flag", nil, []string{"jobs", "--nope"}, exitUsage, "not defined"},
		{"bad limit", nil, []string{"jobs", "--limit", "-1"}, exitUsage, "--limit"},
		{"bad policy", nil, []string{"upload", "x.mp4", "--playback-policy", "private"}, exitUsage, "playback-policy"},
		{"bad priority", nil, []string{"upload", "x.mp4", "--priority", "urgent"}, exitUsage, "priority"},
		{"bad api url", nil, []string{"job", "j", "--api-url", "ftp://x"}, exitUsage, "--api-url"},
		{"no key", nil, []string{"job", "j", "--api-key", " "}, exitUsage, "no API key"},
		{"unknown command", nil, []string{"frobnicate"}, exitUsage, "unknown command"},
		{"missing file", nil, []string{"upload", "/nonexistent/x.mp4"}, exitGeneric, "no such file"},
		{"connection refused", nil, []string{"job", "j", "--api-url", "http://127.0.0.1:1"}, exitServer, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *httptest.Server
			if tt.handler != nil {
				srv = httptest.NewServer(tt.handler)
				defer srv.Close()
			}
			e, _, _ := testEnv(t, srv)
			if tt.name == "no key" {
				e.getenv = func(string) string { return "" }
			}
			err := e.run(t.Context(), tt.args[0], tt.args[1:])
			if got := exitCode(err); got != tt.want {
				t.Fatalf("exit code %d (%v), want %d", got, err, tt.want)
			}
			if tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)) {
				t.Fatalf("error %v, want it to contain %q", err, tt.errHas)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	e, _, stderr := testEnv(t, nil)
	err := e.run(t.Context(), "upload", []string{"-h"})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp (exit 0 in main)", err)
	}
	if !strings.Contains(stderr.String(), "--wait") && !strings.Contains(stderr.String(), "-wait") {
		t.Fatalf("usage lacks --wait:\n%s", stderr)
	}
	// The key from the environment never shows up in help.
	e.getenv = func(k string) string {
		if k == "KILN_API_KEY" {
			return "kiln_secret_value"
		}
		return ""
	}
	stderr.Reset()
	_ = e.run(t.Context(), "jobs", []string{"-help"})
	if strings.Contains(stderr.String(), "kiln_secret_value") {
		t.Fatal("help prints the API key")
	}
}

func TestFlagsAnywhereAndKeyFromFlag(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer other" {
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid API key")
			return
		}
		fmt.Fprint(w, `{"id":"job_x","state":"queued"}`)
	}))
	defer srv.Close()
	e, stdout, _ := testEnv(t, srv)
	if err := e.run(t.Context(), "job", []string{"--api-key", "other", "job_x"}); err != nil {
		t.Fatal(err)
	}
	if err := e.run(t.Context(), "job", []string{"job_x", "--api-key=other"}); err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"id\": \"job_x\",\n  \"state\": \"queued\"\n}\n"
	if stdout.String() != want+want {
		t.Fatalf("stdout = %q", stdout)
	}
}

func TestJobsTable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !authorized(w, r) {
			return
		}
		if r.URL.Path != "/v1/jobs" || r.URL.Query().Get("state") != "ready" || r.URL.Query().Get("limit") != "2" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, `{"jobs":[
			{"id":"job_a","state":"ready","progress":1,"created_at":"2026-03-01T10:00:00Z","source":{"key":"uploads/a/x.mp4"}},
			{"id":"job_bb","state":"ready","progress":0.999,"created_at":"2026-03-01T11:00:00Z","source":{"key":"y.mov"}}
		],"next_cursor":"c123"}`)
	}))
	defer srv.Close()
	e, stdout, stderr := testEnv(t, srv)
	if err := e.run(t.Context(), "jobs", []string{"--state", "ready", "--limit", "2"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "SOURCE") {
		t.Fatalf("table:\n%s", stdout)
	}
	created := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC).Local().Format("2006-01-02 15:04:05")
	for _, want := range []string{"job_a", "ready", "100%", created, "uploads/a/x.mp4"} {
		if !strings.Contains(lines[1], want) {
			t.Fatalf("row %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[2], "99%") {
		t.Fatalf("row %q: progress 0.999 should show 99%%", lines[2])
	}
	// Columns line up.
	if strings.Index(lines[1], "ready") != strings.Index(lines[0], "STATE") {
		t.Fatalf("columns not aligned:\n%s", stdout)
	}
	if !strings.Contains(stderr.String(), "--cursor c123") {
		t.Fatalf("stderr lacks the next cursor: %q", stderr)
	}
}

func TestSSEReader(t *testing.T) {
	stream := ": connected\n\n" +
		"event: job\ndata: {\"state\":\"probing\"}\n\n" +
		":heartbeat\r\n\r\n" +
		"retry: 1000\nid: 7\r\ndata:{\"a\":1,\r\ndata:  \"b\":2}\r\n\r\n" +
		"event: ping\n\n" + // no data: dropped
		"data: cr\rdata: lines\r\r" +
		"data: half an event"
	r := newSSEReader(iotest.OneByteReader(strings.NewReader(stream)))
	want := []sseEvent{
		{Type: "job", Data: `{"state":"probing"}`},
		{ID: "7", Data: "{\"a\":1,\n \"b\":2}"},
		{Data: "cr\nlines"},
	}
	for i, w := range want {
		got, err := r.next()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if got != w {
			t.Fatalf("event %d = %+v, want %+v", i, got, w)
		}
	}
	if ev, err := r.next(); err != io.EOF {
		t.Fatalf("after the last event: %+v, %v; want io.EOF (half event dropped)", ev, err)
	}
}

func TestSSEReaderLongLine(t *testing.T) {
	r := newSSEReader(strings.NewReader("data: " + strings.Repeat("x", maxSSELine+1) + "\n\n"))
	if _, err := r.next(); err == nil || err == io.EOF {
		t.Fatalf("err = %v, want a line-length error", err)
	}
}

func TestParseJobEvent(t *testing.T) {
	for _, tt := range []struct {
		ev    sseEvent
		state string
		ok    bool
	}{
		{sseEvent{Data: `{"id":"j","state":"transcoding","progress":0.5}`}, "transcoding", true},
		{sseEvent{Type: "job", Data: `{"job":{"id":"j","state":"ready"}}`}, "ready", true},
		{sseEvent{Type: "ping", Data: `{"state":"x"}`}, "", false},
		{sseEvent{Data: `keepalive`}, "", false},
		{sseEvent{Data: `{"type":"hello"}`}, "", false},
		{sseEvent{Data: `{broken`}, "", false},
	} {
		j, ok := parseJobEvent(tt.ev)
		if ok != tt.ok || j.State != tt.state {
			t.Errorf("parseJobEvent(%+v) = %q, %v; want %q, %v", tt.ev, j.State, ok, tt.state, tt.ok)
		}
	}
}

// fakeAPI is a kiln API good enough for `kiln upload --wait`.
type fakeAPI struct {
	t        *testing.T
	received []byte
	query    map[string]string
	ctLength int64
	expect   string
	// events answers GET /v1/jobs/{id}/events; nil: 404 like a server
	// without the stream.
	events http.HandlerFunc
	// states are returned by successive GET /v1/jobs/{id} (the last repeats);
	// "404" answers not found.
	states []string
	polls  atomic.Int32
	// onAsset runs on each GET /v1/assets/ast_1, counted in assetGets.
	onAsset   func()
	assetGets atomic.Int32
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/uploads", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(w, r) {
			return
		}
		f.ctLength = r.ContentLength
		f.expect = r.Header.Get("Expect")
		f.query = map[string]string{}
		for k := range r.URL.Query() {
			f.query[k] = r.URL.Query().Get(k)
		}
		f.received, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		if r.URL.Query().Get("webhook_url") != "" {
			fmt.Fprint(w, `{"job_id":"job_1","asset_id":"ast_1","status_url":"x","asset_url":"y","webhook_secret":"whsec_upload"}`)
			return
		}
		fmt.Fprint(w, `{"job_id":"job_1","asset_id":"ast_1","status_url":"x","asset_url":"y"}`)
	})
	mux.HandleFunc("GET /v1/jobs/job_1/events", func(w http.ResponseWriter, r *http.Request) {
		if f.events == nil {
			http.NotFound(w, r)
			return
		}
		f.events(w, r)
	})
	mux.HandleFunc("GET /v1/jobs/job_1", func(w http.ResponseWriter, r *http.Request) {
		n := int(f.polls.Add(1)) - 1
		s := f.states[min(n, len(f.states)-1)]
		if s == "404" {
			writeError(w, http.StatusNotFound, "not_found", "job not found")
			return
		}
		body := fmt.Sprintf(`{"id":"job_1","asset_id":"ast_1","state":%q,"progress":0.5}`, s)
		if s == "playable" {
			body = `{"id":"job_1","asset_id":"ast_1","state":"transcoding","progress":0.3,"playable_at":"2026-01-01T00:00:00Z"}`
		}
		if s == "failed" {
			body = `{"id":"job_1","asset_id":"ast_1","state":"failed","error":{"code":"invalid_media","message":"not a video"}}`
		}
		fmt.Fprint(w, body)
	})
	mux.HandleFunc("GET /v1/assets/ast_1", func(w http.ResponseWriter, r *http.Request) {
		f.assetGets.Add(1)
		if f.onAsset != nil {
			f.onAsset()
		}
		fmt.Fprint(w, `{"id":"ast_1","state":"ready","playback":{"hls":"http://play/v1/play/ast_1/master.m3u8"}}`)
	})
	return mux
}

func tempFile(t *testing.T, size int) (string, []byte) {
	t.Helper()
	data := bytes.Repeat([]byte("kiln-video-bytes"), size/16+1)[:size]
	p := filepath.Join(t.TempDir(), "clip one.mp4")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func TestUploadStreamsTheFile(t *testing.T) {
	f := &fakeAPI{t: t}
	srv := httptest.NewServer(f.handler())
	defer srv.Close()
	e, stdout, stderr := testEnv(t, srv)
	path, data := tempFile(t, 300<<10)
	err := e.run(t.Context(), "upload", []string{path, "--preset", "fast", "--playback-policy", "signed", "--priority", "low", "--webhook-url", "https://h.example/x?a=1"})
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "job_1\n" {
		t.Fatalf("stdout = %q, want the job id", stdout)
	}
	if sha256.Sum256(f.received) != sha256.Sum256(data) || f.ctLength != int64(len(data)) {
		t.Fatalf("server got %d bytes (Content-Length %d), want %d", len(f.received), f.ctLength, len(data))
	}
	if f.expect != "100-continue" {
		t.Fatalf("Expect = %q", f.expect)
	}
	want := map[string]string{"filename": "clip one.mp4", "preset": "fast", "playback_policy": "signed", "priority": "low", "webhook_url": "https://h.example/x?a=1"}
	for k, v := range want {
		if f.query[k] != v {
			t.Fatalf("query %s = %q, want %q (all: %v)", k, f.query[k], v, f.query)
		}
	}
	if !strings.Contains(stderr.String(), "uploaded 300.0 KiB in") {
		t.Fatalf("stderr lacks the summary: %q", stderr)
	}
	// The webhook's secret, which the server shows once, is printed (on
	// stderr: stdout stays the job id for scripts).
	if !strings.Contains(stderr.String(), "webhook secret (shown once; verifies this upload's webhooks): whsec_upload\n") {
		t.Fatalf("stderr lacks the webhook secret: %q", stderr)
	}
}

func TestUploadRefusedBeforeBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusBadRequest, "invalid_preset", `unknown preset "nope"`)
	}))
	defer srv.Close()
	e, stdout, _ := testEnv(t, srv)
	path, _ := tempFile(t, 4<<20)
	err := e.run(t.Context(), "upload", []string{path, "--preset", "nope"})
	if exitCode(err) != exitAPI || !strings.Contains(err.Error(), `invalid_preset: unknown preset "nope"`) {
		t.Fatalf("err = %v (exit %d)", err, exitCode(err))
	}
	if stdout.Len() != 0 {
		t.Fatalf("stdout = %q", stdout)
	}
}

// sse writes events to w, flushing each chunk separately, split mid-line.
func sse(chunks ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		for _, c := range chunks {
			io.WriteString(w, c)
			w.(http.Flusher).Flush()
			time.Sleep(2 * time.Millisecond)
		}
	}
}

func TestUploadWait(t *testing.T) {
	job := func(state string, p float64) string {
		return fmt.Sprintf(`{"id":"job_1","asset_id":"ast_1","state":%q,"progress":%g}`, state, p)
	}
	failed := `{"id":"job_1","asset_id":"ast_1","state":"failed","error":{"code":"invalid_media","message":"not a video"}}`
	tests := []struct {
		name      string
		events    http.HandlerFunc
		states    []string
		want      int
		lastOut   string
		errHas    string
		minPolls  int
		maxPolls  int
		stderrHas string
		lines     int // stdout lines, when checked
	}{
		{name: "events to ready",
			events: sse(": hi\n\n", "data: "+job("probing", 0)+"\n", "\n:ping\n\nevent: heart", "beat\ndata: {}\n\ndata: "+job("transcoding", 0.4)[:20],
				job("transcoding", 0.4)[20:]+"\n\n", "data: "+job("ready", 1)+"\n\n"),
			states: []string{"queued"}, want: exitOK, lastOut: "http://play/v1/play/ast_1/master.m3u8", stderrHas: "transcoding"},
		{name: "events to failed", events: sse("data: " + failed + "\n\n"), states: []string{"queued"},
			want: exitFailed, errHas: "job job_1 failed: invalid_media: not a video"},
		{name: "events to canceled", events: sse("data: " + job("canceled", 0.3) + "\n\n"), states: []string{"queued"},
			want: exitCanceled, errHas: "canceled"},
		{name: "no stream: poll through 404 to ready", states: []string{"404", "404", "queued", "transcoding", "ready"},
			want: exitOK, lastOut: "http://play/v1/play/ast_1/master.m3u8", minPolls: 5},
		{name: "no stream: poll to failed", states: []string{"probing", "failed"}, want: exitFailed, errHas: "invalid_media", minPolls: 2},
		{name: "stream breaks: poll the rest", events: sse("data: " + job("transcoding", 0.2) + "\n\n"),
			states: []string{"ready"}, want: exitOK, lastOut: "http://play/v1/play/ast_1/master.m3u8", minPolls: 1},
		{name: "stream answers JSON: poll", events: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{}`)
		}, states: []string{"ready"}, want: exitOK, minPolls: 1},
		{name: "job never appears", states: []string{"404"}, want: exitAPI, errHas: "not_found"},
		{name: "job not recorded yet: poll until known, then stream", events: func() http.HandlerFunc {
			var calls atomic.Int32
			stream := sse("data: " + job("ready", 1) + "\n\n")
			return func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) == 1 {
					writeError(w, http.StatusNotFound, "not_found", "job not found")
					return
				}
				stream(w, r)
			}
		}(), states: []string{"404", "404", "queued", "failed"}, want: exitOK, lastOut: "http://play/v1/play/ast_1/master.m3u8", minPolls: 3, maxPolls: 3},
		{name: "no stream: playable, then ready: the URL once", states: []string{"queued", "playable", "playable", "ready"},
			want: exitOK, lastOut: "http://play/v1/play/ast_1/master.m3u8", lines: 2, minPolls: 4, stderrHas: "playable while encoding"},
		{name: "no stream: playable, then failed", states: []string{"playable", "failed"},
			want: exitFailed, errHas: "invalid_media", lastOut: "http://play/v1/play/ast_1/master.m3u8", lines: 2, minPolls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAPI{t: t, events: tt.events, states: tt.states}
			srv := httptest.NewServer(f.handler())
			defer srv.Close()
			e, stdout, stderr := testEnv(t, srv)
			e.notFoundGrace = 50 * time.Millisecond
			path, _ := tempFile(t, 1000)
			err := e.run(t.Context(), "upload", []string{"--wait", path})
			if got := exitCode(err); got != tt.want {
				t.Fatalf("exit %d (%v), want %d; stderr:\n%s", got, err, tt.want, stderr)
			}
			if tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)) {
				t.Fatalf("err = %v, want %q", err, tt.errHas)
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if lines[0] != "job_1" {
				t.Fatalf("stdout = %q, want the job id first", stdout)
			}
			if tt.lastOut != "" && lines[len(lines)-1] != tt.lastOut {
				t.Fatalf("stdout = %q, want last line %q", stdout, tt.lastOut)
			}
			if tt.lines > 0 && len(lines) != tt.lines {
				t.Fatalf("stdout = %q, want %d lines", stdout, tt.lines)
			}
			if int(f.polls.Load()) < tt.minPolls {
				t.Fatalf("%d polls, want ≥ %d", f.polls.Load(), tt.minPolls)
			}
			if tt.maxPolls > 0 && int(f.polls.Load()) > tt.maxPolls {
				t.Fatalf("%d polls, want ≤ %d", f.polls.Load(), tt.maxPolls)
			}
			if tt.minPolls == 0 && tt.events != nil && f.polls.Load() != 0 {
				t.Fatalf("polled %d times although the stream worked", f.polls.Load())
			}
			if tt.stderrHas != "" && !strings.Contains(stderr.String(), tt.stderrHas) {
				t.Fatalf("stderr lacks %q:\n%s", tt.stderrHas, stderr)
			}
		})
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestTransferBarRender(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	var out bytes.Buffer
	b := newTransferBar(&out, false, clock.now, 4<<20)
	clock.add(2 * time.Second)
	b.sent = 1 << 20
	want := "upload [======>                 ]  25%  1.0 MiB / 4.0 MiB  512.0 KiB/s  ETA 6s"
	if got := b.render(); got != want {
		t.Fatalf("render:\n got %q\nwant %q", got, want)
	}
	b.sent = 0
	if got := b.render(); !strings.Contains(got, "ETA --") || !strings.Contains(got, "  0%") {
		t.Fatalf("nothing sent yet: %q", got)
	}
}

func TestTransferBarNotTerminal(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	var out bytes.Buffer
	b := newTransferBar(&out, false, clock.now, 1000)
	for range 100 {
		clock.add(10 * time.Millisecond)
		b.add(10)
	}
	b.done()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 10 { // 10 %, 20 % … 90 %, then the summary
		t.Fatalf("%d lines, want 10:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[0], " 10%") || !strings.Contains(lines[8], " 90%") {
		t.Fatalf("lines:\n%s", out.String())
	}
	if lines[9] != "uploaded 1000 B in 1s (1000 B/s)" {
		t.Fatalf("summary %q", lines[9])
	}
	if strings.Contains(out.String(), "\r") {
		t.Fatal("carriage return outside a terminal")
	}
}

func TestTransferBarTerminalRedrawRate(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	var out bytes.Buffer
	b := newTransferBar(&out, true, clock.now, 1000)
	// 100 reads over one second: at most 10 redraws (+ the first).
	for range 100 {
		b.add(10)
		clock.add(10 * time.Millisecond)
	}
	draws := strings.Count(out.String(), "\r")
	if draws < 9 || draws > 11 {
		t.Fatalf("%d redraws in 1 s, want about 10", draws)
	}
	b.done()
	s := out.String()
	if !strings.HasSuffix(s, "\nuploaded 1000 B in 1s (1000 B/s)\n") {
		t.Fatalf("output ends %q", s[max(0, len(s)-80):])
	}
	if !strings.Contains(s, "100%") {
		t.Fatal("the final redraw shows 100%")
	}
}

func TestJobBar(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(0, 0)}
	b := &jobBar{l: liner{w: &out, now: clock.now}, id: "job_1"}
	for _, j := range []jobInfo{{State: "queued"}, {State: "probing"}, {State: "transcoding", Progress: 0.05},
		{State: "transcoding", Progress: 0.12}, {State: "transcoding", Progress: 0.15}, {State: "transcoding", Progress: 0.5}} {
		b.update(j)
	}
	b.final(jobInfo{State: "ready", Progress: 0.9})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 6 { // queued, probing, transcoding 5 %, 12 %, 50 %, ready
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	if want := "job_1 ready       [========================] 100%"; lines[5] != want {
		t.Fatalf("final line %q, want %q", lines[5], want)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[float64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%v) = %q, want %q", n, got, want)
		}
	}
}

func FuzzSSEReader(f *testing.F) {
	for _, s := range []string{"data: x\n\n", ": c\r\n\r\n", "event: job\rdata: {}\r\r", "data\n\ndata:\n\n", "id: 1\ndata: a\ndata: b\n\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r := newSSEReader(strings.NewReader(s))
		for range len(s) + 1 {
			ev, err := r.next()
			if err != nil {
				return
			}
			if strings.ContainsAny(ev.Type, "\r\n") || strings.ContainsRune(ev.Data, '\r') {
				t.Fatalf("event %+v keeps line breaks", ev)
			}
		}
		t.Fatalf("more events than bytes in %q", s)
	})
}

// TestUploadWaitPlayable: the playback URL is printed the moment the job
// is playable, while the stream still runs, and not again at ready.
func TestUploadWaitPlayable(t *testing.T) {
	asked := make(chan struct{})
	var once sync.Once
	f := &fakeAPI{t: t, states: []string{"ready"}, onAsset: func() { once.Do(func() { close(asked) }) }}
	f.events = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		send := func(ev string) {
			io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
		send(`event: job` + "\n" + `data: {"id":"job_1","asset_id":"ast_1","state":"transcoding","progress":0.1}` + "\n\n")
		playable := `{"id":"job_1","asset_id":"ast_1","state":"transcoding","progress":0.2,"playable_at":"2026-01-01T00:00:00Z"}`
		send("event: job\ndata: " + playable + "\n\nevent: playable\ndata: " + playable + "\n\n")
		select { // the ready comes only once the CLI asked for the URL
		case <-asked:
		case <-time.After(10 * time.Second):
			t.Error("the CLI did not ask for the playback URL when the job became playable")
		}
		send(`event: job` + "\n" + `data: {"id":"job_1","asset_id":"ast_1","state":"ready","progress":1,"playable_at":"2026-01-01T00:00:00Z"}` + "\n\n")
	}
	srv := httptest.NewServer(f.handler())
	defer srv.Close()
	e, stdout, stderr := testEnv(t, srv)
	path, _ := tempFile(t, 100)
	if err := e.run(t.Context(), "upload", []string{"--wait", path}); err != nil {
		t.Fatalf("upload --wait: %v\n%s", err, stderr)
	}
	if got, want := stdout.String(), "job_1\nhttp://play/v1/play/ast_1/master.m3u8\n"; got != want {
		t.Fatalf("stdout = %q, want %q", got, want)
	}
	if n := f.assetGets.Load(); n != 1 {
		t.Errorf("%d asset requests, want 1", n)
	}
	if !strings.Contains(stderr.String(), "playable while encoding") || f.polls.Load() != 0 {
		t.Errorf("stderr:\n%s\n%d polls", stderr, f.polls.Load())
	}
}

// TestChunksOutput: a chunked transcode's progress shows "chunks N/M" in
// the job bar (upload --wait) and the jobs table; a job without chunks
// shows none.
func TestChunksOutput(t *testing.T) {
	var j jobInfo
	if err := json.Unmarshal([]byte(`{"id":"job_1","state":"transcoding","progress":0.5,"chunks":{"done":3,"total":8}}`), &j); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	b := &jobBar{l: liner{w: &out, now: (&fakeClock{t: time.Unix(0, 0)}).now}, id: "job_1"}
	b.update(j)
	if want := "job_1 transcoding [============>           ]  50% chunks 3/8"; strings.TrimSpace(out.String()) != want {
		t.Fatalf("bar %q, want %q", strings.TrimSpace(out.String()), want)
	}
	if got := b.render(jobInfo{State: "transcoding", Progress: 0.5}); strings.Contains(got, "chunks") {
		t.Fatalf("bar of a job not chunked: %q", got)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !authorized(w, r) {
			return
		}
		fmt.Fprint(w, `{"jobs":[
			{"id":"job_a","state":"transcoding","progress":0.25,"chunks":{"done":2,"total":8},"created_at":"2026-03-01T10:00:00Z","source":{"key":"a.mp4"}},
			{"id":"job_b","state":"transcoding","progress":0.5,"created_at":"2026-03-01T11:00:00Z","source":{"key":"b.mp4"}}
		],"next_cursor":null}`)
	}))
	defer srv.Close()
	e, stdout, _ := testEnv(t, srv)
	if err := e.run(t.Context(), "jobs", nil); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "25% chunks 2/8") || strings.Contains(lines[2], "chunks") {
		t.Fatalf("table:\n%s", stdout)
	}
}
