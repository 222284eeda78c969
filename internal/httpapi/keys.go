package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/kilnvideo/kiln/internal/tenant"
)

// Scope is what an API key may do.
type Scope string

// Scopes. Write allows every request of its tenant; read allows GET and
// HEAD only; admin allows the tenant and key API (routes marked
// Route.Admin) and nothing else — an admin key sees no tenant's jobs.
const (
	ScopeRead  Scope = "read"
	ScopeWrite Scope = "write"
	ScopeAdmin Scope = "admin"
)

// Default per-key rate limit (KILN_API_RATE_LIMIT, KILN_API_RATE_BURST).
const (
	DefaultRateLimit = 20
	DefaultRateBurst = 40
)

// MinKeyLength is the shortest API key ParseKeys accepts, in bytes: 24
// random characters are out of reach of guessing, short keys are not.
const MinKeyLength = 24

// DefaultAuthFailures is how many failed authentications a client address
// may make a minute (KILN_AUTH_FAILURES) before it is throttled.
const DefaultAuthFailures = 10

// ErrBadKeySpec is wrapped by every KILN_API_KEYS parsing error.
var ErrBadKeySpec = errors.New("bad API key entry")

// APIKey is one configured key. Secret is only held until NewKeySet hashes
// it; it is never logged or printed (String hides it).
type APIKey struct {
	// Name identifies the key in logs; empty means "key-<position>".
	Name   string
	Secret string
	// Scope is ScopeWrite when empty.
	Scope Scope
}

// String describes the key without its secret.
func (k APIKey) String() string { return fmt.Sprintf("%s:%s", k.Name, k.Scope) }

var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ParseKeys parses KILN_API_KEYS: comma-separated entries, each one of
//
//	key              write scope (what older configs hold)
//	key:write        write scope
//	key:read         read scope (GET and HEAD only)
//	key:admin        admin scope (the tenant and key API only)
//	name=key:scope   a named key; the name shows up in logs (KeyName)
//
// Every key of KILN_API_KEYS belongs to tenant.Default.
//
// The scope is what follows the last ':', so a key containing ':' needs an
// explicit scope; a name is what precedes the first '=' of an entry that has
// a scope, so a plain key may contain '=' (base64 padding). Empty entries
// are skipped; a malformed entry, an unknown scope, a key shorter than
// MinKeyLength, a repeated name or a repeated key is an error. Errors never
// contain the secret.
func ParseKeys(s string) ([]APIKey, error) {
	var keys []APIKey
	names := map[string]bool{}
	secrets := map[[sha256.Size]byte]bool{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		pos := i + 1
		k := APIKey{Secret: entry, Scope: ScopeWrite}
		if j := strings.LastIndexByte(entry, ':'); j >= 0 {
			scope := Scope(entry[j+1:])
			if scope != ScopeRead && scope != ScopeWrite && scope != ScopeAdmin {
				return nil, fmt.Errorf("%w #%d: scope must be %q, %q or %q after the last ':' (a key containing ':' needs an explicit scope)",
					ErrBadKeySpec, pos, ScopeRead, ScopeWrite, ScopeAdmin)
			}
			k.Scope, k.Secret = scope, entry[:j]
			if name, secret, ok := strings.Cut(k.Secret, "="); ok {
				if !keyNameRE.MatchString(name) {
					return nil, fmt.Errorf("%w #%d: name %q: use letters, digits, '.', '_' or '-' (at most 64)", ErrBadKeySpec, pos, name)
				}
				k.Name, k.Secret = name, secret
			}
		}
		if k.Secret = strings.TrimSpace(k.Secret); k.Secret == "" {
			return nil, fmt.Errorf("%w #%d: empty key", ErrBadKeySpec, pos)
		}
		if k.Name == "" {
			k.Name = "key-" + strconv.Itoa(pos)
		}
		if len(k.Secret) < MinKeyLength {
			return nil, fmt.Errorf("%w #%d (%s): the key has %d characters, want at least %d (e.g. kiln_ + 32 random hex digits: openssl rand -hex 16)",
				ErrBadKeySpec, pos, k.Name, len(k.Secret), MinKeyLength)
		}
		if names[k.Name] {
			return nil, fmt.Errorf("%w #%d: name %q used twice", ErrBadKeySpec, pos, k.Name)
		}
		d := sha256.Sum256([]byte(k.Secret))
		if secrets[d] {
			return nil, fmt.Errorf("%w #%d (%s): the same key is listed twice", ErrBadKeySpec, pos, k.Name)
		}
		names[k.Name], secrets[d] = true, true
		keys = append(keys, k)
	}
	return keys, nil
}

// KeysConfig configures a KeySet.
type KeysConfig struct {
	Keys []APIKey
	// RateLimit is the sustained requests per second each key may make;
	// 0 means unlimited (NewKeys), negative is an error.
	RateLimit float64
	// Burst is how many requests a key may make at once; at least 1 when
	// RateLimit is set.
	Burst int
	// AuthFailures is how many failed authentications (a missing or unknown
	// key) one client address may make a minute; past that, every request
	// of that address answers 429 rate_limited with Retry-After until the
	// budget refills. 0 turns throttling off.
	AuthFailures int
	// Proxies tells the client address behind a trusted reverse proxy.
	Proxies Proxies
	// Logger logs failed authentications; a no-op logger when nil.
	Logger *zap.Logger
	// Now is the clock of the rate limiter; time.Now when nil.
	Now func() time.Time
	// Directory, when set, holds the keys created through the tenant API
	// (a key not in Keys is looked up there); nil: configured keys only.
	Directory KeyDirectory
	// DirectoryTTL is how long an answer of Directory is kept — the bound
	// on how late a revocation takes effect; DefaultDirectoryTTL when 0.
	DirectoryTTL time.Duration
}

// DefaultDirectoryTTL is how long Keys keeps an answer of its
// KeyDirectory: a key revoked through the API stops working within it.
const DefaultDirectoryTTL = 5 * time.Second

// KeyRecord is what a KeyDirectory knows of a key created through the
// tenant API (never its secret).
type KeyRecord struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant_id"`
	Name   string `json:"name"`
	Scope  Scope  `json:"scope"`
}

// KeyDirectory finds keys by the SHA-256 digest of their secret
// (apikeys.Directory on Redis). found is false for an unknown or revoked
// key; an error means the directory could not be asked.
type KeyDirectory interface {
	LookupKey(ctx context.Context, digest [sha256.Size]byte) (rec KeyRecord, found bool, err error)
}

// dirEntry is a cached answer of the directory.
type dirEntry struct {
	rec     KeyRecord
	found   bool
	expires time.Time
}

// maxDirCache bounds the directory cache; past it, the cache starts over.
const maxDirCache = 10000

// Keys checks bearer API keys: authentication (401), scope (403) and a
// per-key token-bucket rate limit (429). Keys are kept as SHA-256 digests and
// compared in constant time.
type Keys struct {
	keys []keyEntry
	now  func() time.Time

	// failures is the per-address budget of failed authentications (nil:
	// unlimited); proxies finds the address.
	failures  *ClientLimiter
	proxies   Proxies
	log       *zap.Logger
	failed    atomic.Int64 // failed authentications
	throttled atomic.Int64 // requests refused while throttled

	// dir and its cache: keys created through the API, and their rate
	// limiters by key id.
	dir      KeyDirectory
	dirTTL   time.Duration
	rate     float64
	burst    int
	mu       sync.Mutex
	cache    map[[sha256.Size]byte]dirEntry
	limiters map[string]*rate.Limiter
}

type keyEntry struct {
	digest  [sha256.Size]byte
	id      string // "" for a configured key
	tenant  string
	name    string
	scope   Scope
	limiter *rate.Limiter // nil: unlimited
}

// NewKeys returns a checker accepting any of keys (empty strings ignored)
// with write scope and no rate limit — what tests and older callers need.
func NewKeys(keys []string) *Keys {
	k := &Keys{now: time.Now, log: zap.NewNop()}
	for _, key := range keys {
		if key = strings.TrimSpace(key); key != "" {
			k.keys = append(k.keys, keyEntry{
				digest: sha256.Sum256([]byte(key)), name: "key-" + strconv.Itoa(len(k.keys)+1), scope: ScopeWrite, tenant: tenant.Default,
			})
		}
	}
	return k
}

// NewKeySet returns a checker for cfg.Keys with their scopes and rate limit.
func NewKeySet(cfg KeysConfig) (*Keys, error) {
	if cfg.RateLimit < 0 || math.IsNaN(cfg.RateLimit) || math.IsInf(cfg.RateLimit, 0) {
		return nil, fmt.Errorf("API rate limit %v: want requests per second ≥ 0 (0 = unlimited)", cfg.RateLimit)
	}
	if cfg.RateLimit > 0 && cfg.Burst < 1 {
		return nil, fmt.Errorf("API rate burst %d: want at least 1", cfg.Burst)
	}
	if cfg.AuthFailures < 0 {
		return nil, fmt.Errorf("auth failures %d: want ≥ 0 (0 = no throttling)", cfg.AuthFailures)
	}
	k := &Keys{now: cfg.Now, proxies: cfg.Proxies, log: cfg.Logger, dir: cfg.Directory, dirTTL: cfg.DirectoryTTL,
		rate: cfg.RateLimit, burst: cfg.Burst, cache: map[[sha256.Size]byte]dirEntry{}, limiters: map[string]*rate.Limiter{}}
	if k.dirTTL <= 0 {
		k.dirTTL = DefaultDirectoryTTL
	}
	if k.now == nil {
		k.now = time.Now
	}
	if k.log == nil {
		k.log = zap.NewNop()
	}
	if cfg.AuthFailures > 0 {
		k.failures, _ = NewClientLimiter(float64(cfg.AuthFailures)/60, cfg.AuthFailures, k.now) // valid arguments
	}
	for i, key := range cfg.Keys {
		if key.Secret == "" {
			return nil, fmt.Errorf("%w #%d: empty key", ErrBadKeySpec, i+1)
		}
		e := keyEntry{digest: sha256.Sum256([]byte(key.Secret)), name: key.Name, scope: key.Scope, tenant: tenant.Default}
		if e.name == "" {
			e.name = "key-" + strconv.Itoa(i+1)
		}
		switch e.scope {
		case "":
			e.scope = ScopeWrite
		case ScopeRead, ScopeWrite, ScopeAdmin:
		default:
			return nil, fmt.Errorf("%w %s: unknown scope %q", ErrBadKeySpec, e.name, e.scope)
		}
		if cfg.RateLimit > 0 {
			e.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.Burst)
		}
		k.keys = append(k.keys, e)
	}
	return k, nil
}

// lookup returns the entry whose digest matches key, comparing against
// every configured key in constant time, then asking the directory (nil,
// nil: no such key; an error: the directory could not be asked).
func (k *Keys) lookup(ctx context.Context, key string) (*keyEntry, error) {
	d := sha256.Sum256([]byte(key))
	found := -1
	for i := range k.keys {
		if subtle.ConstantTimeCompare(d[:], k.keys[i].digest[:]) == 1 {
			found = i
		}
	}
	if found >= 0 {
		return &k.keys[found], nil
	}
	if k.dir == nil {
		return nil, nil
	}
	return k.lookupDir(ctx, d)
}

// lookupDir asks the directory for digest d, through a cache of
// DirectoryTTL: a key revoked in the directory stops working within it.
// The directory is found by digest (a hash lookup of a SHA-256 digest
// leaks nothing of use about other keys' secrets).
func (k *Keys) lookupDir(ctx context.Context, d [sha256.Size]byte) (*keyEntry, error) {
	now := k.now()
	k.mu.Lock()
	c, ok := k.cache[d]
	k.mu.Unlock()
	if !ok || !now.Before(c.expires) {
		rec, found, err := k.dir.LookupKey(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("API key directory: %w", err)
		}
		if found && (!tenant.Valid(rec.Tenant) || (rec.Scope != ScopeRead && rec.Scope != ScopeWrite)) {
			found = false // a record kiln does not write: refuse it
		}
		c = dirEntry{rec: rec, found: found, expires: now.Add(k.dirTTL)}
		k.mu.Lock()
		if len(k.cache) >= maxDirCache {
			clear(k.cache)
		}
		k.cache[d] = c
		k.mu.Unlock()
	}
	if !c.found {
		return nil, nil
	}
	e := &keyEntry{digest: d, id: c.rec.ID, tenant: c.rec.Tenant, name: c.rec.Name, scope: c.rec.Scope}
	if k.rate > 0 {
		k.mu.Lock()
		l := k.limiters[c.rec.ID]
		if l == nil {
			if len(k.limiters) >= maxDirCache {
				clear(k.limiters)
			}
			l = rate.NewLimiter(rate.Limit(k.rate), k.burst)
			k.limiters[c.rec.ID] = l
		}
		k.mu.Unlock()
		e.limiter = l
	}
	return e, nil
}

// Allows reports whether scope s permits a request with this method on a
// tenant's data: write permits everything, read only GET and HEAD, admin
// nothing (it has routes of its own).
func (s Scope) Allows(method string) bool {
	switch s {
	case ScopeWrite:
		return true
	case ScopeRead:
		return method == http.MethodGet || method == http.MethodHead
	}
	return false
}

type ctxKey struct{}

// Principal is who a request acts for: its API key's id ("" for a key
// of KILN_API_KEYS), name and scope, and the tenant the key belongs to.
type Principal struct {
	KeyID  string
	Name   string
	Scope  Scope
	Tenant string
}

// authed is what the request context holds about its key.
type authed = Principal

// PrincipalOf is the principal of the request of ctx (false when no key
// authenticated it).
func PrincipalOf(ctx context.Context) (Principal, bool) {
	a, ok := ctx.Value(ctxKey{}).(authed)
	return a, ok
}

// Tenant is the tenant the request of ctx acts for: its key's. A request
// no key authenticated — only handlers mounted without keys, in tests —
// acts for tenant.Default.
func Tenant(ctx context.Context) string {
	if a, ok := ctx.Value(ctxKey{}).(authed); ok && a.Tenant != "" {
		return a.Tenant
	}
	return tenant.Default
}

// Owns reports whether the request of ctx may see what tenant owner owns:
// only its own tenant's (a job whose tenant is not known yet, "", is
// nobody's).
func Owns(ctx context.Context, owner string) bool { return owner != "" && owner == Tenant(ctx) }

// KeyName is the name of the API key that authenticated the request of ctx
// ("" when none did). Safe to log: it is never the secret.
func KeyName(ctx context.Context) string {
	a, _ := ctx.Value(ctxKey{}).(authed)
	return a.Name
}

// KeyScope is the scope of the API key that authenticated the request of
// ctx ("" when none did).
func KeyScope(ctx context.Context) Scope {
	a, _ := ctx.Value(ctxKey{}).(authed)
	return a.Scope
}

// WithKey returns ctx as Require makes it for a key of that name and scope
// of the default tenant (tests of handlers that read KeyName or KeyScope).
func WithKey(ctx context.Context, name string, scope Scope) context.Context {
	return WithPrincipal(ctx, Principal{Name: name, Scope: scope, Tenant: tenant.Default})
}

// WithPrincipal returns ctx as Require makes it for p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// Require wraps next so that it only runs with a valid
// "Authorization: Bearer <key>" header (401 unauthorized otherwise), whose
// scope allows the request method (403 forbidden: a read key only GETs and
// HEADs; an admin key nothing but admin routes), within the key's rate
// limit (429 rate_limited with Retry-After). The key's principal is in the
// request context (PrincipalOf, Tenant, KeyName). A key that is neither
// configured nor in the directory gets 401; a directory that cannot be
// asked, 503 unavailable.
func (k *Keys) Require(next http.Handler) http.Handler {
	return k.require("", next)
}

// RequireScope is Require with a fixed scope instead of one derived from
// the method: RequireScope(ScopeRead, h) lets read keys POST to h;
// RequireScope(ScopeAdmin, h) lets only admin keys reach h.
func (k *Keys) RequireScope(scope Scope, next http.Handler) http.Handler {
	return k.require(scope, next)
}

func (k *Keys) require(need Scope, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := k.proxies.ClientIP(r)
		// A throttled address is refused before its key is looked at, so
		// guessing gets no answer at all while it lasts.
		if empty, wait := k.failures.Peek(client); empty {
			k.throttled.Add(1)
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter(wait)))
			WriteError(w, http.StatusTooManyRequests, CodeRateLimited,
				"too many failed authentications from this address; retry later")
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			k.authFailed(r, client, "missing bearer API key")
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
			WriteError(w, http.StatusUnauthorized, CodeUnauthorized, "missing bearer API key")
			return
		}
		key, err := k.lookup(r.Context(), strings.TrimSpace(token))
		if err != nil {
			k.log.Error("authentication: key directory", zap.Error(err))
			WriteError(w, http.StatusServiceUnavailable, CodeUnavailable, "API keys cannot be checked right now; retry")
			return
		}
		if key == nil {
			k.authFailed(r, client, "invalid API key")
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln", error="invalid_token"`)
			WriteError(w, http.StatusUnauthorized, CodeUnauthorized, "invalid API key")
			return
		}
		if key.limiter != nil {
			now := k.now()
			res := key.limiter.ReserveN(now, 1)
			if delay := res.DelayFrom(now); !res.OK() || delay > 0 {
				res.CancelAt(now)
				w.Header().Set("Retry-After", strconv.Itoa(retryAfter(delay)))
				WriteError(w, http.StatusTooManyRequests, CodeRateLimited,
					fmt.Sprintf("API key %q is over its rate limit; retry later", key.name))
				return
			}
		}
		allowed := key.scope.Allows(r.Method)
		switch {
		case need == ScopeAdmin:
			allowed = key.scope == ScopeAdmin
		case need != "":
			allowed = key.scope == ScopeWrite || key.scope == need
		}
		if !allowed {
			msg := fmt.Sprintf("API key %q has %s scope: %s needs a write key", key.name, key.scope, r.Method)
			switch {
			case need == ScopeAdmin:
				msg = fmt.Sprintf("API key %q has %s scope: the tenant and key API needs an admin key", key.name, key.scope)
			case key.scope == ScopeAdmin:
				msg = fmt.Sprintf("API key %q is an admin key: it manages tenants and keys only; use a key of a tenant", key.name)
			}
			WriteError(w, http.StatusForbidden, CodeForbidden, msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(),
			Principal{KeyID: key.id, Name: key.name, Scope: key.scope, Tenant: key.tenant})))
	})
}

// authFailed counts and logs one failed authentication and spends one of
// the client address's failure budget.
func (k *Keys) authFailed(r *http.Request, client netip.Addr, reason string) {
	k.failed.Add(1)
	k.failures.Allow(client)
	k.log.Warn("authentication failed", zap.String("reason", reason), zap.Stringer("client", client),
		zap.String("method", r.Method), zap.String("path", r.URL.Path))
}

// Describe implements prometheus.Collector.
func (k *Keys) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(k, ch) }

// Collect implements prometheus.Collector: kiln_auth_failures_total and
// kiln_auth_throttled_total.
func (k *Keys) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("kiln_auth_failures_total", "Requests with a missing or unknown API key.", nil, nil),
		prometheus.CounterValue, float64(k.failed.Load()))
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("kiln_auth_throttled_total", "Requests refused because their address failed authentication too often.", nil, nil),
		prometheus.CounterValue, float64(k.throttled.Load()))
}

// retryAfter is delay in whole seconds, rounded up, at least 1.
func retryAfter(delay time.Duration) int {
	s := int(math.Ceil(delay.Seconds()))
	return max(s, 1)
}
