package catalog

import (
	"context"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/playlist"
)

// Playback reads an asset on every request — a master playlist, each media
// playlist reload, every segment redirect — and a player makes many. The
// catalog keeps the assets playback reads in memory (assetCache), each for
// at most assetCacheTTL, and forgets one as soon as its job changes: on this
// replica (HandleEvent, a delete) or another (the change notices of
// Config.Changes, JobChanged). The TTL bounds what a lost notice can leave
// stale. The API's own reads (GET /v1/assets/{id}) always go to the store.
const (
	assetCacheTTL  = time.Second
	assetCacheSize = 10_000
)

type assetCache = otter.Cache[string, *Asset]

// newPerAssetCache is a cache of one V per asset id, each kept at most
// assetCacheTTL by the clock now (the asset cache and the master cache).
func newPerAssetCache[V any](now func() time.Time) *otter.Cache[string, V] {
	return otter.Must(&otter.Options[string, V]{
		MaximumSize:      assetCacheSize,
		ExpiryCalculator: otter.ExpiryWriting[string, V](assetCacheTTL),
		Clock:            clock{now},
		Logger:           &otter.NoopLogger{},
		Executor:         func(fn func()) { fn() },
	})
}

// cachedAsset is the asset id, from the cache or the store (concurrent
// misses of one id load it once). The asset is shared: callers must not
// change it.
func (s *Service) cachedAsset(ctx context.Context, id string) (*Asset, error) {
	return s.assets.Get(ctx, id, otter.LoaderFunc[string, *Asset](func(ctx context.Context, id string) (*Asset, error) {
		return s.store.Asset(ctx, id)
	}))
}

// changed is what this replica does when job jobID changed, here or on
// another replica: its event streams wake up and playback forgets its asset.
func (s *Service) changed(jobID string) {
	id := jobid.AssetOf(jobID)
	s.assets.Invalidate(id)
	s.masters.Invalidate(id)
	s.hub.notify(jobID)
}

// renderedMaster is the master playlist of one cached asset, rendered and
// gzipped once: a player, and every viewer behind a CDN miss, asks for the
// same bytes. It belongs to that *Asset: when the cache loads the asset
// again (its job changed, or its TTL ran out) the pointer differs and the
// master is rendered anew, so it is never staler than the asset itself.
// Only token-less masters are kept (a signed asset's carries the request's
// token).
type renderedMaster struct {
	asset         *Asset
	body, gzipped []byte
}

type masterCache = otter.Cache[string, *renderedMaster]

// renderedMasterOf is the token-less master playlist of a, which must come
// from cachedAsset.
func (s *Service) renderedMasterOf(a *Asset) *renderedMaster {
	if m, ok := s.masters.GetIfPresent(a.ID); ok && m.asset == a {
		return m
	}
	body := playlist.Master(a.variants())
	m := &renderedMaster{asset: a, body: body, gzipped: s.gzip(body)}
	s.masters.Set(a.ID, m)
	return m
}
