package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestClientIP(t *testing.T) {
	proxies, err := ParseProxies("10.0.0.0/8, 127.0.0.1, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, remote string
		xff          []string
		p            Proxies
		want         string
	}{
		{"no proxy trusted: the peer", "203.0.113.9:1234", []string{"198.51.100.1"}, Proxies{}, "203.0.113.9"},
		{"untrusted peer's header ignored", "203.0.113.9:1234", []string{"198.51.100.1"}, proxies, "203.0.113.9"},
		{"trusted proxy: the client it names", "10.1.2.3:80", []string{"198.51.100.1"}, proxies, "198.51.100.1"},
		{"a client cannot prepend its own choice", "10.1.2.3:80", []string{"1.2.3.4, 198.51.100.1"}, proxies, "198.51.100.1"},
		{"chain of trusted proxies", "127.0.0.1:80", []string{"198.51.100.1, 10.9.9.9", "10.0.0.1"}, proxies, "198.51.100.1"},
		{"trusted proxy without header", "10.1.2.3:80", nil, proxies, "10.1.2.3"},
		{"garbage stops the walk", "10.1.2.3:80", []string{"198.51.100.1, nonsense"}, proxies, "10.1.2.3"},
		{"ipv6 peer", "[2001:db8::1]:80", nil, proxies, "2001:db8::1"},
		{"v4-mapped peer", "[::ffff:10.1.2.3]:80", []string{"198.51.100.7"}, proxies, "198.51.100.7"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tt.p.ClientIP(r); got.String() != tt.want {
				t.Fatalf("ClientIP = %s, want %s", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"10.0.0.0/33", "not-an-ip", "10.0.0.1/"} {
		if _, err := ParseProxies(bad); err == nil {
			t.Errorf("ParseProxies(%q): no error", bad)
		}
	}
}

func TestClientLimiter(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l, err := NewClientLimiter(1, 2, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	h := l.Limit(Proxies{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	from := func(addr string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/v1/play/x", nil)
		r.RemoteAddr = addr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	for i := range 2 {
		if rec := from("203.0.113.1:1"); rec.Code != http.StatusNoContent {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
	}
	rec := from("203.0.113.1:2") // another port, same client
	if rec.Code != http.StatusTooManyRequests || errorCode(t, rec) != CodeRateLimited || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("over the burst: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	// One IPv6 /64 is one client.
	from("[2001:db8:0:1::1]:1")
	from("[2001:db8:0:1::2]:1")
	if rec := from("[2001:db8:0:1::3]:1"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("same /64: %d", rec.Code)
	}
	if rec := from("[2001:db8:0:2::1]:1"); rec.Code != http.StatusNoContent {
		t.Fatalf("another /64: %d", rec.Code)
	}
	clock.Add(time.Second)
	if rec := from("203.0.113.1:1"); rec.Code != http.StatusNoContent {
		t.Fatalf("after a second: %d", rec.Code)
	}
	// Idle clients are forgotten.
	clock.Add(time.Hour)
	from("198.51.100.1:1")
	l.mu.Lock()
	n := len(l.clients)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d clients remembered after an hour, want 1", n)
	}
	if none, _ := NewClientLimiter(0, 0, nil); none != nil {
		t.Fatal("rate 0 should be no limiter")
	}
}
