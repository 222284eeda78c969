package webhooks

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"code.dny.dev/ssrf"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// TestGuardRefusesAtDialTime dials refused addresses through the guarded
// transport: the guard runs as net.Dialer.Control, after resolution and
// before connect, so nothing leaves the machine.
func TestGuardRefusesAtDialTime(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	loop := strings.TrimPrefix(srv.URL, "http://")
	for _, tt := range []struct {
		name          string
		addr          string
		allowLoopback bool
		refused       bool
	}{
		{"private", "10.0.0.1:80", false, true},
		{"private even with loopback allowed", "10.0.0.1:80", true, true},
		{"metadata", "169.254.169.254:80", false, true},
		{"metadata even with loopback allowed", "169.254.169.254:80", true, true},
		{"loopback", loop, false, true},
		{"loopback by name", "localhost:" + loop[strings.LastIndex(loop, ":")+1:], false, true},
		{"ipv6 loopback", "[::1]:80", false, true},
		{"rfc1918 192.168", "192.168.1.1:443", false, true},
		{"loopback allowed", loop, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			conn, err := GuardedTransport(tt.allowLoopback).DialContext(ctx, "tcp", tt.addr)
			if conn != nil {
				conn.Close()
			}
			if tt.refused && !errors.Is(err, ssrf.ErrProhibitedIP) {
				t.Fatalf("dial %s: %v, want ssrf.ErrProhibitedIP", tt.addr, err)
			}
			if !tt.refused && err != nil {
				t.Fatalf("dial %s: %v", tt.addr, err)
			}
		})
	}
	if tr := GuardedTransport(false); tr.Proxy != nil {
		t.Error("transport uses a proxy")
	}
}

func TestDeliverRefusedByGuard(t *testing.T) {
	d := NewDeliverer(DelivererConfig{Timeout: 2 * time.Second})
	for _, u := range []string{"http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:9/x"} {
		res := d.Deliver(t.Context(), &taskPayload{URL: u, EventID: "evt_x", Secrets: []string{NewSecret()}, Body: "{}"})
		if res.OK() || res.StatusCode != 0 || !strings.Contains(res.Error, "prohibited IP") {
			t.Errorf("%s: %+v, want refused by the guard", u, res)
		}
	}
}

var sigFormat = regexp.MustCompile(`^v1,[A-Za-z0-9+/]{43}=( v1,[A-Za-z0-9+/]{43}=)*$`)

func TestDeliverHeadersAndSignature(t *testing.T) {
	secret, old := NewSecret(), NewSecret()
	var got atomic.Pointer[http.Request]
	var body atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body.Store(b)
		got.Store(r)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	d := NewDeliverer(DelivererConfig{AllowLoopback: true})
	payload := `{"type":"job.ready","id":"evt_abc","data":{}}`
	before := time.Now().Unix()
	res := d.Deliver(t.Context(), &taskPayload{URL: srv.URL + "/hook?x=1", EventID: "evt_abc", Secrets: []string{secret, old}, Body: payload})
	if !res.OK() || res.StatusCode != 204 || res.Error != "" || res.RetryAfterMS != -1 {
		t.Fatalf("result %+v", res)
	}
	r := got.Load()
	if r.Method != http.MethodPost || r.URL.Path != "/hook" || r.URL.RawQuery != "x=1" {
		t.Errorf("request %s %s", r.Method, r.URL)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if id := r.Header.Get("webhook-id"); id != "evt_abc" {
		t.Errorf("webhook-id %q", id)
	}
	ts, err := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("webhook-timestamp %q", r.Header.Get("webhook-timestamp"))
	}
	sig := r.Header.Get("webhook-signature")
	if !sigFormat.MatchString(sig) || strings.Count(sig, "v1,") != 2 {
		t.Errorf("webhook-signature %q: want two v1 signatures", sig)
	}
	if string(body.Load().([]byte)) != payload {
		t.Errorf("body %q", body.Load())
	}
	// Independently: the first signature is HMAC(new secret), the second
	// HMAC(old secret), of id.timestamp.body.
	for i, s := range []string{secret, old} {
		key, _ := ParseSecret(s)
		if want := Sign(key, "evt_abc", time.Unix(ts, 0), []byte(payload)); strings.Split(sig, " ")[i] != want {
			t.Errorf("signature %d = %q, want %q", i, strings.Split(sig, " ")[i], want)
		}
		wh, _ := standardwebhooks.NewWebhook(s)
		if err := wh.Verify([]byte(payload), r.Header); err != nil {
			t.Errorf("standard webhooks verify with secret %d: %v", i, err)
		}
	}
}

func TestDeliverOutcomes(t *testing.T) {
	var status atomic.Int32
	var retryAfter atomic.Value
	retryAfter.Store("")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ra := retryAfter.Load().(string); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		if status.Load() == 302 {
			http.Redirect(w, r, "http://10.0.0.1/", http.StatusFound)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	d := NewDeliverer(DelivererConfig{AllowLoopback: true, Timeout: 2 * time.Second})
	for _, tt := range []struct {
		status  int
		ra      string
		ok      bool
		raMS    int64
		comment string
	}{
		{200, "", true, -1, "2xx"},
		{299, "", true, -1, "2xx"},
		{302, "", false, -1, "redirects are not followed nor success"},
		{410, "", false, -1, "gone"},
		{500, "30", false, -1, "Retry-After only counts on 429/503"},
		{429, "30", false, 30000, "429 with seconds"},
		{503, "100000", false, MaxRetryAfter.Milliseconds(), "503 capped"},
		{503, "", false, -1, "503 without Retry-After"},
	} {
		status.Store(int32(tt.status))
		retryAfter.Store(tt.ra)
		res := d.Deliver(t.Context(), &taskPayload{URL: srv.URL, EventID: "evt_x", Secrets: []string{NewSecret()}, Body: "{}"})
		if res.OK() != tt.ok || res.StatusCode != tt.status || res.RetryAfterMS != tt.raMS {
			t.Errorf("%s: status %d: %+v", tt.comment, tt.status, res)
		}
	}
}

func TestDeliverTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	d := NewDeliverer(DelivererConfig{AllowLoopback: true, Timeout: 200 * time.Millisecond})
	res := d.Deliver(t.Context(), &taskPayload{URL: srv.URL, EventID: "evt_x", Secrets: []string{NewSecret()}, Body: "{}"})
	if res.OK() || !strings.HasPrefix(res.Error, "timeout") {
		t.Fatalf("%+v, want a timeout", res)
	}
}
