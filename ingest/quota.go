package ingest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/quota"
)

// Quotas checks uploads against their tenant's quotas and reserves their
// place among its concurrent jobs (quota.Store).
type Quotas interface {
	Admit(ctx context.Context, tenant, sourceKey string, size int64, hold time.Duration) (quota.Verdict, error)
	Hold(ctx context.Context, tenant, sourceKey string, d time.Duration) error
	Release(ctx context.Context, tenant, sourceKey string) error
}

// QuotaRefusals counts the uploads refused by a quota
// (metrics.QuotaRefusals).
type QuotaRefusals interface {
	Inc(tenant, quota string)
}

// Reservation lifetimes: a streaming upload's is renewed every
// streamHold/2 while bytes arrive; one whose job is on its way (or whose
// direct upload may still land) keeps landHold past that for the catalog
// to take it over.
const (
	streamHold = 2 * time.Minute
	landHold   = 2 * time.Minute
)

// reservation is an admitted upload's place among its tenant's concurrent
// jobs (nil when quotas are off: its methods do nothing).
type reservation struct {
	s              *Service
	tenant, key    string
	remainingBytes int64 // -1: no limit
}

// admit checks an upload of source key of size bytes (-1 unknown) against
// its tenant's quotas, reserving its place for hold. When it refuses (or
// cannot tell) it answers the request itself and returns false.
func (s *Service) admit(w http.ResponseWriter, r *http.Request, key string, size int64, hold time.Duration) (*reservation, bool) {
	if s.cfg.Quotas == nil {
		return nil, true
	}
	ctx := r.Context()
	tenantID := httpapi.Tenant(ctx)
	v, err := s.cfg.Quotas.Admit(ctx, tenantID, key, size, hold)
	if err != nil {
		s.log.Error("quota check", zap.String("tenant_id", tenantID), zap.Error(err))
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the quota store is unavailable; retry")
		return nil, false
	}
	if v.Exceeded == "" {
		rv := s.reservationOf(tenantID, key)
		rv.remainingBytes = v.RemainingBytes
		return rv, true
	}
	if s.cfg.QuotaRefusals != nil {
		s.cfg.QuotaRefusals.Inc(tenantID, v.Exceeded)
	}
	s.log.Info("upload refused by quota", zap.String("tenant_id", tenantID), zap.String("quota", v.Exceeded),
		zap.Int64("limit", v.Limit), zap.Int64("used", v.Used), zap.Int64("bytes", size))
	quota.WriteRefusal(w, v, size)
	return nil, false
}

// reservationOf is the reservation of tenantID's upload of key, admitted
// earlier (nil when quotas are off).
func (s *Service) reservationOf(tenantID, key string) *reservation {
	if s.cfg.Quotas == nil {
		return nil
	}
	return &reservation{s: s, tenant: tenantID, key: key, remainingBytes: -1}
}

// keepWhileStreaming renews the reservation until stop is called.
func (rv *reservation) keepWhileStreaming(ctx context.Context) (stop func()) {
	if rv == nil {
		return func() {}
	}
	return renewEvery(ctx, streamHold/2, func(ctx context.Context) {
		if err := rv.s.cfg.Quotas.Hold(ctx, rv.tenant, rv.key, streamHold); err != nil && ctx.Err() == nil {
			rv.s.log.Warn("renew quota reservation", zap.String("key", rv.key), zap.Error(err))
		}
	})
}

// landed keeps the reservation d more for the catalog to take over.
func (rv *reservation) landed(ctx context.Context, d time.Duration) {
	if rv == nil {
		return
	}
	if err := rv.s.cfg.Quotas.Hold(context.WithoutCancel(ctx), rv.tenant, rv.key, d); err != nil {
		rv.s.log.Warn("hold quota reservation", zap.String("key", rv.key), zap.Error(err))
	}
}

// release gives the reservation back: the upload did not become a job.
func (rv *reservation) release(ctx context.Context) {
	if rv == nil {
		return
	}
	if err := rv.s.cfg.Quotas.Release(context.WithoutCancel(ctx), rv.tenant, rv.key); err != nil {
		rv.s.log.Warn("release quota reservation (it lapses by itself)", zap.String("key", rv.key), zap.Error(err))
	}
}

// errOverQuota ends an upload of unknown size that passed the bytes its
// tenant's stored_bytes quota had left.
var errOverQuota = errors.New("ingest: the upload passes the stored_bytes quota")

// limit bounds src to the bytes the reservation's quota leaves, when it is
// less than max.
func (rv *reservation) limit(src io.Reader, max int64) io.Reader {
	if rv == nil || rv.remainingBytes < 0 || rv.remainingBytes >= max {
		return src
	}
	return &quotaReader{r: src, left: rv.remainingBytes}
}

type quotaReader struct {
	r    io.Reader
	left int64
}

func (q *quotaReader) Read(p []byte) (int, error) {
	if q.left < 0 {
		return 0, errOverQuota
	}
	// Read one byte past the allowance to tell "exactly the rest" from
	// "more than the rest".
	if int64(len(p)) > q.left+1 {
		p = p[:q.left+1]
	}
	n, err := q.r.Read(p)
	q.left -= int64(n)
	if q.left < 0 {
		return n, errOverQuota
	}
	return n, err
}
