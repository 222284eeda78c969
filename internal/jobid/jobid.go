// Package jobid derives kiln's job and asset identifiers.
//
// A job id is a pure function of the source object (bucket, key, etag), so
// every duplicate or replayed "object landed" event for the same bytes maps to
// the same job. The asset id shares the job id's digest.
package jobid

import (
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
	etag = strings.Trim(etag, `"`)
	sum := sha256.Sum256([]byte(bucket + "\x00" + key + "\x00" + etag))
	d := enc.EncodeToString(sum[:])[:digestLen]
	return jobPrefix + d, assetPrefix + d
}

// AssetOf returns the asset id of a valid job id.
func AssetOf(jobID string) string { return assetPrefix + strings.TrimPrefix(jobID, jobPrefix) }

// JobOf returns the job id of a valid asset id.
func JobOf(assetID string) string { return jobPrefix + strings.TrimPrefix(assetID, assetPrefix) }

// ValidJob reports whether s is well-formed job id.
func ValidJob(s string) bool { return valid(s, jobPrefix) }

// ValidAsset reports whether s is well-formed asset id.
func ValidAsset(s string) bool { return valid(s, assetPrefix) }

func valid(s, prefix string) bool {
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
