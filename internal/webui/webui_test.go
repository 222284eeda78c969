package webui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(Prefix, Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, tc := range []struct {
		method, path string
		status       int
		ctype, body  string
	}{
		{"GET", "/ui/", 200, "text/html", `id="view-library"`},
		{"GET", "/ui/upload.html", 200, "text/html", `id="upload-form"`},
		{"GET", "/ui/console.js", 200, "javascript", "../v1/"},
		{"GET", "/ui/console.css", 200, "text/css", ""},
		{"GET", "/ui/index.html", 301, "", ""}, // FileServer canonicalises to /ui/
		{"GET", "/ui/player.html", 200, "text/html", `id="video"`},
		{"GET", "/ui/app.js", 200, "javascript", "../v1/"},
		{"GET", "/ui/player.js", 200, "javascript", "KilnPlayer"},
		{"GET", "/ui/style.css", 200, "text/css", ""},
		{"GET", "/ui/vendor/hls.min.js", 200, "javascript", ""},
		{"HEAD", "/ui/vendor/hls.min.js", 200, "javascript", ""},
		{"GET", "/ui/vendor/LICENSE", 200, "", "Apache License"},
		{"GET", "/ui/vendor/", 404, "", ""},
		{"GET", "/ui/nope.js", 404, "", ""},
		{"POST", "/ui/", 405, "", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, nil)
			resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			}}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want it to contain %q", ct, tc.ctype)
			}
			if !strings.Contains(string(body), tc.body) {
				t.Errorf("body does not contain %q", tc.body)
			}
			if tc.status == 200 && resp.Header.Get("Content-Security-Policy") == "" {
				t.Error("no Content-Security-Policy")
			}
		})
	}
}

// The pages must reach the API only through same-origin relative URLs and
// load nothing from other hosts.
func TestRelativeURLs(t *testing.T) {
	for _, name := range []string{"static/index.html", "static/upload.html", "static/player.html", "static/app.js", "static/console.js",
		"static/player.js", "static/player-page.js"} {
		b, err := static.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"http://", "https://", `"/v1/`, `'/v1/`, "//cdn"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}
