package catalog

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Playback token errors, returned as is by VerifyToken.
var (
	// ErrTokenInvalid means a playback token is malformed, or its signature
	// does not match the asset and expiry it claims (tampered, another
	// asset's, or made with another key).
	ErrTokenInvalid = errors.New("catalog: invalid playback token")
	// ErrTokenExpired means a genuine playback token has passed its expiry.
	ErrTokenExpired = errors.New("catalog: playback token expired")
)

// tokenContext separates playback-token MACs from any other use of the key.
const tokenContext = "kiln-playback\x00"

// MintToken returns a playback token for assetID that expires at expires
// (truncated to the second):
//
//	<unix expiry>.<base64url, unpadded, of HMAC-SHA256(key, "kiln-playback\x00" + assetID + "\x00" + <unix expiry>)>
//
// Tokens only contain [0-9A-Za-z._-], so they need no escaping in a query.
func MintToken(key []byte, assetID string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return exp + "." + base64.RawURLEncoding.EncodeToString(tokenMAC(key, assetID, exp))
}

// VerifyToken checks token for assetID at now and returns its expiry. It
// fails with ErrTokenInvalid unless the signature matches (checked before
// the expiry, so a forged expiry is "invalid", never "expired"), and with
// ErrTokenExpired once now reaches the expiry.
func VerifyToken(key []byte, assetID, token string, now time.Time) (time.Time, error) {
	exp, sig, ok := strings.Cut(token, ".")
	if !ok || !canonicalUnix(exp) || len(key) == 0 {
		return time.Time{}, ErrTokenInvalid
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return time.Time{}, ErrTokenInvalid
	}
	if !hmac.Equal(got, tokenMAC(key, assetID, exp)) {
		return time.Time{}, ErrTokenInvalid
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return time.Time{}, ErrTokenInvalid
	}
	expires := time.Unix(secs, 0).UTC()
	if !now.Before(expires) {
		return expires, ErrTokenExpired
	}
	return expires, nil
}

func tokenMAC(key []byte, assetID, exp string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(tokenContext + assetID + "\x00" + exp))
	return m.Sum(nil)
}

// canonicalUnix reports whether s is a positive decimal number of seconds as
// strconv.FormatInt writes it (no sign, no leading zeros, fits int64).
func canonicalUnix(s string) bool {
	if s == "" || len(s) > 18 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
