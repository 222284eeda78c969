package webhooks

import (
	"testing"

	"github.com/kilnvideo/kiln/catalog/openapitest"
)

// TestRoutesInOpenAPI: every webhooks route is described in the catalog's
// OpenAPI document (served at /v1/openapi.json).
func TestRoutesInOpenAPI(t *testing.T) {
	routes := (&Service{}).Routes()
	if len(routes) < 8 {
		t.Fatalf("%d webhook routes, want at least 8", len(routes))
	}
	openapitest.Documented(t, routes)
}
