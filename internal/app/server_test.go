package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestHTTPServerTimeouts: the process's HTTP server closes a keep-alive
// connection that stays idle past HTTPIdleTimeout, and cuts a request whose
// body does not arrive within HTTPReadTimeout.
func TestHTTPServerTimeouts(t *testing.T) {
	cfg := Defaults()
	cfg.HTTPReadTimeout, cfg.HTTPIdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	readErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		if err != nil {
			readErr <- err
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := newHTTPServer(t.Context(), cfg, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// closedWithin reports whether the server closes c within d.
	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}

	// Idle keep-alive connection.
	c := dial()
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first request: %v %v", resp, err)
	}
	if !closedWithin(c, 3*time.Second) {
		t.Error("an idle keep-alive connection is still open 3 s after the idle timeout")
	}

	// A body that never comes.
	c2 := dial()
	defer c2.Close()
	if _, err := io.WriteString(c2, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a bit"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("body read error %v, want a timeout", err)
		}
	case <-time.After(3 * time.Second):
		t.Error("a request body that stopped arriving is still being read 3 s after the read timeout")
	}

	// Headers that never end.
	c3 := dial()
	defer c3.Close()
	if _, err := io.WriteString(c3, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(c3, 3*time.Second) {
		t.Error("a request whose headers never end is still open 3 s after the read timeout")
	}
}

// TestReadyzHidesDetails: /readyz needs no key, so a failing dependency is
// "unavailable" in the answer and its error (which names internal
// addresses) goes to the log.
func TestReadyzHidesDetails(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	p := &process{log: zap.New(core), checks: map[string]func(context.Context) error{
		"redis": func(context.Context) error {
			return errors.New("dial tcp 10.20.30.40:6379: connect: connection refused")
		},
		"nats": func(context.Context) error { return nil },
	}}
	rec := httptest.NewRecorder()
	p.ready(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "10.20.30.40") || strings.Contains(rec.Body.String(), "refused") {
		t.Errorf("/readyz shows internal details: %s", rec.Body)
	}
	var got map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got["redis"] != "unavailable" || got["nats"] != "ok" {
		t.Errorf("/readyz = %s (%v)", rec.Body, err)
	}
	if e := logs.FilterField(zap.String("check", "redis")).All(); len(e) != 1 || !strings.Contains(e[0].ContextMap()["error"].(string), "10.20.30.40") {
		t.Errorf("the failing check is not logged with its error: %+v", logs.All())
	}
}
