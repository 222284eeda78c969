package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Scope is what an API key may do.
type Scope string

// Scopes. Write allows every request; read allows GET and HEAD only.
const (
	ScopeRead  Scope = "read"
	ScopeWrite Scope = "write"
)

// Default per-key rate limit (KILN_API_RATE_LIMIT, KILN_API_RATE_BURST).
const (
	DefaultRateLimit = 20
	DefaultRateBurst = 40
)

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
//	name=key:scope   a named key; the name shows up in logs (KeyName)
//
// The scope is what follows the last ':', so a key containing ':' needs an
// explicit scope; a name is what precedes the first '=' of an entry that has
// a scope, so a plain key may contain '=' (base64 padding). Empty entries
// are skipped; a malformed entry, an unknown scope, a repeated name or a
// repeated key is an error. Errors never contain the secret.
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
			if scope != ScopeRead && scope != ScopeWrite {
				return nil, fmt.Errorf("%w #%d: scope must be %q or %q after the last ':' (a key containing ':' needs an explicit scope)",
					ErrBadKeySpec, pos, ScopeRead, ScopeWrite)
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
	// Now is the clock of the rate limiter; time.Now when nil.
	Now func() time.Time
}

// Keys checks bearer API keys: authentication (401), scope (403) and a
// per-key token-bucket rate limit (429). Keys are kept as SHA-256 digests and
// compared in constant time.
type Keys struct {
	keys []keyEntry
	now  func() time.Time
}

type keyEntry struct {
	digest  [sha256.Size]byte
	name    string
	scope   Scope
	limiter *rate.Limiter // nil: unlimited
}

// NewKeys returns a checker accepting any of keys (empty strings ignored)
// with write scope and no rate limit — what tests and older callers need.
func NewKeys(keys []string) *Keys {
	k := &Keys{now: time.Now}
	for _, key := range keys {
		if key = strings.TrimSpace(key); key != "" {
			k.keys = append(k.keys, keyEntry{
				digest: sha256.Sum256([]byte(key)), name: "key-" + strconv.Itoa(len(k.keys)+1), scope: ScopeWrite,
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
	k := &Keys{now: cfg.Now}
	if k.now == nil {
		k.now = time.Now
	}
	for i, key := range cfg.Keys {
		if key.Secret == "" {
			return nil, fmt.Errorf("%w #%d: empty key", ErrBadKeySpec, i+1)
		}
		e := keyEntry{digest: sha256.Sum256([]byte(key.Secret)), name: key.Name, scope: key.Scope}
		if e.name == "" {
			e.name = "key-" + strconv.Itoa(i+1)
		}
		switch e.scope {
		case "":
			e.scope = ScopeWrite
		case ScopeRead, ScopeWrite:
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
// every configured key in constant time.
func (k *Keys) lookup(key string) *keyEntry {
	d := sha256.Sum256([]byte(key))
	found := -1
	for i := range k.keys {
		if subtle.ConstantTimeCompare(d[:], k.keys[i].digest[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil
	}
	return &k.keys[found]
}

// Allows reports whether scope s permits a request with this method: write
// permits everything, read only GET and HEAD.
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

// KeyName is the name of the API key that authenticated the request of ctx
// ("" when none did). Safe to log: it is never the secret.
func KeyName(ctx context.Context) string {
	name, _ := ctx.Value(ctxKey{}).(string)
	return name
}

// Require wraps next so that it only runs with a valid
// "Authorization: Bearer <key>" header (401 unauthorized otherwise), whose
// scope allows the request method (403 forbidden: a read key only GETs and
// HEADs), within the key's rate limit (429 rate_limited with Retry-After).
// The key's name is in the request context (KeyName).
func (k *Keys) Require(next http.Handler) http.Handler {
	return k.require("", next)
}

// RequireScope is Require with a fixed scope instead of one derived from
// the method: RequireScope(ScopeRead, h) lets read keys POST to h.
func (k *Keys) RequireScope(scope Scope, next http.Handler) http.Handler {
	return k.require(scope, next)
}

func (k *Keys) require(need Scope, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
			WriteError(w, http.StatusUnauthorized, CodeUnauthorized, "missing bearer API key")
			return
		}
		key := k.lookup(strings.TrimSpace(token))
		if key == nil {
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
		if need != "" {
			allowed = key.scope == ScopeWrite || key.scope == need
		}
		if !allowed {
			WriteError(w, http.StatusForbidden, CodeForbidden,
				fmt.Sprintf("API key %q has %s scope: %s needs a write key", key.name, key.scope, r.Method))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, key.name)))
	})
}

// retryAfter is delay in whole seconds, rounded up, at least 1.
func retryAfter(delay time.Duration) int {
	s := int(math.Ceil(delay.Seconds()))
	return max(s, 1)
}
