package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRequire(t *testing.T) {
	keys := NewKeys([]string{"kiln_a", " kiln_b ", ""})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := keys.Require(ok)
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"wrong scheme", "Basic kiln_a", http.StatusUnauthorized},
		{"wrong key", "Bearer kiln_c", http.StatusUnauthorized},
		{"empty key", "Bearer ", http.StatusUnauthorized},
		{"first key", "Bearer kiln_a", http.StatusNoContent},
		{"trimmed key", "Bearer kiln_b", http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d", rec.Code, tt.want)
			}
			if tt.want == http.StatusUnauthorized {
				var body ErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatalf("error body is not JSON: %v", err)
				}
				if body.Error.Code != CodeUnauthorized || body.Error.Message == "" {
					t.Fatalf("error body = %+v", body)
				}
			}
		})
	}
}
