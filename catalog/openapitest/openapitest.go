// Package openapitest checks a service's routes against kiln's OpenAPI
// document (catalog.OpenAPI), for the tests of every package that mounts
// routes on the catalog or ingest.
package openapitest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/httpapi"
)

// Documented fails the test for every route whose method and path are not
// an operation of the document.
func Documented(tb testing.TB, routes []httpapi.Route) {
	tb.Helper()
	var spec struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(catalog.OpenAPI(), &spec); err != nil {
		tb.Fatalf("openapi.json: %v", err)
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r.Pattern, " ")
		if _, ok := spec.Paths[path][strings.ToLower(method)]; !ok {
			tb.Errorf("%s is not in openapi.json", r.Pattern)
		}
	}
}
