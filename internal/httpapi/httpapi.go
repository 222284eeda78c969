// Package httpapi holds the small pieces every kiln HTTP surface shares: the
// JSON error envelope and API-key authentication (scoped, rate-limited keys).
package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/kilnvideo/kiln/internal/failure"
)

// Error codes shared by every API surface.
const (
	CodeUnauthorized = "unauthorized"
	CodeNotFound     = "not_found"
	CodeInvalidID    = "invalid_id"
	CodeBadRequest   = "bad_request"
	CodeInternal     = failure.Internal // the same word as a job's internal failure
	CodeUnavailable  = "unavailable"
	CodeForbidden    = "forbidden"
	CodeRateLimited  = "rate_limited"
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
