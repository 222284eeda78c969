package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/kilnvideo/kiln/internal/objstore"
)

// Media playlists as served: every segment and EXT-X-MAP URI absolute and
// straight at the object (DeliveryDirect: a presigned GET on the storage
// origin, or Config.CDNURL + the object key for a public asset), or left on
// the catalog (DeliveryProxy). Players then fetch segments without a
// redirect: Chromium's built-in HLS player follows no redirect to another
// origin, and ffmpeg cannot keep its connection when every segment
// redirects elsewhere.
//
// The playlists are rewritten line by line (rewriteURIs), not decoded and
// encoded again with an HLS library: only URIs change, so every tag —
// EXT-X-MAP, BYTERANGE, discontinuities, ENDLIST, EVENT playlists and tags
// kiln has never heard of — stays exactly as the packager wrote it.
//
// Presigning is an HMAC per URI, so a generated playlist is cached per
// asset, rendition, token (or none) and window in a bounded in-memory
// cache, for a window a fraction of the URLs' lifetime.

const (
	// playlistCacheWeight bounds the bytes of generated media playlists one
	// catalog keeps.
	playlistCacheWeight = 64 << 20
	// maxPresignLifetime is the longest lifetime S3 allows a presigned URL.
	maxPresignLifetime = 7 * 24 * time.Hour
	// windowDivisor: a playlist of presigned URLs is reused for
	// min(URL lifetime, Config.PresignTTL)/windowDivisor, so that whoever gets
	// it late in its window still has most of Config.PresignTTL beyond the
	// asset's duration to play it.
	windowDivisor = 4
)

// mediaKey names one generated media playlist.
type mediaKey struct {
	asset, rendition, playlistKey string
	// generation is the asset's ReadyAt, or its PlayableAt before READY: a
	// new attempt, and READY, make a new playlist.
	generation int64
	token      string // "" for a public asset
}

// mediaEntry is a generated media playlist.
type mediaEntry struct {
	body []byte
	vod  bool // it has EXT-X-ENDLIST
	// until is when the cache lets go of it; its responses are never
	// cacheable beyond it.
	until time.Time
	// expires is when the first URL inside stops working (zero: its URIs do
	// not expire).
	expires time.Time
}

// playlistCache holds generated media playlists, bounded in bytes, each for
// its own window.
type playlistCache = otter.Cache[mediaKey, *mediaEntry]

func newPlaylistCache(now func() time.Time) *playlistCache {
	return otter.Must(&otter.Options[mediaKey, *mediaEntry]{
		MaximumWeight: playlistCacheWeight,
		Weigher: func(k mediaKey, e *mediaEntry) uint32 {
			return uint32(min(len(e.body)+len(k.token)+len(k.playlistKey)+128, 1<<31))
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[mediaKey, *mediaEntry]) time.Duration {
			return max(e.Value.until.Sub(now()), time.Nanosecond)
		}),
		Clock:  clock{now},
		Logger: &otter.NoopLogger{},
		// Maintenance (evictions, expiry) runs inline on the request that
		// triggers it: no goroutine of the cache reads the clock behind
		// the Service's back.
		Executor: func(fn func()) { fn() },
	})
}

// clock is the Service's clock for the cache, without the background
// clean-up (expired entries go when read or pushed out).
type clock struct{ now func() time.Time }

func (c clock) NowNano() int64                    { return c.now().UnixNano() }
func (clock) Tick(time.Duration) <-chan time.Time { return nil }

// errTokenSpent: a signed asset's token has less than a second left, too
// little for a presigned URL (S3 counts whole seconds).
var errTokenSpent = errors.New("catalog: the playback token has less than a second left")

// mediaPlaylistFor returns the media playlist of rendition rend of asset a
// as g may play it, from the cache or generated.
func (s *Service) mediaPlaylistFor(ctx context.Context, a *Asset, rend Rendition, g grant) (*mediaEntry, error) {
	k := mediaKey{asset: a.ID, rendition: rend.Name, playlistKey: rend.PlaylistKey, generation: generationOf(a), token: g.token}
	e, err := s.playlists.Get(ctx, k, otter.LoaderFunc[mediaKey, *mediaEntry](func(ctx context.Context, _ mediaKey) (*mediaEntry, error) {
		return s.generateMedia(ctx, a, rend, g)
	}))
	if err != nil {
		return nil, err
	}
	if !s.now().Before(e.until) { // never serve past its window, whatever the cache did
		s.playlists.Invalidate(k)
		return s.generateMedia(ctx, a, rend, g)
	}
	return e, nil
}

// generationOf tells a's outputs apart from those of its other attempts
// and from its own before READY.
func generationOf(a *Asset) int64 {
	if !a.ReadyAt.IsZero() {
		return a.ReadyAt.UnixNano()
	}
	return -a.PlayableAt.UnixNano()
}

// generateMedia reads the rendition's media playlist from storage and
// rewrites its URIs for the configured delivery.
func (s *Service) generateMedia(ctx context.Context, a *Asset, rend Rendition, g grant) (*mediaEntry, error) {
	body, err := s.objects.Get(ctx, a.Bucket, rend.PlaylistKey, maxPlaylistSize)
	if err != nil {
		return nil, fmt.Errorf("catalog: read media playlist %s: %w", rend.PlaylistKey, err)
	}
	now := s.now()
	e := &mediaEntry{vod: bytes.Contains(body, []byte("#EXT-X-ENDLIST"))}
	maxAge := mediaMaxAge(a, e)
	dir := path.Dir(rend.PlaylistKey)
	param := ""
	if g.token != "" {
		param = tokenParam + "=" + url.QueryEscape(g.token)
	}
	// onCatalog keeps a URI on the catalog's segment route, as proxy
	// delivery does for every URI.
	onCatalog := func(uri string) string {
		if param == "" {
			return uri
		}
		return addParam(uri, param)
	}
	switch {
	case s.delivery == DeliveryProxy:
		e.body = rewriteURIs(body, onCatalog)
		e.until = now.Add(maxAge)
	case g.token == "" && s.cdn != "":
		e.body = rewriteURIs(body, func(uri string) string {
			if !segmentFile.MatchString(uri) {
				return onCatalog(uri)
			}
			return s.cdn + "/" + dir + "/" + uri
		})
		e.until = now.Add(maxAge)
	default:
		lifetime := s.presignLifetime(a)
		if g.token != "" {
			// The URLs expire no later than the token (S3 counts whole
			// seconds: round down).
			lifetime = min(lifetime, g.expires.Sub(now).Truncate(time.Second))
			if lifetime < time.Second {
				return nil, errTokenSpent
			}
		}
		var perr error
		e.body = rewriteURIs(body, func(uri string) string {
			if !segmentFile.MatchString(uri) {
				return onCatalog(uri)
			}
			opts := objstore.PresignOptions{ContentType: segmentContentType}
			if path.Ext(uri) == ".mp4" {
				opts.ContentType = mp4ContentType
			}
			u, err := s.objects.PresignGetWith(ctx, a.Bucket, dir+"/"+uri, lifetime, opts)
			if err != nil {
				perr = err
				return uri
			}
			return u.String()
		})
		if perr != nil {
			return nil, fmt.Errorf("catalog: presign media playlist %s: %w", rend.PlaylistKey, perr)
		}
		e.expires = now.Add(lifetime)
		window := min(lifetime, s.ttl) / windowDivisor
		if !e.vod {
			window = min(window, maxAge) // still being written: no longer than its short max-age
		}
		e.until = now.Add(window)
	}
	return e, nil
}

// presignLifetime is how long the presigned URLs in a's media playlists
// live: Config.PresignTTL beyond the asset's duration, since a player
// fetches a VOD playlist once and its segments while it plays.
func (s *Service) presignLifetime(a *Asset) time.Duration {
	d := time.Duration(a.DurationSeconds * float64(time.Second))
	return min(s.ttl+d.Round(time.Second), maxPresignLifetime)
}

// mediaMaxAge is how long a media playlist may be cached: long once it
// has EXT-X-ENDLIST; while it grows (no EXT-X-ENDLIST), short, and shortest
// for an asset still being encoded, whose playlist gains a segment every
// few seconds.
func mediaMaxAge(a *Asset, e *mediaEntry) time.Duration {
	switch {
	case e.vod:
		return vodPlaylistMaxAge
	case !a.Ready():
		return livePlaylistMaxAge
	default:
		return playlistMaxAge
	}
}

// mediaCacheControl is the Cache-Control of a generated media playlist:
// its usual max-age, never beyond the end of its window (so never beyond
// the URLs inside), nor the token's expiry.
func (s *Service) mediaCacheControl(a *Asset, g grant, e *mediaEntry) string {
	maxAge := mediaMaxAge(a, e)
	now := s.now()
	maxAge = min(maxAge, e.until.Sub(now))
	if !e.expires.IsZero() {
		maxAge = min(maxAge, e.expires.Sub(now))
	}
	return s.cacheControl(g, maxAge, false)
}

// CheckCDNURL accepts an empty CDN URL (none) or an absolute http(s) URL
// without query or fragment.
func CheckCDNURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q must be an absolute http(s) URL without query, fragment or credentials", raw)
	}
	return nil
}
