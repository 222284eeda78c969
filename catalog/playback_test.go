package catalog

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/grafov/m3u8"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/policy"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// vodPlaylist is a media playlist as ffmpeg's HLS muxer writes it.
const vodPlaylist = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n" +
	"#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n" +
	"#EXTINF:6.000000,\nseg_00000.m4s\n#EXTINF:6.000000,\nseg_00001.m4s\n#EXTINF:0.480000,\nseg_00002.m4s\n#EXT-X-ENDLIST\n"

// playbackFixture is a catalog with a ready public asset and a ready signed
// asset whose outputs are all in fakeObjects.
type playbackFixture struct {
	svc            *Service
	h              http.Handler
	public, signed string // asset ids
	objects        fakeObjects
	now            time.Time
	mp4            []byte
}

func newPlaybackFixture(t *testing.T, mut func(*Config)) *playbackFixture {
	t.Helper()
	store := newStore(t)
	f := &playbackFixture{objects: fakeObjects{}, now: time.Unix(1_750_000_000, 0).UTC()}
	f.mp4 = bytes.Repeat([]byte("0123456789"), 100) // 1000 bytes
	for i, pol := range []string{"", policy.Signed} {
		jobID, assetID := testJob(fmt.Sprint("playback-", i))
		queuedEv := event(jobID, queued, 0)
		queuedEv.PlaybackPolicy = pol
		for _, ev := range []*kilnv1.JobEvent{queuedEv, event(jobID, probing, 0), event(jobID, ready, 0)} {
			if _, err := store.Apply(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		out := testOutputs(assetID)
		for _, r := range out.Renditions {
			dir := strings.TrimSuffix(r.PlaylistKey, "index.m3u8")
			f.objects["outputs/"+r.PlaylistKey] = []byte(vodPlaylist)
			f.objects["outputs/"+dir+"init.mp4"] = []byte("init-" + r.Name)
			f.objects["outputs/"+dir+"seg_00001.m4s"] = []byte("segment-" + r.Name)
		}
		f.objects["outputs/"+out.Mp4Key] = f.mp4
		f.objects["outputs/"+out.PosterKey] = []byte{0xff, 0xd8, 0xff, 0xe0}
		if pol == policy.Signed {
			f.signed = assetID
		} else {
			f.public = assetID
		}
	}
	cfg := Config{Store: store, Objects: f.objects, PublicURL: testPublic, APIKeys: httpapi.NewKeys([]string{testKey}),
		Logger: zaptest.NewLogger(t), PresignTTL: 10 * time.Minute, SigningKey: tokenKey, TokenTTL: time.Hour}
	if mut != nil {
		mut(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc.now = func() time.Time { return f.now }
	f.svc, f.h = svc, svc.Handler()
	return f
}

// token mints a token for asset valid for d from the fixture's now.
func (f *playbackFixture) token(asset string, d time.Duration) string {
	return MintToken(tokenKey, asset, f.now.Add(d))
}

func (f *playbackFixture) get(t *testing.T, target string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	return f.do(t, http.MethodGet, target, nil, header...)
}

func (f *playbackFixture) do(t *testing.T, method, target string, body io.Reader, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, body)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body httpapi.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("status %d, body is not an error envelope: %s", rec.Code, rec.Body)
	}
	return body.Error.Code
}

func TestSignedPlayback(t *testing.T) {
	f := newPlaybackFixture(t, nil)
	tok := f.token(f.signed, time.Hour)
	sp, pp := "/v1/play/"+f.signed, "/v1/play/"+f.public
	q := "?token=" + tok
	tests := []struct {
		name   string
		target string
		status int
		code   string
		cache  string // Cache-Control, when checked
	}{
		{name: "master without token", target: sp + "/master.m3u8", status: 403, code: CodeTokenRequired},
		{name: "master with empty token", target: sp + "/master.m3u8?token=", status: 403, code: CodeTokenRequired},
		{name: "master with token", target: sp + "/master.m3u8" + q, status: 200, cache: "private, max-age=60"},
		{name: "master with short-lived token", target: sp + "/master.m3u8?token=" + f.token(f.signed, 42*time.Second), status: 200, cache: "private, max-age=42"},
		{name: "master with expired token", target: sp + "/master.m3u8?token=" + f.token(f.signed, -time.Second), status: 403, code: CodeTokenExpired},
		{name: "master with tampered token", target: sp + "/master.m3u8?token=" + tok[:len(tok)-2] + "xx", status: 403, code: CodeInvalidToken},
		{name: "master with malformed token", target: sp + "/master.m3u8?token=nonsense", status: 403, code: CodeInvalidToken},
		{name: "master with another asset's token", target: sp + "/master.m3u8?token=" + f.token(f.public, time.Hour), status: 403, code: CodeInvalidToken},
		{name: "media playlist without token", target: sp + "/720p/index.m3u8", status: 403, code: CodeTokenRequired},
		// Direct delivery: the playlist's presigned URLs live PresignTTL (10 min) + 12 s, so a copy
		// is reused for a quarter of 10 min: 150 s.
		{name: "media playlist with token", target: sp + "/720p/index.m3u8" + q, status: 200, cache: "private, max-age=150"},
		{name: "segment without token", target: sp + "/720p/seg_00001.m4s", status: 403, code: CodeTokenRequired},
		{name: "segment with tampered token", target: sp + "/720p/seg_00001.m4s?token=1" + tok, status: 403, code: CodeInvalidToken},
		{name: "segment with token", target: sp + "/720p/seg_00001.m4s" + q, status: 302, cache: "private, max-age=300"},
		{name: "init segment with token", target: sp + "/360p/init.mp4" + q, status: 302},
		{name: "redirect cache bounded by the token", target: sp + "/360p/init.mp4?token=" + f.token(f.signed, 100*time.Second), status: 302, cache: "private, max-age=50"}, // half the URL's life, which the token bounds
		{name: "download without token", target: sp + "/download.mp4", status: 403, code: CodeTokenRequired},
		{name: "download with token", target: sp + "/download.mp4" + q, status: 302},
		{name: "poster without token", target: sp + "/poster.jpg", status: 403, code: CodeTokenRequired},
		{name: "poster with expired token", target: sp + "/poster.jpg?token=" + f.token(f.signed, -time.Hour), status: 403, code: CodeTokenExpired},
		{name: "poster with token", target: sp + "/poster.jpg" + q, status: 302},
		{name: "unknown rendition is 404 before the token", target: sp + "/4k/index.m3u8", status: 404, code: httpapi.CodeNotFound},
		{name: "public master needs no token", target: pp + "/master.m3u8", status: 200, cache: "public, max-age=60"},
		{name: "public master ignores a bogus token", target: pp + "/master.m3u8?token=bogus", status: 200},
		{name: "public media playlist", target: pp + "/720p/index.m3u8", status: 200, cache: "public, max-age=150"},
		{name: "public segment", target: pp + "/720p/seg_00001.m4s?token=bogus", status: 302, cache: "private, max-age=300"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := f.get(t, tt.target)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if rec.Header().Get("Access-Control-Allow-Origin") != "*" {
				t.Error("no CORS header")
			}
			if tt.code != "" {
				if got := errorCode(t, rec); got != tt.code {
					t.Errorf("error code = %q, want %q", got, tt.code)
				}
				if tt.status == 403 && rec.Header().Get("Cache-Control") != "no-store" {
					t.Errorf("denial Cache-Control = %q, want no-store", rec.Header().Get("Cache-Control"))
				}
			}
			if tt.cache != "" && rec.Header().Get("Cache-Control") != tt.cache {
				t.Errorf("Cache-Control = %q, want %q", rec.Header().Get("Cache-Control"), tt.cache)
			}
		})
	}
}

// TestSignedPlaylistsCarryToken: with proxy delivery every URI of a signed
// asset's playlists stays on the catalog and carries the token.
func TestSignedPlaylistsCarryToken(t *testing.T) {
	f := newPlaybackFixture(t, func(c *Config) { c.Delivery = DeliveryProxy })
	tok := f.token(f.signed, time.Hour)
	suffix := "?token=" + tok

	t.Run("master", func(t *testing.T) {
		rec := f.get(t, "/v1/play/"+f.signed+"/master.m3u8"+suffix)
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		pl, typ, err := m3u8.DecodeFrom(bytes.NewReader(rec.Body.Bytes()), true)
		if err != nil || typ != m3u8.MASTER {
			t.Fatalf("decode: %v (%v)\n%s", err, typ, rec.Body)
		}
		vs := pl.(*m3u8.MasterPlaylist).Variants
		if len(vs) != 2 {
			t.Fatalf("%d variants", len(vs))
		}
		for _, v := range vs {
			if !strings.HasSuffix(v.URI, "/index.m3u8"+suffix) {
				t.Errorf("variant URI %q lacks the token", v.URI)
			}
		}
		// Without the tokens it is the public master, byte for byte.
		public := f.get(t, "/v1/play/"+f.public+"/master.m3u8").Body.String()
		if got := strings.ReplaceAll(rec.Body.String(), suffix, ""); got != public {
			t.Errorf("signed master minus tokens:\n%s\nwant:\n%s", got, public)
		}
	})
	t.Run("media", func(t *testing.T) {
		rec := f.get(t, "/v1/play/"+f.signed+"/720p/index.m3u8"+suffix)
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		pl, typ, err := m3u8.DecodeFrom(bytes.NewReader(rec.Body.Bytes()), true)
		if err != nil || typ != m3u8.MEDIA {
			t.Fatalf("decode: %v (%v)\n%s", err, typ, rec.Body)
		}
		media := pl.(*m3u8.MediaPlaylist)
		if media.Map == nil || media.Map.URI != "init.mp4"+suffix {
			t.Errorf("EXT-X-MAP = %+v", media.Map)
		}
		n := 0
		for _, seg := range media.Segments {
			if seg == nil {
				continue
			}
			n++
			if !strings.HasSuffix(seg.URI, ".m4s"+suffix) {
				t.Errorf("segment URI %q lacks the token", seg.URI)
			}
			// What the player requests next is authorised.
			if seg.URI == "seg_00001.m4s"+suffix {
				if c := f.get(t, "/v1/play/"+f.signed+"/720p/"+seg.URI).Code; c != http.StatusOK {
					t.Errorf("GET %s: %d", seg.URI, c)
				}
			}
		}
		if n != 3 {
			t.Errorf("%d segments, want 3", n)
		}
		if got := strings.ReplaceAll(rec.Body.String(), suffix, ""); got != vodPlaylist {
			t.Errorf("media minus tokens:\n%s\nwant the stored playlist:\n%s", got, vodPlaylist)
		}
	})
	t.Run("public media untouched", func(t *testing.T) {
		rec := f.get(t, "/v1/play/"+f.public+"/720p/index.m3u8?token="+tok)
		if rec.Code != 200 || rec.Body.String() != vodPlaylist {
			t.Errorf("public media playlist changed (%d):\n%s", rec.Code, rec.Body)
		}
	})
}

func TestWithToken(t *testing.T) {
	const p = "?token=T"
	tests := []struct{ name, in, want string }{
		{"uri lines and map", "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:6.0,\nseg_1.m4s\n#EXT-X-ENDLIST\n",
			"#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4" + p + "\"\n#EXTINF:6.0,\nseg_1.m4s" + p + "\n#EXT-X-ENDLIST\n"},
		{"CRLF kept", "#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"\r\nseg.m4s\r\n",
			"#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4" + p + "\",BYTERANGE=\"720@0\"\r\nseg.m4s" + p + "\r\n"},
		{"no final newline", "#EXTM3U\nseg.m4s", "#EXTM3U\nseg.m4s" + p},
		{"blank lines and comments", "#EXTM3U\n\n# a comment URI=\"x\"\n  \nseg.m4s\n", "#EXTM3U\n\n# a comment URI=\"x\"\n  \nseg.m4s" + p + "\n"},
		{"existing query", "seg.m4s?v=2\n", "seg.m4s?v=2&token=T\n"},
		{"fragment", "seg.m4s#t=1\n", "seg.m4s" + p + "#t=1\n"},
		{"absolute URIs untouched", "https://cdn.example/seg.m4s\n//cdn.example/seg.m4s\n#EXT-X-MAP:URI=\"https://cdn.example/init.mp4\"\n",
			"https://cdn.example/seg.m4s\n//cdn.example/seg.m4s\n#EXT-X-MAP:URI=\"https://cdn.example/init.mp4\"\n"},
		{"media and i-frame tags", "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en, main\",URI=\"audio/index.m3u8\"\n" +
			"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001f,mp4a.40.2\",URI=\"720p/iframes.m3u8\"\n",
			"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en, main\",URI=\"audio/index.m3u8" + p + "\"\n" +
				"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,CODECS=\"avc1.64001f,mp4a.40.2\",URI=\"720p/iframes.m3u8" + p + "\"\n"},
		{"URI= inside another quoted value", "#EXT-X-MEDIA:NAME=\"x,URI=\",URI=\"a.m3u8\"\n", "#EXT-X-MEDIA:NAME=\"x,URI=\",URI=\"a.m3u8" + p + "\"\n"},
		{"attribute named like URI", "#EXT-X-SESSION-DATA:DATA-ID=\"d\",X-URI=\"keep\"\n", "#EXT-X-SESSION-DATA:DATA-ID=\"d\",X-URI=\"keep\"\n"},
		{"stream inf then uri", "#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"a,b\"\n360p/index.m3u8\n",
			"#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"a,b\"\n360p/index.m3u8" + p + "\n"},
		{"trailing spaces stay after the URI", "seg.m4s  \n", "seg.m4s" + p + "  \n"},
		{"unterminated quote copied", "#EXT-X-MAP:URI=\"init.mp4\n", "#EXT-X-MAP:URI=\"init.mp4\n"},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(withToken([]byte(tt.in), "T")); got != tt.want {
				t.Errorf("withToken(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzWithToken(f *testing.F) {
	f.Add(vodPlaylist)
	f.Add("#EXT-X-MEDIA:NAME=\"x,URI=\",URI=\"a.m3u8\"\r\nseg\n")
	f.Add("?")
	f.Fuzz(func(t *testing.T, in string) {
		if strings.Contains(in, "token=T") {
			return
		}
		out := string(withToken([]byte(in), "T"))
		// Only insertions: without the parameters, the output is the input
		// plus, at most, the "?" or "&" separators before them.
		stripped := strings.ReplaceAll(out, "token=T", "")
		i := 0
		for j := 0; j < len(stripped); j++ {
			switch {
			case i < len(in) && stripped[j] == in[i]:
				i++
			case stripped[j] != '?' && stripped[j] != '&':
				t.Fatalf("withToken(%q) = %q: more than insertions", in, out)
			}
		}
		if i != len(in) {
			t.Fatalf("withToken(%q) = %q: input lost", in, out)
		}
	})
}

func TestSigningNotConfigured(t *testing.T) {
	f := newPlaybackFixture(t, func(c *Config) { c.SigningKey = nil })
	tok := f.token(f.signed, time.Hour)
	for _, target := range []string{"/master.m3u8", "/720p/index.m3u8", "/720p/seg_00001.m4s", "/download.mp4", "/poster.jpg"} {
		rec := f.get(t, "/v1/play/"+f.signed+target+"?token="+tok)
		if rec.Code != http.StatusServiceUnavailable || errorCode(t, rec) != CodeSigningNotConfigured {
			t.Errorf("%s: %d %s", target, rec.Code, rec.Body)
		}
	}
	if rec := f.get(t, "/v1/play/"+f.public+"/master.m3u8"); rec.Code != 200 {
		t.Errorf("public asset: %d", rec.Code)
	}
	var a map[string]any
	rec := f.get(t, "/v1/assets/"+f.signed, "Authorization", "Bearer "+testKey)
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || rec.Code != 200 {
		t.Fatalf("asset: %d %s", rec.Code, rec.Body)
	}
	if a["playback_policy"] != policy.Signed || a["playback_token_expires_at"] != nil ||
		strings.Contains(fmt.Sprint(a["playback"]), "token=") {
		t.Errorf("asset without a signing key = %v", a)
	}
	rec = f.do(t, http.MethodPost, "/v1/assets/"+f.signed+"/playback-token", nil, "Authorization", "Bearer "+testKey)
	if rec.Code != http.StatusServiceUnavailable || errorCode(t, rec) != CodeSigningNotConfigured {
		t.Errorf("mint without a key: %d %s", rec.Code, rec.Body)
	}
}

func TestAssetAndJobJSONPolicy(t *testing.T) {
	f := newPlaybackFixture(t, nil)
	type assetOut struct {
		Policy   string            `json:"playback_policy"`
		Playback map[string]string `json:"playback"`
		Expires  *time.Time        `json:"playback_token_expires_at"`
	}
	auth := []string{"Authorization", "Bearer " + testKey}

	var pub assetOut
	decode(t, f.get(t, "/v1/assets/"+f.public, auth...), &pub)
	base := "https://kiln.example.com/v1/play/" + f.public
	if pub.Policy != policy.Public || pub.Expires != nil || pub.Playback["hls"] != base+"/master.m3u8" ||
		pub.Playback["mp4"] != base+"/download.mp4" || pub.Playback["poster"] != base+"/poster.jpg" {
		t.Errorf("public asset = %+v", pub)
	}

	rec := f.get(t, "/v1/assets/"+f.signed, auth...)
	var sig assetOut
	decode(t, rec, &sig)
	if sig.Policy != policy.Signed || sig.Expires == nil || !sig.Expires.Equal(f.now.Add(time.Hour)) {
		t.Fatalf("signed asset = %+v", sig)
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("asset JSON with a token: Cache-Control %q", rec.Header().Get("Cache-Control"))
	}
	for name, want := range map[string]string{"hls": "/master.m3u8", "mp4": "/download.mp4", "poster": "/poster.jpg"} {
		u, err := url.Parse(sig.Playback[name])
		if err != nil || u.Scheme != "https" || u.Host != "kiln.example.com" || u.Path != "/v1/play/"+f.signed+want {
			t.Errorf("%s URL = %q", name, sig.Playback[name])
			continue
		}
		exp, err := VerifyToken(tokenKey, f.signed, u.Query().Get("token"), f.now)
		if err != nil || !exp.Equal(*sig.Expires) {
			t.Errorf("%s token: %v, expiry %v", name, err, exp)
		}
		if c := f.get(t, u.RequestURI()).Code; c != http.StatusOK && c != http.StatusFound {
			t.Errorf("GET %s: %d", u.RequestURI(), c)
		}
	}

	for asset, want := range map[string]string{f.public: policy.Public, f.signed: policy.Signed} {
		var j struct {
			Policy string `json:"playback_policy"`
		}
		decode(t, f.get(t, "/v1/jobs/"+jobOfAsset(t, f, asset), auth...), &j)
		if j.Policy != want {
			t.Errorf("job of %s: playback_policy %q, want %q", asset, j.Policy, want)
		}
	}
}

// TestReadKeyGetsNoToken: GET /v1/assets/{id} mints playback tokens only
// for a write key; a read key gets a signed asset's URLs without a token (it
// cannot hand out playback), and cannot mint one with the token route.
func TestReadKeyGetsNoToken(t *testing.T) {
	const reader, writer = "kiln_reader_0123456789abcdef", "kiln_writer_0123456789abcdef"
	keys, err := httpapi.NewKeySet(httpapi.KeysConfig{Keys: []httpapi.APIKey{
		{Name: "r", Secret: reader, Scope: httpapi.ScopeRead}, {Name: "w", Secret: writer, Scope: httpapi.ScopeWrite}}})
	if err != nil {
		t.Fatal(err)
	}
	f := newPlaybackFixture(t, func(c *Config) { c.APIKeys = keys })
	type assetOut struct {
		Playback   map[string]string `json:"playback"`
		Thumbnails *struct {
			Poster string   `json:"poster"`
			Images []string `json:"images"`
		} `json:"thumbnails"`
		Expires *time.Time `json:"playback_token_expires_at"`
	}
	var r, w assetOut
	rec := f.get(t, "/v1/assets/"+f.signed, "Authorization", "Bearer "+reader)
	if rec.Code != http.StatusOK {
		t.Fatalf("read key: %d %s", rec.Code, rec.Body)
	}
	decode(t, rec, &r)
	if strings.Contains(rec.Body.String(), "token=") || r.Expires != nil {
		t.Errorf("a read key got a playback token: %s", rec.Body)
	}
	if r.Playback["hls"] != "https://kiln.example.com/v1/play/"+f.signed+"/master.m3u8" {
		t.Errorf("read key's hls URL %q", r.Playback["hls"])
	}
	if c := f.get(t, "/v1/play/"+f.signed+"/master.m3u8").Code; c != http.StatusForbidden {
		t.Errorf("the read key's URL plays: %d", c)
	}
	if c := f.do(t, http.MethodPost, "/v1/assets/"+f.signed+"/playback-token", nil, "Authorization", "Bearer "+reader).Code; c != http.StatusForbidden {
		t.Errorf("read key mints with the token route: %d", c)
	}
	decode(t, f.get(t, "/v1/assets/"+f.signed, "Authorization", "Bearer "+writer), &w)
	if w.Expires == nil || !strings.Contains(w.Playback["hls"], "?token=") {
		t.Errorf("a write key got no token: %+v", w)
	}
}

func jobOfAsset(t *testing.T, f *playbackFixture, asset string) string {
	t.Helper()
	a, err := f.svc.store.Asset(t.Context(), asset)
	if err != nil {
		t.Fatal(err)
	}
	return a.JobID
}

func TestPlaybackTokenEndpoint(t *testing.T) {
	f := newPlaybackFixture(t, nil)
	_, unknown := testJob("unknown")
	queuedJob, queuedAsset := testJob("queued-only")
	if _, err := f.svc.store.Apply(t.Context(), event(queuedJob, queued, 0)); err != nil {
		t.Fatal(err)
	}
	const maxTTL = 30 * 24 * 3600
	tests := []struct {
		name   string
		asset  string
		key    string
		body   string
		status int
		code   string
		ttl    time.Duration // expected lifetime on success
	}{
		{name: "no API key", asset: f.signed, status: 401, code: httpapi.CodeUnauthorized},
		{name: "wrong API key", asset: f.signed, key: "nope", status: 401, code: httpapi.CodeUnauthorized},
		{name: "no body: default ttl", asset: f.signed, key: testKey, status: 200, ttl: time.Hour},
		{name: "empty object", asset: f.signed, key: testKey, body: "{}", status: 200, ttl: time.Hour},
		{name: "null ttl", asset: f.signed, key: testKey, body: `{"ttl_seconds": null}`, status: 200, ttl: time.Hour},
		{name: "one minute", asset: f.signed, key: testKey, body: `{"ttl_seconds": 60}`, status: 200, ttl: time.Minute},
		{name: "minimum", asset: f.signed, key: testKey, body: `{"ttl_seconds": 1}`, status: 200, ttl: time.Second},
		{name: "maximum", asset: f.signed, key: testKey, body: fmt.Sprintf(`{"ttl_seconds": %d}`, maxTTL), status: 200, ttl: maxTTL * time.Second},
		{name: "over maximum", asset: f.signed, key: testKey, body: fmt.Sprintf(`{"ttl_seconds": %d}`, maxTTL+1), status: 400, code: httpapi.CodeBadRequest},
		{name: "zero", asset: f.signed, key: testKey, body: `{"ttl_seconds": 0}`, status: 400, code: httpapi.CodeBadRequest},
		{name: "negative", asset: f.signed, key: testKey, body: `{"ttl_seconds": -5}`, status: 400, code: httpapi.CodeBadRequest},
		{name: "fractional", asset: f.signed, key: testKey, body: `{"ttl_seconds": 1.5}`, status: 400, code: httpapi.CodeBadRequest},
		{name: "string", asset: f.signed, key: testKey, body: `{"ttl_seconds": "60"}`, status: 400, code: httpapi.CodeBadRequest},
		{name: "unknown field", asset: f.signed, key: testKey, body: `{"ttl": 60}`, status: 400, code: httpapi.CodeBadRequest},
		{name: "not JSON", asset: f.signed, key: testKey, body: `ttl=60`, status: 400, code: httpapi.CodeBadRequest},
		{name: "two objects", asset: f.signed, key: testKey, body: `{} {}`, status: 400, code: httpapi.CodeBadRequest},
		{name: "too large", asset: f.signed, key: testKey, body: `{"ttl_seconds": 60` + strings.Repeat(" ", 8<<10) + `}`, status: 413, code: httpapi.CodeTooLarge},
		{name: "unknown asset", asset: unknown, key: testKey, status: 404, code: httpapi.CodeNotFound},
		{name: "malformed asset id", asset: "ast_x", key: testKey, status: 400, code: httpapi.CodeInvalidID},
		{name: "public asset", asset: f.public, key: testKey, status: 200, ttl: time.Hour},
		{name: "asset not ready yet", asset: queuedAsset, key: testKey, status: 200, ttl: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header []string
			if tt.key != "" {
				header = []string{"Authorization", "Bearer " + tt.key, "Content-Type", "application/json"}
			}
			rec := f.do(t, http.MethodPost, "/v1/assets/"+tt.asset+"/playback-token", strings.NewReader(tt.body), header...)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if tt.code != "" {
				if got := errorCode(t, rec); got != tt.code {
					t.Errorf("error code = %q, want %q", got, tt.code)
				}
				return
			}
			var got tokenJSON
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatal(err)
			}
			if !got.ExpiresAt.Equal(f.now.Add(tt.ttl)) {
				t.Errorf("expires_at = %v, want %v", got.ExpiresAt, f.now.Add(tt.ttl))
			}
			if exp, err := VerifyToken(tokenKey, tt.asset, got.Token, f.now); err != nil || !exp.Equal(got.ExpiresAt) {
				t.Errorf("token does not verify: %v (%v)", err, exp)
			}
			play := "https://kiln.example.com/v1/play/" + tt.asset
			if got.HLS != play+"/master.m3u8?token="+got.Token {
				t.Errorf("hls = %q", got.HLS)
			}
			if tt.asset == queuedAsset {
				if got.MP4 != "" || got.Poster != "" {
					t.Errorf("not-ready asset: mp4 %q poster %q", got.MP4, got.Poster)
				}
				return
			}
			if got.MP4 != play+"/download.mp4?token="+got.Token || got.Poster != play+"/poster.jpg?token="+got.Token {
				t.Errorf("mp4 = %q, poster = %q", got.MP4, got.Poster)
			}
			if c := f.get(t, strings.TrimPrefix(got.HLS, "https://kiln.example.com")).Code; c != 200 {
				t.Errorf("GET minted hls URL: %d", c)
			}
		})
	}
}

func TestProxyDelivery(t *testing.T) {
	f := newPlaybackFixture(t, func(c *Config) { c.Delivery = DeliveryProxy })
	tok := f.token(f.signed, 2*time.Hour)
	pp, sp := "/v1/play/"+f.public, "/v1/play/"+f.signed
	mp4ETag := func() string {
		rec := f.get(t, pp+"/download.mp4")
		return rec.Header().Get("ETag")
	}()
	if !strings.HasPrefix(mp4ETag, `"`) || len(mp4ETag) != 34 {
		t.Fatalf("ETag = %q", mp4ETag)
	}
	immutable := "public, max-age=31536000, immutable"
	tests := []struct {
		name    string
		method  string
		target  string
		header  []string
		status  int
		ctype   string
		cache   string
		body    []byte
		headers map[string]string
	}{
		{name: "download", target: pp + "/download.mp4", status: 200, ctype: "video/mp4", cache: immutable, body: f.mp4,
			headers: map[string]string{"Accept-Ranges": "bytes", "Content-Length": "1000",
				"Content-Disposition": `attachment; filename="` + f.public + `.mp4"`}},
		{name: "range", target: pp + "/download.mp4", header: []string{"Range", "bytes=0-99"}, status: 206, ctype: "video/mp4",
			body: f.mp4[:100], headers: map[string]string{"Content-Range": "bytes 0-99/1000", "Content-Length": "100"}},
		{name: "suffix range", target: pp + "/download.mp4", header: []string{"Range", "bytes=-10"}, status: 206,
			body: f.mp4[990:], headers: map[string]string{"Content-Range": "bytes 990-999/1000"}},
		{name: "open range", target: pp + "/download.mp4", header: []string{"Range", "bytes=500-"}, status: 206,
			body: f.mp4[500:], headers: map[string]string{"Content-Range": "bytes 500-999/1000"}},
		{name: "unsatisfiable range", target: pp + "/download.mp4", header: []string{"Range", "bytes=1000-2000"}, status: 416,
			headers: map[string]string{"Content-Range": "bytes */1000"}},
		{name: "if-none-match", target: pp + "/download.mp4", header: []string{"If-None-Match", mp4ETag}, status: 304, cache: immutable},
		{name: "stale if-range gets everything", target: pp + "/download.mp4", header: []string{"Range", "bytes=0-9", "If-Range", `"other"`}, status: 200, body: f.mp4},
		{name: "head", method: http.MethodHead, target: pp + "/download.mp4", status: 200, ctype: "video/mp4",
			headers: map[string]string{"Content-Length": "1000"}},
		{name: "media segment", target: pp + "/720p/seg_00001.m4s", status: 200, ctype: "video/iso.segment", cache: immutable, body: []byte("segment-720p")},
		{name: "init segment", target: pp + "/360p/init.mp4", status: 200, ctype: "video/mp4", cache: immutable, body: []byte("init-360p")},
		{name: "poster", target: pp + "/poster.jpg", status: 200, ctype: "image/jpeg", cache: immutable, body: []byte{0xff, 0xd8, 0xff, 0xe0}},
		{name: "missing segment", target: pp + "/720p/seg_09999.m4s", status: 404},
		{name: "signed without token", target: sp + "/download.mp4", status: 403},
		{name: "signed range with token", target: sp + "/download.mp4?token=" + tok, header: []string{"Range", "bytes=0-99"}, status: 206,
			ctype: "video/mp4", cache: "private, max-age=7200", body: f.mp4[:100], headers: map[string]string{"Content-Range": "bytes 0-99/1000"}},
		{name: "signed segment with token", target: sp + "/720p/seg_00001.m4s?token=" + tok, status: 200, ctype: "video/iso.segment",
			cache: "private, max-age=7200"},
		{name: "signed poster bounded by a short token", target: sp + "/poster.jpg?token=" + f.token(f.signed, 30*time.Second), status: 200,
			cache: "private, max-age=30"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			rec := f.do(t, method, tt.target, nil, tt.header...)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tt.status, rec.Body)
			}
			h := rec.Header()
			if h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(h.Get("Access-Control-Expose-Headers"), "Content-Range") {
				t.Errorf("CORS headers = %v", h)
			}
			if h.Get("Location") != "" {
				t.Errorf("proxy mode redirected to %s", h.Get("Location"))
			}
			if tt.ctype != "" && h.Get("Content-Type") != tt.ctype {
				t.Errorf("Content-Type = %q, want %q", h.Get("Content-Type"), tt.ctype)
			}
			if tt.cache != "" && h.Get("Cache-Control") != tt.cache {
				t.Errorf("Cache-Control = %q, want %q", h.Get("Cache-Control"), tt.cache)
			}
			for k, v := range tt.headers {
				if h.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, h.Get(k), v)
				}
			}
			if tt.body != nil && !bytes.Equal(rec.Body.Bytes(), tt.body) {
				t.Errorf("body = %q, want %q", rec.Body.Bytes(), tt.body)
			}
			if method == http.MethodHead && rec.Body.Len() != 0 {
				t.Errorf("HEAD body of %d bytes", rec.Body.Len())
			}
		})
	}
}

func TestRedirectDelivery(t *testing.T) {
	f := newPlaybackFixture(t, nil)
	pp := "/v1/play/" + f.public
	tests := []struct {
		target, path, ctype, disposition string
	}{
		{pp + "/download.mp4", "/outputs/assets/" + f.public + "/download.mp4", "video/mp4", `attachment; filename="` + f.public + `.mp4"`},
		{pp + "/poster.jpg", "/outputs/assets/" + f.public + "/poster.jpg", "image/jpeg", ""},
		{pp + "/720p/seg_00001.m4s", "/outputs/assets/" + f.public + "/hls/720p/seg_00001.m4s", "video/iso.segment", ""},
		{pp + "/720p/init.mp4", "/outputs/assets/" + f.public + "/hls/720p/init.mp4", "video/mp4", ""},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := f.get(t, tt.target, "Range", "bytes=0-99")
			if rec.Code != http.StatusFound {
				t.Fatalf("status %d", rec.Code)
			}
			loc, err := url.Parse(rec.Header().Get("Location"))
			if err != nil || loc.Host != "s3.test" || loc.Path != tt.path {
				t.Fatalf("Location = %q", rec.Header().Get("Location"))
			}
			q := loc.Query()
			if q.Get("response-content-type") != tt.ctype || q.Get("response-content-disposition") != tt.disposition ||
				q.Get("X-Amz-Expires") != "600" {
				t.Errorf("presign parameters = %v", q)
			}
			if rec.Header().Get("Cache-Control") != "private, max-age=300" {
				t.Errorf("Cache-Control = %q", rec.Header().Get("Cache-Control"))
			}
		})
	}
}

// TestPresignBoundedByToken: the presigned URL a signed asset's request is
// redirected to expires no later than the token that asked for it, and a
// token with less than a second left gets none.
func TestPresignBoundedByToken(t *testing.T) {
	f := newPlaybackFixture(t, nil) // PresignTTL 10 min
	sp := "/v1/play/" + f.signed
	for _, tt := range []struct {
		left time.Duration
		want string // X-Amz-Expires
	}{
		{time.Hour, "600"},
		{100 * time.Second, "100"},
		{1 * time.Second, "1"},
	} {
		for _, target := range []string{sp + "/720p/seg_00001.m4s", sp + "/download.mp4", sp + "/poster.jpg", sp + "/thumbnails/sprite.jpg"} {
			rec := f.get(t, target+"?token="+f.token(f.signed, tt.left))
			if target == sp+"/thumbnails/sprite.jpg" && rec.Code == http.StatusNotFound {
				continue // the fixture's asset may have no sprite
			}
			if rec.Code != http.StatusFound {
				t.Fatalf("%s with %s left: %d %s", target, tt.left, rec.Code, rec.Body)
			}
			loc, _ := url.Parse(rec.Header().Get("Location"))
			if got := loc.Query().Get("X-Amz-Expires"); got != tt.want {
				t.Errorf("%s with a token %s from expiry: presigned for %ss, want %s", target, tt.left, got, tt.want)
			}
		}
	}
	tok := f.token(f.signed, time.Second)
	f.now = f.now.Add(500 * time.Millisecond)
	rec := f.get(t, sp+"/720p/seg_00001.m4s?token="+tok)
	if rec.Code != http.StatusForbidden || errorCode(t, rec) != CodeTokenExpired {
		t.Fatalf("half a second left: %d %s; want 403 token_expired", rec.Code, rec.Body)
	}
}

func TestPlaylistGzip(t *testing.T) {
	f := newPlaybackFixture(t, nil)
	tok := f.token(f.signed, time.Hour)
	for _, target := range []string{
		"/v1/play/" + f.public + "/master.m3u8",
		"/v1/play/" + f.public + "/720p/index.m3u8",
		"/v1/play/" + f.signed + "/master.m3u8?token=" + tok,
		"/v1/play/" + f.signed + "/360p/index.m3u8?token=" + tok,
	} {
		plain := f.get(t, target)
		if plain.Code != 200 || plain.Header().Get("Content-Encoding") != "" {
			t.Fatalf("%s: %d, encoding %q", target, plain.Code, plain.Header().Get("Content-Encoding"))
		}
		tests := []struct {
			accept string
			gzip   bool
		}{
			{"gzip", true},
			{"br, GZIP;q=0.5", true},
			{"gzip, deflate, br", true},
			{"gzip;q=0", false},
			{"gzip; q=0.000", false},
			{"identity", false},
			{"br", false},
			{"x-gzipped", false},
		}
		for _, tt := range tests {
			rec := f.get(t, target, "Accept-Encoding", tt.accept)
			h := rec.Header()
			if rec.Code != 200 || h.Get("Content-Type") != hlsContentType || h.Get("Vary") != "Accept-Encoding" {
				t.Errorf("%s (%s): %d, Content-Type %q, Vary %q", target, tt.accept, rec.Code, h.Get("Content-Type"), h.Get("Vary"))
			}
			if h.Get("Cache-Control") != plain.Header().Get("Cache-Control") {
				t.Errorf("%s (%s): Cache-Control %q differs from %q", target, tt.accept, h.Get("Cache-Control"), plain.Header().Get("Cache-Control"))
			}
			if fmt.Sprint(rec.Body.Len()) != h.Get("Content-Length") {
				t.Errorf("%s (%s): Content-Length %s for %d bytes", target, tt.accept, h.Get("Content-Length"), rec.Body.Len())
			}
			body := rec.Body.Bytes()
			if !tt.gzip {
				if h.Get("Content-Encoding") != "" || !bytes.Equal(body, plain.Body.Bytes()) {
					t.Errorf("%s (%s): encoded %q", target, tt.accept, h.Get("Content-Encoding"))
				}
				continue
			}
			if h.Get("Content-Encoding") != "gzip" {
				t.Fatalf("%s (%s): Content-Encoding %q", target, tt.accept, h.Get("Content-Encoding"))
			}
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(zr)
			if err != nil || !bytes.Equal(got, plain.Body.Bytes()) {
				t.Errorf("%s: gunzipped %q (%v), want %q", target, got, err, plain.Body)
			}
		}
	}
}

func TestPreflight(t *testing.T) {
	f := newPlaybackFixture(t, nil)
	rec := f.do(t, http.MethodOptions, "/v1/play/"+f.signed+"/download.mp4", nil,
		"Origin", "https://player.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "range")
	h := rec.Header()
	if rec.Code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Range") || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "GET") {
		t.Errorf("preflight: %d %v", rec.Code, h)
	}
	for _, exposed := range []string{"Content-Length", "Content-Range", "Accept-Ranges"} {
		if !strings.Contains(h.Get("Access-Control-Expose-Headers"), exposed) {
			t.Errorf("%s not exposed: %q", exposed, h.Get("Access-Control-Expose-Headers"))
		}
	}
}

func TestNewPlaybackConfig(t *testing.T) {
	store := newStore(t)
	base := func() Config {
		return Config{Store: store, Objects: fakeObjects{}, PublicURL: testPublic, APIKeys: httpapi.NewKeys([]string{testKey})}
	}
	tests := []struct {
		name string
		mut  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"proxy", func(c *Config) { c.Delivery = DeliveryProxy }, true},
		{"redirect", func(c *Config) { c.Delivery = DeliveryRedirect }, true},
		{"direct", func(c *Config) { c.Delivery = DeliveryDirect }, true},
		{"cdn", func(c *Config) { c.CDNURL = "https://cdn.example.com/outputs/" }, true},
		{"cdn without scheme", func(c *Config) { c.CDNURL = "cdn.example.com" }, false},
		{"cdn with a query", func(c *Config) { c.CDNURL = "https://cdn.example.com/?a=b" }, false},
		{"cdn not http", func(c *Config) { c.CDNURL = "ftp://cdn.example.com/" }, false},
		{"unknown delivery", func(c *Config) { c.Delivery = "teleport" }, false},
		{"key", func(c *Config) { c.SigningKey = tokenKey }, true},
		{"short key", func(c *Config) { c.SigningKey = []byte("short") }, false},
		{"negative token ttl", func(c *Config) { c.TokenTTL = -time.Second }, false},
		{"sub-second token ttl", func(c *Config) { c.TokenTTL = time.Millisecond }, false},
		{"maximum token ttl", func(c *Config) { c.TokenTTL = MaxTokenTTL }, true},
		{"token ttl over maximum", func(c *Config) { c.TokenTTL = MaxTokenTTL + time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.mut(&cfg)
			s, err := New(cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok=%v", err, tt.ok)
			}
			if (tt.name == "defaults" || tt.name == "redirect") && (s.delivery != DeliveryDirect || s.tokenTTL != DefaultTokenTTL || len(s.signingKey) != 0) {
				t.Errorf("defaults: delivery %q token ttl %v", s.delivery, s.tokenTTL)
			}
		})
	}
}

// TestPlaybackRateLimit: the open playback routes are limited per client
// address (429 rate_limited with Retry-After, CORS headers kept so a player
// can read it); behind a trusted proxy the client is the one it names.
func TestPlaybackRateLimit(t *testing.T) {
	proxies, err := httpapi.ParseProxies("10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	f := newPlaybackFixture(t, func(c *Config) { c.PlaybackRateLimit, c.PlaybackRateBurst, c.Proxies = 0.5, 3, proxies })
	from := func(remote, xff string) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/v1/play/"+f.public+"/master.m3u8", nil)
		req.RemoteAddr = remote
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		rec := httptest.NewRecorder()
		f.h.ServeHTTP(rec, req)
		return rec
	}
	for i := range 3 {
		if rec := from("203.0.113.5:1000", ""); rec.Code != http.StatusOK {
			t.Fatalf("request %d: %d", i+1, rec.Code)
		}
	}
	rec := from("203.0.113.5:1001", "")
	if rec.Code != http.StatusTooManyRequests || errorCode(t, rec) != httpapi.CodeRateLimited {
		t.Fatalf("over the burst: %d %s; want 429 rate_limited", rec.Code, rec.Body)
	}
	if rec.Header().Get("Retry-After") != "2" || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("429 headers: %v", rec.Header())
	}
	if rec := from("203.0.113.6:1000", ""); rec.Code != http.StatusOK {
		t.Errorf("another client: %d", rec.Code)
	}
	// Two clients behind one trusted proxy have a budget each.
	for i := range 3 {
		if rec := from("10.0.0.2:80", "198.51.100.1"); rec.Code != http.StatusOK {
			t.Fatalf("client A via proxy, request %d: %d", i+1, rec.Code)
		}
	}
	if rec := from("10.0.0.2:80", "198.51.100.1"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("client A via proxy over its burst: %d", rec.Code)
	}
	if rec := from("10.0.0.2:80", "198.51.100.2"); rec.Code != http.StatusOK {
		t.Errorf("client B via the same proxy: %d", rec.Code)
	}
	// The JSON API is not affected (it has its per-key limit).
	if rec := f.get(t, "/v1/assets/"+f.public, "Authorization", "Bearer "+testKey); rec.Code != http.StatusOK {
		t.Errorf("API: %d", rec.Code)
	}
}
