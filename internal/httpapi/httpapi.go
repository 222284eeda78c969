// Package httpapi holds the small pieces every kiln HTTP surface shares: the
// JSON error envelope and API-key authentication.
package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// Error codes shared by every API surface.
const (
	CodeUnauthorized = "unauthorized"
	CodeNotFound     = "not_found"
	CodeInvalidID    = "invalid_id"
	CodeBadRequest   = "bad_request"
	CodeInternal     = "internal"
	CodeUnavailable  = "unavailable"
)

// ErrorBody is the JSON envelope of every error response:
// {"error":{"code":"…","message":"…"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a machine-readable code and a human message.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes the error envelope with the given status.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	WriteJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: message}})
}

// Keys checks bearer API keys. Keys are kept as SHA-256 digests and compared
// in constant time.
type Keys struct {
	digests [][sha256.Size]byte
}

// NewKeys returns a checker accepting any of keys (empty strings ignored).
func NewKeys(keys []string) *Keys {
	k := &Keys{}
	for _, key := range keys {
		if key = strings.TrimSpace(key); key != "" {
			k.digests = append(k.digests, sha256.Sum256([]byte(key)))
		}
	}
	return k
}

// Valid reports whether key is one of the configured keys.
func (k *Keys) Valid(key string) bool {
	d := sha256.Sum256([]byte(key))
	ok := 0
	for _, want := range k.digests {
		ok |= subtle.ConstantTimeCompare(d[:], want[:])
	}
	return ok == 1
}

// Require wraps next so that it only runs with a valid
// "Authorization: Bearer <key>" header; otherwise it answers 401.
func (k *Keys) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
			WriteError(w, http.StatusUnauthorized, CodeUnauthorized, "missing bearer API key")
			return
		}
		if !k.Valid(strings.TrimSpace(token)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kiln", error="invalid_token"`)
			WriteError(w, http.StatusUnauthorized, CodeUnauthorized, "invalid API key")
			return
		}
		next.ServeHTTP(w, r)
	})
}
