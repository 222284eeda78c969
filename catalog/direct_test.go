package catalog

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/objstore"
)

// countingObjects counts the playlist reads and presigns of fakeObjects.
type countingObjects struct {
	fakeObjects
	gets, presigns *atomic.Int64
}

func (c countingObjects) Get(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, error) {
	c.gets.Add(1)
	return c.fakeObjects.Get(ctx, bucket, key, maxBytes)
}

func (c countingObjects) PresignGetWith(ctx context.Context, bucket, key string, ttl time.Duration, opts objstore.PresignOptions) (*url.URL, error) {
	c.presigns.Add(1)
	return c.fakeObjects.PresignGetWith(ctx, bucket, key, ttl, opts)
}

// countedFixture is a playback fixture whose object store counts.
func countedFixture(t *testing.T, mut func(*Config)) (f *playbackFixture, gets, presigns *atomic.Int64) {
	t.Helper()
	gets, presigns = new(atomic.Int64), new(atomic.Int64)
	f = newPlaybackFixture(t, func(c *Config) {
		c.Objects = countingObjects{fakeObjects: c.Objects.(fakeObjects), gets: gets, presigns: presigns}
		if mut != nil {
			mut(c)
		}
	})
	return f, gets, presigns
}

// absoluteURI matches the URI lines and URI attributes of a playlist that are
// absolute URLs.
var absoluteURI = regexp.MustCompile(`https?://[^"\s]+`)

// mediaURIs lists every segment and EXT-X-MAP URI of a media playlist.
func mediaURIs(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXT-X-MAP:"):
			m := regexp.MustCompile(`URI="([^"]*)"`).FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("EXT-X-MAP without URI: %s", line)
			}
			out = append(out, m[1])
		case !strings.HasPrefix(line, "#"):
			out = append(out, line)
		}
	}
	return out
}

func TestDirectMediaPlaylist(t *testing.T) {
	const cdn = "https://cdn.example.com/kiln-outputs"
	for _, tt := range []struct {
		name       string
		cdn        string
		signed     bool
		tokenLeft  time.Duration
		wantHost   string // of every URI
		wantExpiry string // X-Amz-Expires of every URI; "" for unsigned CDN URLs
		wantCache  string
	}{
		// PresignTTL 10 min beyond the asset's 12 s; a copy is reused for a quarter of 10 min.
		{name: "public", wantHost: "s3.test", wantExpiry: "612", wantCache: "public, max-age=150"},
		{name: "public with CDN", cdn: cdn + "/", wantHost: "cdn.example.com", wantCache: "public, max-age=300"},
		{name: "signed", signed: true, tokenLeft: time.Hour, wantHost: "s3.test", wantExpiry: "612", wantCache: "private, max-age=150"},
		// A signed asset is never on the CDN, and its URLs expire with the token.
		{name: "signed with CDN, short token", cdn: cdn, signed: true, tokenLeft: 100*time.Second + 300*time.Millisecond,
			wantHost: "s3.test", wantExpiry: "100", wantCache: "private, max-age=25"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newPlaybackFixture(t, func(c *Config) { c.CDNURL = tt.cdn })
			asset, q := f.public, ""
			if tt.signed {
				asset, q = f.signed, "?token="+f.token(f.signed, tt.tokenLeft)
			}
			rec := f.get(t, "/v1/play/"+asset+"/720p/index.m3u8"+q)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != tt.wantCache {
				t.Errorf("Cache-Control %q, want %q", cc, tt.wantCache)
			}
			body := rec.Body.String()
			dir := "/assets/" + asset + "/hls/720p/"
			uris := mediaURIs(t, body)
			if len(uris) != 4 { // EXT-X-MAP and three segments
				t.Fatalf("%d URIs in\n%s", len(uris), body)
			}
			for _, raw := range uris {
				u, err := url.Parse(raw)
				if err != nil || !u.IsAbs() || u.Host != tt.wantHost {
					t.Fatalf("URI %q is not an absolute URL on %s", raw, tt.wantHost)
				}
				file := u.Path[strings.LastIndex(u.Path, "/")+1:]
				wantPath := "/outputs" + dir + file
				if tt.cdn != "" && !tt.signed {
					wantPath = "/kiln-outputs" + dir + file
				}
				if u.Path != wantPath {
					t.Errorf("URI %q: path %q, want %q", raw, u.Path, wantPath)
				}
				if got := u.Query().Get("X-Amz-Expires"); got != tt.wantExpiry {
					t.Errorf("URI %q: X-Amz-Expires %q, want %q", raw, got, tt.wantExpiry)
				}
				if strings.Contains(raw, "token=") {
					t.Errorf("URI %q carries the playback token to another origin", raw)
				}
				wantType := "video/iso.segment"
				if file == "init.mp4" {
					wantType = "video/mp4"
				}
				if tt.wantExpiry != "" && u.Query().Get("response-content-type") != wantType {
					t.Errorf("URI %q: content type %q, want %q", raw, u.Query().Get("response-content-type"), wantType)
				}
			}
			// Everything but the URIs is the stored playlist, byte for byte.
			relative := absoluteURI.ReplaceAllStringFunc(body, func(s string) string {
				u, _ := url.Parse(s)
				return u.Path[strings.LastIndex(u.Path, "/")+1:]
			})
			if relative != vodPlaylist {
				t.Errorf("playlist with its URIs made relative:\n%s\nwant the stored one:\n%s", relative, vodPlaylist)
			}
		})
	}
}

// TestDirectPlaylistKeepsTags: the rewrite touches URIs only — byte ranges
// of one file, a map with a byte range, discontinuities, an EVENT playlist
// without EXT-X-ENDLIST, CRLF line ends, tags it does not know, absolute
// URIs and files it does not serve stay as they are.
func TestDirectPlaylistKeepsTags(t *testing.T) {
	const stored = "#EXTM3U\r\n#EXT-X-VERSION:7\r\n#EXT-X-TARGETDURATION:6\r\n#EXT-X-PLAYLIST-TYPE:EVENT\r\n" +
		"#EXT-X-MAP:URI=\"main.mp4\",BYTERANGE=\"720@0\"\r\n" +
		"#EXTINF:6.000000,\r\n#EXT-X-BYTERANGE:1000@720\r\nmain.mp4\r\n" +
		"#EXTINF:6.000000,\r\n#EXT-X-BYTERANGE:1200\r\nmain.mp4\r\n" +
		"#EXT-X-DISCONTINUITY\r\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z\r\n#EXT-X-KILN-FUTURE:A=\"x\",URI=\"https://elsewhere.test/k\"\r\n" +
		"#EXTINF:4.000000,\r\nseg_00003.m4s\r\n#EXTINF:4.000000,\r\nhttps://elsewhere.test/ad.m4s\r\n" +
		"# a comment\r\n#EXTINF:4.000000,\r\n../other/seg_1.m4s\r\n"
	f := newPlaybackFixture(t, nil)
	key := "outputs/assets/" + f.public + "/hls/720p/index.m3u8"
	f.objects[key] = []byte(stored)
	rec := f.get(t, "/v1/play/"+f.public+"/720p/index.m3u8")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	prefix := "https://s3.test/outputs/assets/" + f.public + "/hls/720p/"
	for _, want := range []string{
		"#EXT-X-MAP:URI=\"" + prefix + "main.mp4?X-Amz-Expires=612&response-content-type=video%2Fmp4\",BYTERANGE=\"720@0\"\r\n",
		"#EXT-X-BYTERANGE:1000@720\r\n" + prefix + "main.mp4?",
		"#EXT-X-BYTERANGE:1200\r\n" + prefix + "main.mp4?",
		"\r\n" + prefix + "seg_00003.m4s?X-Amz-Expires=612&response-content-type=video%2Fiso.segment\r\n",
		"\r\nhttps://elsewhere.test/ad.m4s\r\n", "URI=\"https://elsewhere.test/k\"", "\r\n../other/seg_1.m4s\r\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("rewritten playlist lacks %q:\n%s", want, body)
		}
	}
	// main.mp4 is presigned as video/mp4 wherever it is used: the
	// extension decides, as on the segment route.
	relative := strings.NewReplacer(prefix+"main.mp4?X-Amz-Expires=612&response-content-type=video%2Fmp4", "main.mp4",
		prefix+"seg_00003.m4s?X-Amz-Expires=612&response-content-type=video%2Fiso.segment", "seg_00003.m4s").Replace(body)
	if relative != stored {
		t.Errorf("playlist with its URIs made relative:\n%q\nwant the stored one:\n%q", relative, stored)
	}
	// Still being written: no longer than its short max-age (60 s).
	if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=60" {
		t.Errorf("Cache-Control %q of an EVENT playlist", cc)
	}
}

func TestProxyMediaPlaylistUnchanged(t *testing.T) {
	f := newPlaybackFixture(t, func(c *Config) { c.Delivery = DeliveryProxy; c.CDNURL = "https://cdn.example.com" })
	rec := f.get(t, "/v1/play/"+f.public+"/720p/index.m3u8")
	if rec.Code != http.StatusOK || rec.Body.String() != vodPlaylist {
		t.Errorf("proxy delivery changed the public playlist (%d):\n%s", rec.Code, rec.Body)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=300" {
		t.Errorf("Cache-Control %q", cc)
	}
}

// TestMediaPlaylistCache: a playlist is read and presigned once per window
// and per token, then made again; what is served is never cacheable beyond
// its window nor the URLs inside.
func TestMediaPlaylistCache(t *testing.T) {
	f, gets, presigns := countedFixture(t, nil) // PresignTTL 10 min: a 150 s window
	pub := "/v1/play/" + f.public + "/720p/index.m3u8"
	tokA, tokB := f.token(f.signed, time.Hour), f.token(f.signed, 2*time.Hour)
	signedA := "/v1/play/" + f.signed + "/720p/index.m3u8?token=" + tokA
	signedB := "/v1/play/" + f.signed + "/720p/index.m3u8?token=" + tokB
	want := func(what string, g, p int64) {
		t.Helper()
		if gets.Load() != g || presigns.Load() != p {
			t.Errorf("%s: %d reads and %d presigns, want %d and %d", what, gets.Load(), presigns.Load(), g, p)
		}
	}
	first := f.get(t, pub).Body.String()
	want("first request", 1, 4)
	for range 5 {
		if got := f.get(t, pub).Body.String(); got != first {
			t.Fatalf("cached playlist differs:\n%s\nfirst:\n%s", got, first)
		}
	}
	f.get(t, pub, "Accept-Encoding", "gzip")
	want("cache hits", 1, 4)
	f.get(t, signedA)
	f.get(t, signedA)
	want("a signed token", 2, 8)
	f.get(t, signedB)
	want("another token: its own playlist", 3, 12)
	if strings.Contains(f.get(t, signedB).Body.String(), tokA) {
		t.Error("one token's playlist served to another")
	}

	start := f.now
	for _, at := range []time.Duration{0, 30 * time.Second, 149 * time.Second} {
		f.now = start.Add(at)
		rec := f.get(t, pub)
		maxAge := cacheMaxAge(t, rec.Header().Get("Cache-Control"))
		window := 150*time.Second - at
		urlsLeft := 612*time.Second - at
		if maxAge > window || maxAge > urlsLeft || maxAge > vodPlaylistMaxAge {
			t.Errorf("at +%s: max-age %s, beyond the window (%s left) or the URLs (%s left)", at, maxAge, window, urlsLeft)
		}
	}
	want("within the window", 3, 12)
	f.now = start.Add(150 * time.Second)
	f.get(t, pub)
	want("the next window", 4, 16)
	f.get(t, pub)
	want("the next window, again", 4, 16)

	f.now = start.Add(150*time.Second + 150*time.Second)
	f.get(t, pub)
	want("the window after", 5, 20)
}

// TestLivePlaylistNotCachedLong: a playlist without EXT-X-ENDLIST is kept
// no longer than its 60 s max-age, so the next segments show within it.
func TestLivePlaylistNotCachedLong(t *testing.T) {
	f, gets, _ := countedFixture(t, nil)
	key := "outputs/assets/" + f.public + "/hls/720p/index.m3u8"
	live := strings.TrimSuffix(vodPlaylist, "#EXT-X-ENDLIST\n")
	f.objects[key] = []byte(live)
	pub := "/v1/play/" + f.public + "/720p/index.m3u8"
	rec := f.get(t, pub)
	if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=60" || strings.Contains(rec.Body.String(), "ENDLIST") {
		t.Fatalf("live playlist: Cache-Control %q\n%s", cc, rec.Body)
	}
	f.objects[key] = []byte(vodPlaylist) // the packager finished
	f.now = f.now.Add(59 * time.Second)
	if strings.Contains(f.get(t, pub).Body.String(), "ENDLIST") || gets.Load() != 1 {
		t.Fatalf("regenerated within its max-age (%d reads)", gets.Load())
	}
	f.now = f.now.Add(time.Second)
	rec = f.get(t, pub)
	if !strings.Contains(rec.Body.String(), "ENDLIST") || gets.Load() != 2 {
		t.Fatalf("not regenerated after its max-age (%d reads)", gets.Load())
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=150" {
		t.Errorf("ended playlist: Cache-Control %q", cc)
	}
}

// TestDirectPlaylistTokenBound: presigned URLs never outlive the token, the
// response is never cacheable beyond it, and a token with less than a
// second left gets no playlist.
func TestDirectPlaylistTokenBound(t *testing.T) {
	f := newPlaybackFixture(t, nil)
	target := "/v1/play/" + f.signed + "/360p/index.m3u8?token="
	for _, left := range []time.Duration{time.Hour, 10 * time.Minute, 100 * time.Second, 8 * time.Second, time.Second} {
		rec := f.get(t, target+f.token(f.signed, left))
		if rec.Code != http.StatusOK {
			t.Fatalf("token with %s left: %d %s", left, rec.Code, rec.Body)
		}
		maxAge := cacheMaxAge(t, rec.Header().Get("Cache-Control"))
		for _, raw := range mediaURIs(t, rec.Body.String()) {
			u, _ := url.Parse(raw)
			secs, err := strconv.Atoi(u.Query().Get("X-Amz-Expires"))
			if err != nil || time.Duration(secs)*time.Second > left {
				t.Errorf("token with %s left: URI %q expires after it", left, raw)
			}
			if maxAge > time.Duration(secs)*time.Second {
				t.Errorf("token with %s left: max-age %s beyond the URLs' %d s", left, maxAge, secs)
			}
		}
	}
	tok := f.token(f.signed, time.Second)
	f.now = f.now.Add(500 * time.Millisecond)
	rec := f.get(t, target+tok)
	if rec.Code != http.StatusForbidden || errorCode(t, rec) != CodeTokenExpired {
		t.Fatalf("half a second left: %d %s; want 403 token_expired", rec.Code, rec.Body)
	}
}

// cacheMaxAge reads max-age from a Cache-Control value.
func cacheMaxAge(t *testing.T, cc string) time.Duration {
	t.Helper()
	_, v, ok := strings.Cut(cc, "max-age=")
	n, err := strconv.Atoi(v)
	if !ok || err != nil {
		t.Fatalf("Cache-Control %q has no max-age", cc)
	}
	return time.Duration(n) * time.Second
}
