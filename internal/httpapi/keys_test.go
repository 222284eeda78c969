package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

func TestParseKeys(t *testing.T) {
	const (
		ka  = "kiln_a0123456789abcdef0123" // MinKeyLength and more
		kb  = "kiln_b0123456789abcdef0123"
		b64 = "c2VjcmV0c2VjcmV0c2VjcmV0c2U=" // base64 with padding
	)
	tests := []struct {
		name string
		in   string
		want []APIKey
		err  string // substring of the error; "" means success
	}{
		{"empty", "", nil, ""},
		{"blanks and trailing comma", " , ,", nil, ""},
		{"plain key is write", ka, []APIKey{{Name: "key-1", Secret: ka, Scope: ScopeWrite}}, ""},
		{"explicit scopes", ka + ":write, " + kb + ":read", []APIKey{
			{Name: "key-1", Secret: ka, Scope: ScopeWrite},
			{Name: "key-2", Secret: kb, Scope: ScopeRead},
		}, ""},
		{"named", "ci=" + ka + ":write,dash.board_1=" + kb + ":read", []APIKey{
			{Name: "ci", Secret: ka, Scope: ScopeWrite},
			{Name: "dash.board_1", Secret: kb, Scope: ScopeRead},
		}, ""},
		{"positional names count skipped entries", ka + ",," + kb, []APIKey{
			{Name: "key-1", Secret: ka, Scope: ScopeWrite},
			{Name: "key-3", Secret: kb, Scope: ScopeWrite},
		}, ""},
		{"plain key with base64 padding", b64, []APIKey{{Name: "key-1", Secret: b64, Scope: ScopeWrite}}, ""},
		{"named key with '=' inside", "ci=" + b64 + ":read", []APIKey{{Name: "ci", Secret: b64, Scope: ScopeRead}}, ""},
		{"key with ':' and explicit scope", "a:" + kb + ":write", []APIKey{{Name: "key-1", Secret: "a:" + kb, Scope: ScopeWrite}}, ""},
		{"exactly the minimum length", "kiln_0123456789abcdefghi", []APIKey{{Name: "key-1", Secret: "kiln_0123456789abcdefghi", Scope: ScopeWrite}}, ""},
		{"unknown scope", ka + ":owner", nil, "scope must be"},
		{"admin scope", "boss=" + ka + ":admin", []APIKey{{Name: "boss", Secret: ka, Scope: ScopeAdmin}}, ""},
		{"key with ':' without scope", "a:b", nil, "scope must be"},
		{"scope in capitals", ka + ":READ", nil, "scope must be"},
		{"empty key with scope", ":read", nil, "empty key"},
		{"named empty key", "ci=:read", nil, "empty key"},
		{"bad name", "c i=" + ka + ":read", nil, "name"},
		{"empty name", "=" + ka + ":read", nil, "name"},
		{"duplicate name", "ci=" + ka + ":read,ci=" + kb + ":write", nil, "used twice"},
		{"duplicate key", ka + ":read," + ka + ":write", nil, "listed twice"},
		{"duplicate name via position", "key-2=" + ka + ":read," + kb, nil, "used twice"},
		{"short key", "kiln_short", nil, "want at least 24"},
		{"one character short", "kiln_0123456789abcdefgh", nil, "has 23 characters"},
		{"short named key", "ci=kiln_a:read", nil, "(ci)"},
		{"short key among long ones", ka + ",kiln_b", nil, "#2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeys(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrBadKeySpec) {
					t.Fatalf("err = %v, want ErrBadKeySpec containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseKeysErrorHidesSecret(t *testing.T) {
	for _, in := range []string{"supersecret:admin", "bad name=supersecret:read", "x=supersecretsupersecret123:read,x=supersecretsupersecret124:read",
		"supersecretsupersecret123,supersecretsupersecret123", "supersecret"} {
		_, err := ParseKeys(in)
		if err == nil {
			t.Fatalf("%q: no error", in)
		}
		if strings.Contains(err.Error(), "supersecret") {
			t.Fatalf("%q: error leaks the key: %v", in, err)
		}
	}
	if s := (APIKey{Name: "ci", Secret: "supersecret", Scope: ScopeRead}).String(); strings.Contains(s, "supersecret") {
		t.Fatalf("String leaks the key: %s", s)
	}
}

func TestNewKeySetConfig(t *testing.T) {
	keys := []APIKey{{Secret: "a"}}
	for _, tt := range []struct {
		name string
		cfg  KeysConfig
		ok   bool
	}{
		{"defaults", KeysConfig{Keys: keys, RateLimit: DefaultRateLimit, Burst: DefaultRateBurst}, true},
		{"unlimited", KeysConfig{Keys: keys}, true},
		{"negative rate", KeysConfig{Keys: keys, RateLimit: -1, Burst: 1}, false},
		{"zero burst", KeysConfig{Keys: keys, RateLimit: 1}, false},
		{"bad scope", KeysConfig{Keys: []APIKey{{Secret: "a", Scope: "owner"}}}, false},
		{"empty secret", KeysConfig{Keys: []APIKey{{Name: "x"}}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewKeySet(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// echoName answers 204 with the key name in a header.
var echoName = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Key-Name", KeyName(r.Context()))
	w.WriteHeader(http.StatusNoContent)
})

func serve(h http.Handler, method, key string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/v1/x", nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, rec.Body)
	}
	if body.Error.Message == "" {
		t.Fatalf("error without message: %s", rec.Body)
	}
	return body.Error.Code
}

func TestScopes(t *testing.T) {
	specs, err := ParseKeys("reader=kiln_r0123456789abcdef0123:read,writer=kiln_w0123456789abcdef0123:write,kiln_plain0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewKeySet(KeysConfig{Keys: specs})
	if err != nil {
		t.Fatal(err)
	}
	h := keys.Require(echoName)
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}
	for _, tt := range []struct {
		key, name string
		writes    bool
	}{
		{"kiln_r0123456789abcdef0123", "reader", false},
		{"kiln_w0123456789abcdef0123", "writer", true},
		{"kiln_plain0123456789abcdef", "key-3", true},
	} {
		for _, m := range methods {
			t.Run(tt.name+"/"+m, func(t *testing.T) {
				rec := serve(h, m, tt.key)
				allowed := tt.writes || m == http.MethodGet || m == http.MethodHead
				if allowed {
					if rec.Code != http.StatusNoContent || rec.Header().Get("X-Key-Name") != tt.name {
						t.Fatalf("status %d, name %q; want 204, %q", rec.Code, rec.Header().Get("X-Key-Name"), tt.name)
					}
					return
				}
				if rec.Code != http.StatusForbidden || errorCode(t, rec) != CodeForbidden {
					t.Fatalf("status %d %s; want 403 forbidden", rec.Code, rec.Body)
				}
				if strings.Contains(rec.Body.String(), tt.key) {
					t.Fatal("response leaks the key")
				}
			})
		}
	}
	// RequireScope(read) lets a read key POST; RequireScope(write) refuses GET.
	if rec := serve(keys.RequireScope(ScopeRead, echoName), http.MethodPost, "kiln_r0123456789abcdef0123"); rec.Code != http.StatusNoContent {
		t.Fatalf("RequireScope(read) POST with read key: %d", rec.Code)
	}
	if rec := serve(keys.RequireScope(ScopeWrite, echoName), http.MethodGet, "kiln_r0123456789abcdef0123"); rec.Code != http.StatusForbidden {
		t.Fatalf("RequireScope(write) GET with read key: %d", rec.Code)
	}
	if rec := serve(keys.RequireScope(ScopeWrite, echoName), http.MethodGet, "kiln_w0123456789abcdef0123"); rec.Code != http.StatusNoContent {
		t.Fatalf("RequireScope(write) GET with write key: %d", rec.Code)
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRateLimit(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	specs, err := ParseKeys("a=kiln_a0123456789abcdef0123:write,b=kiln_b0123456789abcdef0123:read")
	if err != nil {
		t.Fatal(err)
	}
	// 0.5 request/s, burst 2: a token every 2 s.
	keys, err := NewKeySet(KeysConfig{Keys: specs, RateLimit: 0.5, Burst: 2, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h := keys.Require(echoName)
	for i := range 2 {
		if rec := serve(h, http.MethodGet, "kiln_a0123456789abcdef0123"); rec.Code != http.StatusNoContent {
			t.Fatalf("request %d within burst: %d", i, rec.Code)
		}
	}
	rec := serve(h, http.MethodGet, "kiln_a0123456789abcdef0123")
	if rec.Code != http.StatusTooManyRequests || errorCode(t, rec) != CodeRateLimited {
		t.Fatalf("over the burst: %d %s; want 429 rate_limited", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Retry-After"); got != "2" {
		t.Fatalf("Retry-After = %q, want 2", got)
	}
	// Refused requests do not consume tokens: 1.5 s later one more second is left.
	clock.Add(1500 * time.Millisecond)
	rec = serve(h, http.MethodGet, "kiln_a0123456789abcdef0123")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("after 1.5 s: %d Retry-After %q; want 429, 1 (ceil of 0.5 s)", rec.Code, rec.Header().Get("Retry-After"))
	}
	// Another key has its own bucket.
	if rec := serve(h, http.MethodGet, "kiln_b0123456789abcdef0123"); rec.Code != http.StatusNoContent {
		t.Fatalf("other key: %d", rec.Code)
	}
	clock.Add(500 * time.Millisecond)
	if rec := serve(h, http.MethodGet, "kiln_a0123456789abcdef0123"); rec.Code != http.StatusNoContent {
		t.Fatalf("after the refill: %d", rec.Code)
	}
	// Unknown keys are refused before the limiter: 401, not 429.
	if rec := serve(h, http.MethodGet, "kiln_x"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("unknown key: %d", rec.Code)
	}
}

// TestAuthFailureThrottle: an address that fails authentication
// AuthFailures times within a minute is refused with 429 and Retry-After —
// even with a valid key, so guessing learns nothing — until its budget
// refills; other addresses are not affected; failures are counted.
func TestAuthFailureThrottle(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	const good = "kiln_good0123456789abcdef"
	keys, err := NewKeySet(KeysConfig{Keys: []APIKey{{Secret: good}}, AuthFailures: 3, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h := keys.Require(echoName)
	from := func(addr, key string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/v1/x", nil)
		req.RemoteAddr = addr
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	attacker, other := "203.0.113.7:5000", "198.51.100.1:6000"
	for i := range 3 {
		key := "kiln_guess" + strings.Repeat("x", i)
		if i == 1 {
			key = "" // no key at all counts too
		}
		if rec := from(attacker, key); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i+1, rec.Code)
		}
	}
	for _, key := range []string{"kiln_guess_again", good} {
		rec := from(attacker, key)
		if rec.Code != http.StatusTooManyRequests || errorCode(t, rec) != CodeRateLimited {
			t.Fatalf("after 3 failures, key %q: %d %s; want 429 rate_limited", key, rec.Code, rec.Body)
		}
		if ra := rec.Header().Get("Retry-After"); ra != "20" { // 3 a minute: one every 20 s
			t.Fatalf("Retry-After = %q, want 20", ra)
		}
	}
	if rec := from(other, good); rec.Code != http.StatusNoContent {
		t.Fatalf("another address: %d", rec.Code)
	}
	if rec := from("[2001:db8::1]:1", "kiln_v6guess"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("ipv6 failure: %d", rec.Code)
	}
	clock.Add(20 * time.Second)
	if rec := from(attacker, good); rec.Code != http.StatusNoContent {
		t.Fatalf("after the refill, a good key: %d", rec.Code)
	}
	text, err := testutil.CollectAndFormat(keys, expfmt.TypeTextPlain, "kiln_auth_failures_total", "kiln_auth_throttled_total")
	if err != nil {
		t.Fatal(err)
	}
	b := string(text) // what /metrics serves
	for _, want := range []string{"kiln_auth_failures_total 4\n", "kiln_auth_throttled_total 2\n"} {
		if !strings.Contains(b, want) {
			t.Errorf("metrics lack %q:\n%s", want, b)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 2500 * time.Millisecond: 3} {
		if got := retryAfter(d); got != want {
			t.Errorf("retryAfter(%s) = %d, want %d", d, got, want)
		}
	}
}

func TestKeyNameWithoutKey(t *testing.T) {
	if got := KeyName(t.Context()); got != "" {
		t.Fatalf("KeyName = %q", got)
	}
}

func FuzzParseKeys(f *testing.F) {
	for _, s := range []string{"", "a", "a:read", "n=a:write", "a,b:read,,c=d:write", "a:b:write", "x==:read", "=:", ",:,=,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := ParseKeys(s)
		if err != nil {
			return
		}
		names := map[string]bool{}
		for _, k := range keys {
			if len(k.Secret) < MinKeyLength || (k.Scope != ScopeRead && k.Scope != ScopeWrite) || !keyNameRE.MatchString(k.Name) || names[k.Name] {
				t.Fatalf("ParseKeys(%q) gave %+v", s, k)
			}
			names[k.Name] = true
		}
		if _, err := NewKeySet(KeysConfig{Keys: keys, RateLimit: 1, Burst: 1}); err != nil {
			t.Fatalf("NewKeySet of parsed keys: %v", err)
		}
	})
}
