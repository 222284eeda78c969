// Package jobid derives kiln's job and asset identifiers, and makes and
// checks the random ones of the same form (tenants, keys, webhook
// endpoints, events, deliveries): a prefix and 26 base32 characters.
//
// A job id is a pure function of the source object (bucket, key, etag), so
// every duplicate or replayed "object landed" event for the same bytes maps to
// the same job. The asset id shares the job id's digest.
package jobid

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

const (
	jobPrefix   = "job_"
	assetPrefix = "ast_"
	digestLen   = 26 // base32 chars: 130 bits of SHA-256
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// FromObject returns the job and asset ids for a source object.
func FromObject(bucket, key, etag string) (jobID, assetID string) {
	d := Derived("", bucket+"\x00"+key+"\x00"+strings.Trim(etag, `"`))
	return jobPrefix + d, assetPrefix + d
}

// Derived returns prefix followed by 26 base32 characters of seed's
// SHA-256: the same seed, the same id.
func Derived(prefix, seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return prefix + enc.EncodeToString(sum[:])[:digestLen]
}

// AssetOf returns the asset id of a valid job id.
func AssetOf(jobID string) string { return assetPrefix + strings.TrimPrefix(jobID, jobPrefix) }

// JobOf returns the job id of a valid asset id.
func JobOf(assetID string) string { return jobPrefix + strings.TrimPrefix(assetID, assetPrefix) }

// ValidJob reports whether s is well-formed job id.
func ValidJob(s string) bool { return Valid(s, jobPrefix) }

// ValidAsset reports whether s is well-formed asset id.
func ValidAsset(s string) bool { return Valid(s, assetPrefix) }

// Random returns prefix followed by 26 random base32 characters (130 bits).
func Random(prefix string) string {
	var b [17]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return prefix + enc.EncodeToString(b[:])[:digestLen]
}

// Valid reports whether s is prefix and 26 base32 characters.
func Valid(s, prefix string) bool {
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
