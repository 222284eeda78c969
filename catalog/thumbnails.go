package catalog

import (
	"bytes"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/objstore"
)

const (
	thumbnailsDir  = "thumbnails" // GET /v1/play/{id}/thumbnails/{file}
	vttContentType = "text/vtt; charset=utf-8"
	maxStoryboard  = 1 << 20 // largest storyboard.vtt read from storage
)

// thumbnailFile is the only shape of file the thumbnails route serves.
var thumbnailFile = regexp.MustCompile(`^[A-Za-z0-9_-]+\.(jpg|vtt)$`)

// thumbnailKey maps a file of the thumbnails route to its object key: the
// file must be one the asset recorded (poster, images, sprite, storyboard),
// all in the folder of the poster.
func thumbnailKey(a *Asset, file string) (string, bool) {
	th := a.Thumbnails
	if th == nil || th.GetPosterKey() == "" || !thumbnailFile.MatchString(file) {
		return "", false
	}
	key := path.Dir(th.GetPosterKey()) + "/" + file
	for _, k := range append([]string{th.GetPosterKey(), th.GetSpriteKey(), th.GetStoryboardKey()}, th.GetKeys()...) {
		if k == key {
			return key, true
		}
	}
	return "", false
}

// thumbnail answers GET /v1/play/{id}/thumbnails/{file}: JPEGs are
// delivered like posters (redirect or proxy); the storyboard is served by
// the catalog, so that its relative sprite.jpg URIs resolve against the
// catalog (not a presigned URL) and, for a signed asset, carry the token.
func (s *Service) thumbnail(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if !thumbnailFile.MatchString(file) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such file")
		return
	}
	a, g, ok := s.playable(w, r)
	if !ok {
		return
	}
	key, ok := thumbnailKey(a, file)
	if !ok {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such file")
		return
	}
	if path.Ext(file) == ".jpg" {
		s.deliver(w, r, a, g, key, objstore.PresignOptions{ContentType: posterContentType})
		return
	}
	body, err := s.objects.Get(r.Context(), a.Bucket, key, maxStoryboard)
	if err != nil {
		s.log.Error("read storyboard", zap.String("asset_id", a.ID), zap.String("key", key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "storyboard unavailable")
		return
	}
	if g.token != "" {
		body = vttWithToken(body, g.token)
	}
	h := w.Header()
	h.Set("Content-Type", vttContentType)
	h.Set("Cache-Control", s.cacheControl(g, vodPlaylistMaxAge, false))
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// vttCueImage is a storyboard cue payload: a relative image URI with an
// optional media fragment ("sprite.jpg#xywh=0,0,160,90").
var vttCueImage = regexp.MustCompile(`^[A-Za-z0-9_.-]+\.jpg(#[A-Za-z0-9=,.]*)?$`)

// vttWithToken adds the playback token to every image URI of a storyboard,
// before its fragment: sprite.jpg?token=…#xywh=…. Other lines are copied as
// they are.
func vttWithToken(vtt []byte, token string) []byte {
	param := tokenParam + "=" + url.QueryEscape(token)
	var out bytes.Buffer
	for line := range bytes.Lines(vtt) {
		content, eol := splitEOL(line)
		if vttCueImage.Match(content) {
			out.WriteString(addParam(string(content), param))
			out.Write(eol)
			continue
		}
		out.Write(line)
	}
	return out.Bytes()
}

// thumbnailURLs are the URLs of a ready asset's thumbnails, carrying token
// when not empty; nil when it has none.
func (s *Service) thumbnailURLs(a *Asset, token string) *thumbnailsJSON {
	th := a.Thumbnails
	if th == nil || th.GetPosterKey() == "" {
		return nil
	}
	base, q := s.public+"/v1/play/"+a.ID+"/thumbnails/", ""
	if token != "" {
		q = "?token=" + url.QueryEscape(token)
	}
	link := func(key string) string {
		if key == "" {
			return ""
		}
		if _, ok := thumbnailKey(a, path.Base(key)); !ok {
			return "" // not servable (outside the poster's folder)
		}
		return base + path.Base(key) + q
	}
	out := &thumbnailsJSON{
		Poster: link(th.GetPosterKey()), StoryboardVTT: link(th.GetStoryboardKey()), Sprite: link(th.GetSpriteKey()),
		IntervalSeconds: th.GetIntervalSeconds(), Width: th.GetWidth(), Height: th.GetHeight(), Images: []string{},
	}
	for _, k := range th.GetKeys() {
		if u := link(k); u != "" {
			out.Images = append(out.Images, u)
		}
	}
	return out
}
