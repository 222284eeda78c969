package tenants_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/catalog/tenants"
)

// TestRoutesInOpenAPI: every tenant route is described in the catalog's
// OpenAPI document, and needs an admin key but GET /v1/usage (any key's
// own tenant).
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
	routes := (&tenants.Service{}).Routes()
	if len(routes) != 10 {
		t.Fatalf("%d tenant routes, want 10", len(routes))
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r.Pattern, " ")
		if _, ok := spec.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("%s is not in openapi.json", r.Pattern)
		}
		if own := r.Pattern == "GET /v1/usage"; r.Admin == own {
			t.Errorf("%s: admin key %v, want %v", r.Pattern, r.Admin, !own)
		}
	}
}
