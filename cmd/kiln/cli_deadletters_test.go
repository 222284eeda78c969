package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDeadLetters(t *testing.T) {
	var mu sync.Mutex
	var replayed []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !authorized(w, r) {
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/dead-letters":
			q := r.URL.Query()
			if q.Get("consumer") != "ingest" || q.Get("limit") != "2" || q.Get("cursor") != "4" {
				http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
				return
			}
			fmt.Fprint(w, `{"dead_letters":[
				{"seq":5,"consumer":"ingest","subject":"kiln.s3.events","reason":"ingest: s3 event: permanent:\nparse: unexpected end of JSON input","failed_at":"2026-03-01T10:00:00Z","stream_seq":41,"deliveries":1,"size":3},
				{"seq":7,"consumer":"ingest","subject":"kiln.objects.landed","reason":"","failed_at":"2026-03-01T11:00:00Z","stream_seq":52,"deliveries":2,"size":9}
			],"next_cursor":"7"}`)
		case r.Method == http.MethodPost && r.URL.Path == "/v1/dead-letters/5/replay":
			mu.Lock()
			replayed = append(replayed, "5")
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, `{"seq":5,"consumer":"ingest","subject":"kiln.s3.events","reason":"x","failed_at":"2026-03-01T10:00:00Z","stream_seq":41,"deliveries":1,"size":3,"replayed":true}`)
		case r.Method == http.MethodPost && r.URL.Path == "/v1/dead-letters/6/replay":
			writeError(w, http.StatusNotFound, "not_found", "dead letter not found")
		default:
			http.Error(w, "unexpected "+r.Method+" "+r.URL.String(), http.StatusBadRequest)
		}
	}))
	defer srv.Close()

	e, stdout, stderr := testEnv(t, srv)
	if err := e.run(t.Context(), "dead-letters", []string{"--consumer", "ingest", "--limit", "2", "--cursor", "4"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ ") || !strings.Contains(lines[0], "REASON") {
		t.Fatalf("table:\n%s", stdout)
	}
	failed := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC).Local().Format("2006-01-02 15:04:05")
	for _, want := range []string{"5", "ingest", "kiln.s3.events", failed, "ingest: s3 event: permanent: parse: unexpected end of JSON input"} {
		if !strings.Contains(lines[1], want) {
			t.Fatalf("row %q lacks %q", lines[1], want)
		}
	}
	if !strings.HasSuffix(lines[2], " -") || strings.Index(lines[2], "kiln.objects.landed") != strings.Index(lines[0], "SUBJECT") {
		t.Fatalf("row %q: empty reason shown as -, columns aligned:\n%s", lines[2], stdout)
	}
	if !strings.Contains(stderr.String(), "kiln dead-letters --cursor 7") {
		t.Fatalf("stderr lacks the next cursor: %q", stderr)
	}

	stdout.Reset()
	if err := e.run(t.Context(), "dead-letters", []string{"replay", "5"}); err != nil {
		t.Fatal(err)
	}
	if got := stdout.String(); got != "replayed dead letter 5 to kiln.s3.events (consumer ingest)\n" || len(replayed) != 1 {
		t.Fatalf("replay: %q, %v", got, replayed)
	}

	for _, tt := range []struct {
		args   []string
		code   int
		errHas string
	}{
		{[]string{"replay", "6"}, exitAPI, "not_found: dead letter not found"},
		{[]string{"replay", "abc"}, exitUsage, "positive integer"},
		{[]string{"replay", "0"}, exitUsage, "positive integer"},
		{[]string{"replay"}, exitUsage, "missing argument"},
		{[]string{"replay", "5", "6"}, exitUsage, "unexpected arguments: 6"},
		{[]string{"--limit", "-1"}, exitUsage, "--limit"},
		{[]string{"extra"}, exitUsage, "unexpected arguments: extra"},
	} {
		err := e.run(t.Context(), "dead-letters", tt.args)
		if exitCode(err) != tt.code || err == nil || !strings.Contains(err.Error(), tt.errHas) {
			t.Errorf("dead-letters %v: exit %d (%v), want %d with %q", tt.args, exitCode(err), err, tt.code, tt.errHas)
		}
	}
	if len(replayed) != 1 {
		t.Errorf("replayed %v", replayed)
	}
}

func TestDeadLettersDispatched(t *testing.T) {
	var stdout, stderr strings.Builder
	err := run([]string{"dead-letters", "--api-url", "ftp://x"}, &stdout, &stderr)
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "--api-url") {
		t.Fatalf("kiln dead-letters is not a client command: %v", err)
	}
	if err := run([]string{"help"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "kiln dead-letters replay SEQ") {
		t.Fatalf("help lacks dead-letters: %v\n%s", err, stdout.String())
	}
}
