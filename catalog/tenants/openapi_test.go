package tenants_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/catalog/tenants"
)

// TestRoutesInOpenAPI: every tenant route is described in the catalog's
// OpenAPI document, and needs an admin key.
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
	if len(routes) != 7 {
		t.Fatalf("%d tenant routes, want 7", len(routes))
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r.Pattern, " ")
		if _, ok := spec.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("%s is not in openapi.json", r.Pattern)
		}
		if !r.Admin {
			t.Errorf("%s does not need an admin key", r.Pattern)
		}
	}
}
