package webhooks

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestRoutesInOpenAPI: every webhooks route is described in the catalog's
// OpenAPI document (served at /v1/openapi.json).
func TestRoutesInOpenAPI(t *testing.T) {
	src, err := os.ReadFile("api.go")
	if err != nil {
		t.Fatal(err)
	}
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
	routes := regexp.MustCompile(`mux\.Handle\("([A-Z]+) (/v1/[^"]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(routes) < 8 {
		t.Fatalf("found %d routes in api.go: the scan is broken", len(routes))
	}
	for _, r := range routes {
		method, path := strings.ToLower(r[1]), r[2]
		if _, ok := spec.Paths[path][method]; !ok {
			t.Errorf("%s %s is not in openapi.json", r[1], path)
		}
	}
}
