package catalog

import (
	"context"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/kilnvideo/kiln/internal/jobid"
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

func newAssetCache(now func() time.Time) *assetCache {
	return otter.Must(&otter.Options[string, *Asset]{
		MaximumSize:      assetCacheSize,
		ExpiryCalculator: otter.ExpiryWriting[string, *Asset](assetCacheTTL),
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
	s.assets.Invalidate(jobid.AssetOf(jobID))
	s.hub.notify(jobID)
}
