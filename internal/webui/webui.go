// Package webui serves kiln's browser UI under /ui/: the console (index.html,
// console.js: library, upload, asset page with the player, webhooks, API
// keys, operations), a simple upload page that follows one job and plays
// the result (upload.html, app.js), and a bare player page. The files are
// static ES modules and CSS, embedded in the binary without a build step,
// and talk to the public API with
// same-origin relative URLs, so the UI works wherever the API is published
// (KILN_PUBLIC_URL, reverse proxies with a path prefix). The pages
// themselves need no API key; they send the key the user types.
//
// hls.js is vendored, unmodified, under static/vendor (see its README).
package webui

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Prefix is the path the UI is served under.
const Prefix = "/ui/"

// csp allows the page's own scripts and styles only; media, images and
// fetches may go to other origins because playback URLs redirect to
// presigned object-store URLs. hls.js feeds MediaSource through blob: URLs.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; " +
	"connect-src 'self' http: https:; worker-src 'self' blob:; " +
	"object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"

// Handler serves the UI; mount it at Prefix ("/ui/").
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(Prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// No directory listings: the only directory with an index is the root.
		if p := r.URL.Path; strings.HasSuffix(p, "/") && p != Prefix {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		if strings.HasPrefix(r.URL.Path, Prefix+"vendor/") {
			h.Set("Cache-Control", "public, max-age=86400")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}
