package webhooks

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestRoutesInOpenAPI: every webhooks route is described in the catalog's
// OpenAPI document (served at /v1/openapi.json).
func TestRoutesInOpenAPI(t *testing.T) {
	doc, err := os.ReadFile("../openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &spec); err != nil {
		t.Fatal(err)
	}
	routes := (&Service{}).Routes()
	if len(routes) < 8 {
		t.Fatalf("%d webhook routes, want at least 8", len(routes))
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r.Pattern, " ")
		if _, ok := spec.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("%s is not in openapi.json", r.Pattern)
		}
	}
}
