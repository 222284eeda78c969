package httpapi

import (
	"net/http"

	"github.com/kilnvideo/kiln/internal/tenant"
)

// Route is one route of a service's HTTP API: ingest, the catalog and the
// webhooks each list theirs (Routes), and the process mounts them on one mux.
type Route struct {
	// Pattern is the http.ServeMux pattern, "METHOD /path/{wildcard}".
	Pattern string
	// Auth: the route needs an API key (playback and discovery routes do
	// not).
	Auth bool
	// Admin: the route needs an admin key (the tenant and key API); it
	// implies Auth.
	Admin   bool
	Handler http.Handler
}

// Authed is a route that needs an API key.
func Authed(pattern string, h http.HandlerFunc) Route {
	return Route{Pattern: pattern, Auth: true, Handler: h}
}

// AdminOnly is a route that needs an admin key (ScopeAdmin).
func AdminOnly(pattern string, h http.HandlerFunc) Route {
	return Route{Pattern: pattern, Auth: true, Admin: true, Handler: h}
}

// Open is a route that needs no API key.
func Open(pattern string, h http.Handler) Route { return Route{Pattern: pattern, Handler: h} }

// Mount registers routes on mux, guarding the Auth ones with keys; keys nil
// mounts every route unguarded (unit tests of a service's handlers).
func Mount(mux *http.ServeMux, keys *Keys, routes []Route) {
	for _, rt := range routes {
		h := rt.Handler
		switch {
		case keys == nil:
		case rt.Admin:
			h = keys.RequireScope(ScopeAdmin, h)
		case rt.Auth:
			h = keys.Require(h)
		}
		mux.Handle(rt.Pattern, h)
	}
}

// Handler is a mux of routes (see Mount).
func Handler(keys *Keys, routes []Route) http.Handler {
	mux := http.NewServeMux()
	Mount(mux, keys, routes)
	return mux
}

// OperatorOnly wraps h so that only keys of tenant.Default (the
// operator's, KILN_API_KEYS) reach it: what spans every tenant, such as
// dead letters, is not a tenant's to see (403 forbidden).
func OperatorOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if Tenant(r.Context()) != tenant.Default {
			WriteError(w, http.StatusForbidden, CodeForbidden, "this route is the operator's: use a key of the default tenant")
			return
		}
		h(w, r)
	}
}
