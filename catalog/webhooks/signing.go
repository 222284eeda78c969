package webhooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every signing secret: "whsec_" + base64(key bytes).
const SecretPrefix = "whsec_"

// ErrBadSecret is wrapped by ParseSecret errors.
var ErrBadSecret = errors.New("webhooks: bad secret")

// secretBytes are the raw bytes of generated secrets.
const secretBytes = 32

// NewSecret returns a fresh random secret, "whsec_" + base64 of 32 bytes.
func NewSecret() string {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// ParseSecret returns the key bytes of a "whsec_<base64>" secret. The key
// must be 24 to 64 bytes, as Standard Webhooks recommends.
func ParseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: want %s<base64>", ErrBadSecret, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSecret, err)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("%w: key has %d bytes, want 24 to 64", ErrBadSecret, len(key))
	}
	return key, nil
}

// Sign returns the "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>"
// signature of one message, computed by the Standard Webhooks library.
func Sign(key []byte, id string, ts time.Time, body []byte) string {
	wh, _ := standardwebhooks.NewWebhookRaw(key) // never fails
	sig, _ := wh.Sign(id, ts, body)              // never fails
	return sig
}

// SignatureHeader is the webhook-signature value for a message signed with
// every key: space-separated "v1,…" signatures, so a receiver holding either
// the new or the old secret during a rotation verifies it.
func SignatureHeader(keys [][]byte, id string, ts time.Time, body []byte) string {
	sigs := make([]string, 0, len(keys))
	for _, k := range keys {
		sigs = append(sigs, Sign(k, id, ts, body))
	}
	return strings.Join(sigs, " ")
}

// UploadSecret is the signing secret of the per-upload webhook of job jobID:
// "whsec_" + base64 of HMAC-SHA256(key of defaultSecret, "upload:" + jobID).
// Ingest computes it for the upload answer and the catalog signs that
// upload's deliveries with it, so neither stores it nor sends it to the
// other, and one upload's receiver cannot sign (forge) another's
// deliveries. defaultSecret is KILN_WEBHOOK_SECRET ("whsec_…").
func UploadSecret(defaultSecret, jobID string) (string, error) {
	key, err := ParseSecret(defaultSecret)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("upload:" + jobID))
	return SecretPrefix + base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}
