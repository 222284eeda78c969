package tenants_test

import (
	"testing"

	"github.com/kilnvideo/kiln/catalog/openapitest"
	"github.com/kilnvideo/kiln/catalog/tenants"
)

// TestRoutesInOpenAPI: every tenant route is described in the catalog's
// OpenAPI document, and needs an admin key but GET /v1/usage (any key's
// own tenant).
func TestRoutesInOpenAPI(t *testing.T) {
	routes := (&tenants.Service{}).Routes()
	if len(routes) != 10 {
		t.Fatalf("%d tenant routes, want 10", len(routes))
	}
	openapitest.Documented(t, routes)
	for _, r := range routes {
		if own := r.Pattern == "GET /v1/usage"; r.Admin == own {
			t.Errorf("%s: admin key %v, want %v", r.Pattern, r.Admin, !own)
		}
	}
}
