package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/kilnvideo/kiln/internal/failure"
)

// Error codes of request bodies.
const (
	CodeTooLarge             = failure.TooLarge // the same word as a job's too_large failure
	CodeUnsupportedMediaType = "unsupported_media_type"
)

// DecodeJSON reads r's body, one JSON object of at most limit bytes with no
// unknown fields, into v. An empty body is accepted when !required (v stays
// as is). Otherwise it answers the request itself and returns false: 415
// when the body is not application/json, 413 over limit, 400 when it is
// not exactly one valid object.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64, required bool) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("the body exceeds %d bytes", limit))
			return false
		}
		WriteError(w, http.StatusBadRequest, CodeBadRequest, "unreadable body")
		return false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if required {
			WriteError(w, http.StatusBadRequest, CodeBadRequest, "a JSON body is required")
			return false
		}
		return true
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		WriteError(w, http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "the body must be application/json")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		WriteError(w, http.StatusBadRequest, CodeBadRequest, "body: "+err.Error())
		return false
	}
	if dec.More() {
		WriteError(w, http.StatusBadRequest, CodeBadRequest, "body: one JSON object expected")
		return false
	}
	return true
}
