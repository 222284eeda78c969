// Package tenant names kiln's tenants: who owns an API key, a job, its
// asset, a webhook endpoint and its deliveries.
//
// A tenant id is "ten_" followed by 26 base32 characters of randomness, or
// Default: the tenant of every key in KILN_API_KEYS and of every job,
// asset and webhook recorded before tenants existed (the migrations
// backfill it), so a single-key setup is one tenant without knowing it.
package tenant

import "github.com/kilnvideo/kiln/internal/jobid"

// Default is the tenant of configured keys (KILN_API_KEYS), of sources
// without a tenant in their metadata (any S3 client dropping a file), and of
// everything recorded before tenants.
const Default = "default"

const prefix = "ten_"

// New returns a fresh random tenant id.
func New() string { return jobid.Random(prefix) }

// Valid reports whether s is Default or a well-formed tenant id.
func Valid(s string) bool { return s == Default || jobid.Valid(s, prefix) }

// OfEvent is the tenant a fact names: "" (a producer older than tenants,
// or a source without tenant metadata) is Default.
func OfEvent(s string) string {
	if s == "" {
		return Default
	}
	return s
}
