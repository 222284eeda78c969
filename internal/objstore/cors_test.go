package objstore_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/objstore"
)

// TestEnsurePlaybackCORSMinIO: MinIO has no bucket CORS API; it answers
// CORS itself for every bucket, so a presigned GET and its preflight from
// another origin are allowed (what browsers playing segments need).
func TestEnsurePlaybackCORSMinIO(t *testing.T) {
	c, _, bucket := setup(t)
	state, err := c.EnsurePlaybackCORS(t.Context(), bucket)
	if err != nil || state != objstore.CORSUnsupported {
		t.Fatalf("EnsurePlaybackCORS on MinIO = %q, %v; want %q", state, err, objstore.CORSUnsupported)
	}
	put(t, c, bucket, "assets/a1/hls/360p/seg_00001.m4s", randomBytes(1000))
	u, err := c.PresignGet(t.Context(), bucket, "assets/a1/hls/360p/seg_00001.m4s", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	const origin = "http://player.example"
	for _, method := range []string{http.MethodOptions, http.MethodGet} {
		req, _ := http.NewRequestWithContext(t.Context(), method, u.String(), nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Range", "bytes=0-99")
		if method == http.MethodOptions {
			req.Header.Set("Access-Control-Request-Method", http.MethodGet)
			req.Header.Set("Access-Control-Request-Headers", "range")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != origin && got != "*" {
			t.Errorf("%s presigned from %s: %d, Access-Control-Allow-Origin %q", method, origin, resp.StatusCode, got)
		}
		if method == http.MethodGet && (resp.StatusCode != http.StatusPartialContent ||
			!strings.Contains(strings.ToLower(resp.Header.Get("Access-Control-Expose-Headers")), "content-range")) {
			t.Errorf("GET: %d, exposes %q", resp.StatusCode, resp.Header.Get("Access-Control-Expose-Headers"))
		}
	}
}

// fakeCORSStore is the bucket CORS API of an S3 that has one (AWS S3, GCS,
// R2): GET ?cors answers the stored configuration or
// NoSuchCORSConfiguration, PUT ?cors stores one.
type fakeCORSStore struct {
	mu   sync.Mutex
	conf string
	puts int
}

func (f *fakeCORSStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := r.URL.Query()["cors"]; !ok {
		http.Error(w, "unexpected request "+r.Method+" "+r.URL.String(), http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet:
		if f.conf == "" {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchCORSConfiguration</Code><Message>none</Message></Error>`)
			return
		}
		_, _ = io.WriteString(w, f.conf)
	case http.MethodPut:
		b, _ := io.ReadAll(r.Body)
		f.conf = string(b)
		f.puts++
	}
}

func TestEnsurePlaybackCORSSetsOnlyWhenMissing(t *testing.T) {
	fake := &fakeCORSStore{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c, err := objstore.New(objstore.Config{Endpoint: strings.TrimPrefix(srv.URL, "http://"), AccessKey: "k", SecretKey: "secret-key"})
	if err != nil {
		t.Fatal(err)
	}
	state, err := c.EnsurePlaybackCORS(t.Context(), "kiln-outputs")
	if err != nil || state != objstore.CORSSet {
		t.Fatalf("first call = %q, %v; want %q", state, err, objstore.CORSSet)
	}
	for _, want := range []string{"<AllowedOrigin>*</AllowedOrigin>", "<AllowedMethod>GET</AllowedMethod>", "<AllowedMethod>HEAD</AllowedMethod>",
		"<AllowedHeader>Range</AllowedHeader>", "<ExposeHeader>Content-Range</ExposeHeader>", "<ExposeHeader>Content-Length</ExposeHeader>"} {
		if !strings.Contains(fake.conf, want) {
			t.Errorf("stored CORS configuration lacks %s:\n%s", want, fake.conf)
		}
	}
	// The bucket has a configuration now (or its operator's): kept as it is.
	state, err = c.EnsurePlaybackCORS(t.Context(), "kiln-outputs")
	if err != nil || state != objstore.CORSKept || fake.puts != 1 {
		t.Fatalf("second call = %q, %v after %d puts; want %q after 1", state, err, fake.puts, objstore.CORSKept)
	}
}
