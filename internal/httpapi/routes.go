package httpapi

import "net/http"

// Route is one route of a service's HTTP API: ingest, the catalog and the
// webhooks each list theirs (Routes), and the process mounts them on one mux.
type Route struct {
	// Pattern is the http.ServeMux pattern, "METHOD /path/{wildcard}".
	Pattern string
	// Auth: the route needs an API key (playback and discovery routes do
	// not).
	Auth    bool
	Handler http.Handler
}

// Authed is a route that needs an API key.
func Authed(pattern string, h http.HandlerFunc) Route {
	return Route{Pattern: pattern, Auth: true, Handler: h}
}

// Open is a route that needs no API key.
func Open(pattern string, h http.Handler) Route { return Route{Pattern: pattern, Handler: h} }

// Mount registers routes on mux, guarding the Auth ones with keys; keys nil
// mounts every route unguarded (unit tests of a service's handlers).
func Mount(mux *http.ServeMux, keys *Keys, routes []Route) {
	for _, rt := range routes {
		h := rt.Handler
		if rt.Auth && keys != nil {
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
