package httpapi

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Proxies are the reverse proxies (load balancers, ingress controllers) a
// client's address may be taken from: a request whose peer is one of them is
// attributed to the address its X-Forwarded-For header names, read from the
// right and skipping trusted proxies, so a client cannot choose its own
// address by sending the header itself. The zero value trusts no proxy: the
// peer address is the client.
type Proxies struct {
	prefixes []netip.Prefix
}

// ParseProxies parses KILN_TRUSTED_PROXIES: comma-separated IP addresses or
// CIDR prefixes (10.0.0.0/8, 127.0.0.1, fd00::/8). Empty trusts none.
func ParseProxies(s string) (Proxies, error) {
	var p Proxies
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return Proxies{}, fmt.Errorf("trusted proxy %q: want an IP address or a CIDR prefix", part)
			}
			a = a.Unmap()
			p.prefixes = append(p.prefixes, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		pf, err := netip.ParsePrefix(part)
		if err != nil {
			return Proxies{}, fmt.Errorf("trusted proxy %q: want an IP address or a CIDR prefix", part)
		}
		p.prefixes = append(p.prefixes, pf.Masked())
	}
	return p, nil
}

func (p Proxies) trusted(a netip.Addr) bool {
	for _, pf := range p.prefixes {
		if pf.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP is the address of the client that made r: the peer, or, when
// the peer is a trusted proxy, the rightmost address of X-Forwarded-For
// that is not a trusted proxy. The zero Addr when the peer address cannot
// be parsed (tests with a fake RemoteAddr).
func (p Proxies) ClientIP(r *http.Request) netip.Addr {
	peer := parseHostAddr(r.RemoteAddr)
	if !peer.IsValid() || !p.trusted(peer) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	addr := peer
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a := parseHostAddr(strings.TrimSpace(parts[j]))
			if !a.IsValid() {
				return addr // garbage: stop at the last address we could trust
			}
			addr = a
			if !p.trusted(a) {
				return a
			}
		}
	}
	return addr
}

// parseHostAddr parses "ip", "ip:port" or "[ip]:port".
func parseHostAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}
	}
	return a.WithZone("").Unmap()
}

// clientKey groups addresses that are one client: an IPv4 address, or the
// /64 of an IPv6 address (what one host or subscriber usually gets).
func clientKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		if pf, err := a.Prefix(64); err == nil {
			return pf.Addr()
		}
	}
	return a
}

// ClientLimiter is a token-bucket rate limit per client address: Rate
// requests a second, Burst at once. Idle clients are forgotten, and at most
// maxClients are tracked (beyond that, the fullest buckets are dropped).
type ClientLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	clients map[netip.Addr]*clientEntry
	swept   time.Time
}

type clientEntry struct {
	lim  *rate.Limiter
	last time.Time
}

// maxClients bounds the addresses a ClientLimiter remembers.
const maxClients = 100_000

// NewClientLimiter returns a limiter of perSecond requests a second and
// burst at once per client; perSecond 0 returns nil (no limit), which
// Allow accepts.
func NewClientLimiter(perSecond float64, burst int, now func() time.Time) (*ClientLimiter, error) {
	if perSecond < 0 {
		return nil, errors.New("rate limit must be ≥ 0")
	}
	if perSecond == 0 {
		return nil, nil
	}
	if burst < 1 {
		return nil, errors.New("rate burst must be at least 1")
	}
	if now == nil {
		now = time.Now
	}
	return &ClientLimiter{limit: rate.Limit(perSecond), burst: burst, now: now, clients: map[netip.Addr]*clientEntry{}}, nil
}

// Allow takes one token of client a, or reports how long until one is
// there. A nil limiter allows everything.
func (l *ClientLimiter) Allow(a netip.Addr) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	e := l.entry(clientKey(a), now)
	res := e.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); !res.OK() || d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Peek reports, without taking a token, whether client a has none left
// and how long until it has one again.
func (l *ClientLimiter) Peek(a netip.Addr) (empty bool, wait time.Duration) {
	if l == nil {
		return false, 0
	}
	now := l.now()
	l.mu.Lock()
	e, ok := l.clients[clientKey(a)]
	l.mu.Unlock()
	if !ok || e.lim.TokensAt(now) >= 1 {
		return false, 0
	}
	res := e.lim.ReserveN(now, 1)
	d := res.DelayFrom(now)
	res.CancelAt(now)
	return true, d
}

func (l *ClientLimiter) entry(k netip.Addr, now time.Time) *clientEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute || len(l.clients) >= maxClients {
		l.sweep(now)
	}
	e, ok := l.clients[k]
	if !ok {
		e = &clientEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[k] = e
	}
	e.last = now
	return e
}

// sweep forgets clients whose bucket has refilled (idle long enough that
// a fresh bucket is the same); when that is not enough, the oldest half.
func (l *ClientLimiter) sweep(now time.Time) {
	l.swept = now
	full := time.Duration(float64(l.burst) / float64(l.limit) * float64(time.Second))
	for k, e := range l.clients {
		if now.Sub(e.last) > full {
			delete(l.clients, k)
		}
	}
	if len(l.clients) < maxClients {
		return
	}
	for k, e := range l.clients {
		if now.Sub(e.last) > full/2 || len(l.clients) >= maxClients {
			delete(l.clients, k)
		}
	}
}

// Limit wraps next in the per-client limit: over it, 429 rate_limited with
// Retry-After. A nil limiter returns next as is.
func (l *ClientLimiter) Limit(proxies Proxies, next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := l.Allow(proxies.ClientIP(r)); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter(wait)))
			w.Header().Set("Cache-Control", "no-store")
			WriteError(w, http.StatusTooManyRequests, CodeRateLimited, "too many requests from this client; retry later")
			return
		}
		next.ServeHTTP(w, r)
	})
}
