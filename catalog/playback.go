package catalog

import (
	"bytes"
	"compress/gzip"
	"errors"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/policy"
)

// Error codes of playback routes, beside the shared httpapi ones.
const (
	// CodeTokenRequired (403): a signed asset was requested without ?token=.
	CodeTokenRequired = "token_required"
	// CodeInvalidToken (403): the token is malformed, tampered with, or
	// another asset's.
	CodeInvalidToken = "invalid_token"
	// CodeTokenExpired (403): the token was genuine but has expired.
	CodeTokenExpired = "token_expired"
	// CodeSigningNotConfigured (503): the asset is signed and the catalog has
	// no signing key.
	CodeSigningNotConfigured = "signing_not_configured"
	// CodeDownloadNotReady (409): the asset plays, but its MP4 download is
	// not built yet (it is made from the segments after READY).
	CodeDownloadNotReady = "download_not_ready"
)

// Media types of what playback serves.
const (
	hlsContentType      = playlist.ContentType
	segmentContentType  = "video/iso.segment" // fMP4 media segments (.m4s)
	mp4ContentType      = "video/mp4"         // init segments and the MP4 download
	audioMP4ContentType = "audio/mp4"         // the download of an audio-only asset (.m4a)
	posterContentType   = "image/jpeg"
)

// Cache lifetimes of playback responses.
const (
	playlistMaxAge    = 60 * time.Second  // master playlists of ready assets (and media playlists without EXT-X-ENDLIST of them)
	vodPlaylistMaxAge = 300 * time.Second // media playlists of a VOD (ended) rendition
	// livePlaylistMaxAge: playlists of an asset still being encoded. Its
	// EVENT media playlists grow a segment every target duration (6 s)
	// and a player reloads them about that often: a cached copy no older
	// than half of it (the usual bound for live playlists) shows each new
	// segment in time. Its master changes at READY (measured bandwidths).
	livePlaylistMaxAge = 2 * time.Second
	immutableMaxAge    = 365 * 24 * time.Hour // proxied objects: their keys never change content
	maxPlaylistSize    = 4 << 20              // largest media playlist read from storage
	tokenParam         = "token"              // query parameter carrying playback tokens
	corsExposed        = "Content-Length, Content-Range, Accept-Ranges"
)

func (s *Service) playbackRoutes() []httpapi.Route {
	play := func(pattern string, h http.HandlerFunc) httpapi.Route {
		return httpapi.Open(pattern, cors(s.playLimit.Limit(s.proxies, h).ServeHTTP)) // a 429 carries CORS too
	}
	return []httpapi.Route{
		play("GET /v1/play/{id}/master.m3u8", s.master),
		play("GET /v1/play/{id}/download.mp4", s.download),
		play("GET /v1/play/{id}/poster.jpg", s.poster),
		play("GET /v1/play/{id}/{rendition}/index.m3u8", s.mediaPlaylist),
		play("GET /v1/play/{id}/{rendition}/{file}", s.segment),
		play("OPTIONS /v1/play/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Range")
			w.Header().Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
		}),
	}
}

func cors(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Expose-Headers", corsExposed)
		h(w, r)
	})
}

// grant is what authorised one playback request: the token of a signed
// asset and its expiry, or nothing for a public asset.
type grant struct {
	token   string
	expires time.Time
}

// playable loads a playable asset (ready, or playing before READY) and
// authorizes the playback request for it, answering the request itself
// (and returning false) when it may not proceed.
func (s *Service) playable(w http.ResponseWriter, r *http.Request) (*Asset, grant, bool) {
	a, ok := s.playableAsset(w, r)
	if !ok {
		return nil, grant{}, false
	}
	g, ok := s.authorize(w, r, a)
	return a, g, ok
}

// authorize checks the ?token= of a signed asset's playback request,
// answering the request itself (and returning false) when it may not
// proceed. Public assets need and check nothing.
func (s *Service) authorize(w http.ResponseWriter, r *http.Request, a *Asset) (grant, bool) {
	if a.PlaybackPolicy == policy.Public {
		return grant{}, true
	}
	deny := func(status int, code, msg string) (grant, bool) {
		w.Header().Set("Cache-Control", "no-store")
		httpapi.WriteError(w, status, code, msg)
		return grant{}, false
	}
	if len(s.signingKey) == 0 {
		return deny(http.StatusServiceUnavailable, CodeSigningNotConfigured, "signed playback is not configured")
	}
	token := r.URL.Query().Get(tokenParam)
	if token == "" {
		return deny(http.StatusForbidden, CodeTokenRequired, "this asset needs a playback token")
	}
	exp, err := VerifyToken(s.signingKey, a.ID, token, s.now())
	switch {
	case errors.Is(err, ErrTokenExpired):
		return deny(http.StatusForbidden, CodeTokenExpired, "the playback token has expired")
	case err != nil:
		return deny(http.StatusForbidden, CodeInvalidToken, "invalid playback token")
	}
	return grant{token: token, expires: exp}, true
}

// cacheControl is the Cache-Control of a playback response: shared caching
// for maxAge for public assets; private, and never beyond the token's
// expiry, for signed ones.
func (s *Service) cacheControl(g grant, maxAge time.Duration, immutable bool) string {
	if g.token == "" {
		v := "public, max-age=" + seconds(maxAge)
		if immutable {
			v += ", immutable"
		}
		return v
	}
	return "private, max-age=" + seconds(min(maxAge, g.expires.Sub(s.now())))
}

func seconds(d time.Duration) string { return strconv.FormatInt(max(int64(d/time.Second), 0), 10) }

func (s *Service) master(w http.ResponseWriter, r *http.Request) {
	a, g, ok := s.playable(w, r)
	if !ok {
		return
	}
	maxAge := playlistMaxAge
	if !a.Ready() {
		maxAge = livePlaylistMaxAge // READY brings measured bandwidths
	}
	cc := s.cacheControl(g, maxAge, false)
	if g.token == "" {
		m := s.renderedMasterOf(a)
		s.writeEncoded(w, r, m.body, m.gzipped, cc)
		return
	}
	s.writePlaylist(w, r, withToken(playlist.Master(a.variants()), g.token), cc)
}

func (s *Service) mediaPlaylist(w http.ResponseWriter, r *http.Request) {
	a, rend, ok := s.rendition(w, r)
	if !ok {
		return
	}
	g, ok := s.authorize(w, r, a)
	if !ok {
		return
	}
	e, err := s.mediaPlaylistFor(r.Context(), a, rend, g)
	if errors.Is(err, errTokenSpent) {
		w.Header().Set("Cache-Control", "no-store")
		httpapi.WriteError(w, http.StatusForbidden, CodeTokenExpired, "the playback token has expired")
		return
	}
	if err != nil {
		s.log.Error("media playlist", zap.String("asset_id", a.ID), zap.String("key", rend.PlaylistKey), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "media playlist unavailable")
		return
	}
	s.writePlaylist(w, r, e.body, s.mediaCacheControl(a, g, e))
}

// writePlaylist answers with an HLS playlist, gzipped when the client
// accepts it.
func (s *Service) writePlaylist(w http.ResponseWriter, r *http.Request, body []byte, cacheControl string) {
	var gzipped []byte
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		gzipped = s.gzip(body)
	}
	s.writeEncoded(w, r, body, gzipped, cacheControl)
}

// writeEncoded answers with an HLS playlist: gzipped, its gzip encoding,
// when the client accepts it, and body otherwise.
func (s *Service) writeEncoded(w http.ResponseWriter, r *http.Request, body, gzipped []byte, cacheControl string) {
	h := w.Header()
	h.Set("Content-Type", hlsContentType)
	h.Set("Cache-Control", cacheControl)
	h.Add("Vary", "Accept-Encoding")
	if gzipped != nil && acceptsGzip(r.Header.Values("Accept-Encoding")) {
		body = gzipped
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// gzip compresses body with a pooled writer: a gzip writer holds about
// 800 KB of tables, and one per response made compressing cost more than
// generating the playlist.
func (s *Service) gzip(body []byte) []byte {
	var buf bytes.Buffer
	zw, _ := s.gzips.Get().(*gzip.Writer)
	if zw == nil {
		zw = gzip.NewWriter(&buf)
	} else {
		zw.Reset(&buf)
	}
	_, _ = zw.Write(body) // writes to a bytes.Buffer do not fail
	_ = zw.Close()
	s.gzips.Put(zw)
	return buf.Bytes()
}

// acceptsGzip reports whether Accept-Encoding header values list gzip with
// a non-zero quality.
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			for p := range strings.SplitSeq(params, ";") {
				k, q, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(q), 64); err != nil || f <= 0 {
						return false
					}
				}
			}
			return true
		}
	}
	return false
}

// segmentFile is the only shape of file a media playlist references.
var segmentFile = regexp.MustCompile(`^[A-Za-z0-9_-]+\.(m4s|mp4)$`)

func (s *Service) segment(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("rendition") == thumbnailsDir {
		// GET /v1/play/{id}/thumbnails/{file}: a pattern of its own would
		// conflict with …/{rendition}/index.m3u8 in http.ServeMux.
		s.thumbnail(w, r)
		return
	}
	file := r.PathValue("file")
	if !segmentFile.MatchString(file) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such file")
		return
	}
	a, rend, ok := s.rendition(w, r)
	if !ok {
		return
	}
	g, ok := s.authorize(w, r, a)
	if !ok {
		return
	}
	ct := segmentContentType
	if path.Ext(file) == ".mp4" {
		ct = mp4ContentType
	}
	s.deliver(w, r, a, g, path.Dir(rend.PlaylistKey)+"/"+file, objstore.PresignOptions{ContentType: ct})
}

// download delivers the MP4 download; an asset that plays without one yet
// (it is built from the segments after READY) answers 409
// download_not_ready.
func (s *Service) download(w http.ResponseWriter, r *http.Request) {
	a, g, ok := s.playable(w, r)
	if !ok {
		return
	}
	if a.MP4Key == "" {
		w.Header().Set("Cache-Control", "no-store")
		httpapi.WriteError(w, http.StatusConflict, CodeDownloadNotReady, "the MP4 download is not built yet: it is made after the asset is ready")
		return
	}
	ct, ext := mp4ContentType, ".mp4"
	if path.Ext(a.MP4Key) == ".m4a" { // the download of an audio-only asset
		ct, ext = audioMP4ContentType, ".m4a"
	}
	s.deliver(w, r, a, g, a.MP4Key, objstore.PresignOptions{ContentType: ct,
		ContentDisposition: `attachment; filename="` + a.ID + ext + `"`}) // asset ids need no quoting
}

func (s *Service) poster(w http.ResponseWriter, r *http.Request) {
	s.output(w, r, func(a *Asset) (string, objstore.PresignOptions) {
		return a.PosterKey, objstore.PresignOptions{ContentType: posterContentType}
	})
}

// output delivers the asset-level object pick chooses, 404 when the asset
// has none.
func (s *Service) output(w http.ResponseWriter, r *http.Request, pick func(*Asset) (string, objstore.PresignOptions)) {
	a, g, ok := s.playable(w, r)
	if !ok {
		return
	}
	key, opts := pick(a)
	if key == "" {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "asset has no such output")
		return
	}
	s.deliver(w, r, a, g, key, opts)
}

// deliver serves the object key of the asset by the configured delivery:
// a redirect to a presigned URL, or proxied.
func (s *Service) deliver(w http.ResponseWriter, r *http.Request, a *Asset, g grant, key string, opts objstore.PresignOptions) {
	if s.delivery == DeliveryProxy {
		s.proxy(w, r, a, g, key, opts)
		return
	}
	// The presigned URL expires no later than the token that asked for it
	// (S3 counts whole seconds: round down); a token with less than a
	// second left cannot get one.
	ttl := s.ttl
	if g.token != "" {
		left := g.expires.Sub(s.now()).Truncate(time.Second)
		if left < time.Second {
			w.Header().Set("Cache-Control", "no-store")
			httpapi.WriteError(w, http.StatusForbidden, CodeTokenExpired, "the playback token has expired")
			return
		}
		ttl = min(ttl, left)
	}
	u, err := s.objects.PresignGetWith(r.Context(), a.Bucket, key, ttl, opts)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	// A cached redirect must not outlive its presigned URL, nor the token
	// that allowed it.
	maxAge := ttl / 2
	w.Header().Set("Cache-Control", "private, max-age="+seconds(maxAge))
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// proxy streams the object through the catalog with http.ServeContent:
// Range (206, Content-Range, 416), If-Range, If-None-Match against the
// object's ETag (304), HEAD.
func (s *Service) proxy(w http.ResponseWriter, r *http.Request, a *Asset, g grant, key string, opts objstore.PresignOptions) {
	obj, info, err := s.objects.Open(r.Context(), a.Bucket, key)
	if errors.Is(err, objstore.ErrNotFound) {
		s.log.Warn("playback object missing", zap.String("asset_id", a.ID), zap.String("key", key))
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such file")
		return
	}
	if err != nil {
		s.log.Error("open playback object", zap.String("asset_id", a.ID), zap.String("key", key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "object storage unavailable")
		return
	}
	defer obj.Close()
	h := w.Header()
	h.Set("Content-Type", opts.ContentType)
	h.Set("Cache-Control", s.cacheControl(g, immutableMaxAge, true))
	if opts.ContentDisposition != "" {
		h.Set("Content-Disposition", opts.ContentDisposition)
	}
	if etag := strings.Trim(info.ETag, `"`); etag != "" {
		h.Set("ETag", `"`+etag+`"`)
	}
	http.ServeContent(w, r, "", info.LastModified, obj)
}

// withToken returns an HLS playlist whose relative URIs carry the playback
// token: every URI line, and every quoted URI attribute of an #EXT tag
// (EXT-X-MAP, EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF, …). Everything else is
// copied byte for byte, line endings included. Absolute URIs are left alone,
// so a token never leaks to another origin.
func withToken(playlist []byte, token string) []byte {
	param := tokenParam + "=" + url.QueryEscape(token)
	return rewriteURIs(playlist, func(uri string) string { return addParam(uri, param) })
}

// rewriteURIs returns an HLS playlist whose URIs — every URI line, and every
// quoted URI attribute of an #EXT tag — are replaced by what fn makes of
// them. Everything else is copied byte for byte, line endings included:
// tags kiln does not know (BYTERANGE, DISCONTINUITY, PART, …) stay exactly
// as they are.
func rewriteURIs(playlist []byte, fn func(uri string) string) []byte {
	var out bytes.Buffer
	out.Grow(len(playlist) + bytes.Count(playlist, []byte("\n"))*64)
	for line := range bytes.Lines(playlist) {
		content, eol := splitEOL(line)
		switch {
		case len(bytes.TrimSpace(content)) == 0:
			out.Write(line)
		case content[0] == '#':
			if bytes.HasPrefix(content, []byte("#EXT")) {
				writeTag(&out, content, fn)
			} else {
				out.Write(content) // a comment
			}
			out.Write(eol)
		default: // a URI line
			uri := bytes.TrimRight(content, " \t")
			out.WriteString(fn(string(uri)))
			out.Write(content[len(uri):])
			out.Write(eol)
		}
	}
	return out.Bytes()
}

// splitEOL splits a line into its content and its "\n" or "\r\n" (or
// nothing, for a last line without one).
func splitEOL(line []byte) (content, eol []byte) {
	n := len(line)
	if n > 0 && line[n-1] == '\n' {
		n--
		if n > 0 && line[n-1] == '\r' {
			n--
		}
	}
	return line[:n], line[n:]
}

// writeTag writes the #EXT tag line, replacing the value of each quoted URI
// attribute of its attribute list by what fn makes of it. Quoted values may contain
// commas and "URI=" themselves, so the list is walked attribute by attribute;
// anything unexpected is copied as is.
func writeTag(out *bytes.Buffer, tag []byte, fn func(string) string) {
	colon := bytes.IndexByte(tag, ':')
	if colon < 0 || !bytes.Contains(tag, []byte(`URI="`)) {
		out.Write(tag)
		return
	}
	out.Write(tag[:colon+1])
	rest := tag[colon+1:]
	for len(rest) > 0 {
		eq := bytes.IndexByte(rest, '=')
		if eq < 0 {
			out.Write(rest)
			return
		}
		name := bytes.TrimSpace(rest[:eq])
		out.Write(rest[:eq+1])
		rest = rest[eq+1:]
		if len(rest) > 0 && rest[0] == '"' {
			end := bytes.IndexByte(rest[1:], '"')
			if end < 0 { // unterminated quoted string
				out.Write(rest)
				return
			}
			if string(name) == "URI" {
				out.WriteString(`"` + fn(string(rest[1:1+end])) + `"`)
			} else {
				out.Write(rest[:end+2])
			}
			rest = rest[end+2:]
		}
		comma := bytes.IndexByte(rest, ',')
		if comma < 0 {
			out.Write(rest)
			return
		}
		out.Write(rest[:comma+1])
		rest = rest[comma+1:]
	}
}

// addParam appends the query parameter param to a relative URI reference;
// absolute URIs (a scheme or a host) and unparsable ones are returned as is.
func addParam(uri, param string) string {
	if u, err := url.Parse(uri); uri == "" || err != nil || u.Scheme != "" || u.Host != "" {
		return uri
	}
	base, frag, hasFrag := strings.Cut(uri, "#")
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
		if strings.HasSuffix(base, "?") || strings.HasSuffix(base, "&") {
			sep = ""
		}
	}
	out := base + sep + param
	if hasFrag {
		out += "#" + frag
	}
	return out
}
