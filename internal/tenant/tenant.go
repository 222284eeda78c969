// Package tenant names kiln's tenants: who owns an API key, a job, its
// asset, a webhook endpoint and its deliveries.
//
// A tenant id is "ten_" followed by 26 base32 characters of randomness, or
// Default: the tenant of every key in KILN_API_KEYS and of every job,
// asset and webhook recorded before tenants existed (the migrations
// backfill it), so a single-key setup is one tenant without knowing it.
package tenant

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

// Default is the tenant of configured keys (KILN_API_KEYS), of sources
// without a tenant in their metadata (any S3 client dropping a file), and of
// everything recorded before tenants.
const Default = "default"

const (
	prefix    = "ten_"
	digestLen = 26
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// New returns a fresh random tenant id.
func New() string { return NewID(prefix) }

// NewID returns prefix followed by 26 random base32 characters (130 bits):
// the form of tenant and key ids.
func NewID(prefix string) string {
	var b [20]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return prefix + enc.EncodeToString(b[:])[:digestLen]
}

// Valid reports whether s is Default or a well-formed tenant id.
func Valid(s string) bool { return s == Default || ValidID(s, prefix) }

// ValidID reports whether s is prefix and 26 base32 characters.
func ValidID(s, prefix string) bool {
	d, ok := strings.CutPrefix(s, prefix)
	if !ok || len(d) != digestLen {
		return false
	}
	for _, c := range d {
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// OfEvent is the tenant a fact names: "" (a producer older than tenants,
// or a source without tenant metadata) is Default.
func OfEvent(s string) string {
	if s == "" {
		return Default
	}
	return s
}
