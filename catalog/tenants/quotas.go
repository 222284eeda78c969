package tenants

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/tenant"
)

// CodeInvalidQuota (400): a quota that is not a whole number of at least
// 0 (0 is no limit).
const CodeInvalidQuota = "invalid_quota"

// UsageSource counts what tenants use (catalog.Store).
type UsageSource interface {
	TenantUsage(ctx context.Context, tenant string, since time.Time) (map[string]quota.Usage, error)
	RunningSources(ctx context.Context) (map[string][]string, error)
	EndedSources(ctx context.Context, keys []string) ([]string, error)
}

// QuotaStore is where ingest finds limits and usage (quota.Store).
type QuotaStore interface {
	PutLimits(ctx context.Context, tenant string, l quota.Limits) error
	Reservations(ctx context.Context) (map[string][]string, error)
	Active(ctx context.Context, tenant string) (int64, error)
	Publish(ctx context.Context, snap quota.Snapshot) error
}

// DefaultUsageInterval is how often RunUsage publishes limits and usage:
// an ended job frees its slot, and a ready one counts its minutes, within
// it.
const DefaultUsageInterval = 2 * time.Second

// quotaState is the quota side of a Service: its sources and the last
// figures RunUsage published, which /metrics reports.
type quotaState struct {
	usage    UsageSource
	quotas   QuotaStore
	interval time.Duration

	mu   sync.Mutex
	last map[string]tenantFigures // by tenant
	up   bool

	usageDesc, limitDesc, upDesc *prometheus.Desc
}

// tenantFigures are one tenant's usage and limits, by quota name.
type tenantFigures struct {
	used   map[string]float64
	limits quota.Limits
}

func newQuotaState(cfg Config) *quotaState {
	q := &quotaState{usage: cfg.Usage, quotas: cfg.Quotas, interval: cfg.UsageInterval,
		usageDesc: prometheus.NewDesc("kiln_tenant_usage",
			"What a tenant uses of each quota: concurrent_jobs (running jobs and uploads becoming one), stored_bytes (its sources kept), encoded_minutes (this month, UTC).",
			[]string{"tenant", "quota"}, nil),
		limitDesc: prometheus.NewDesc("kiln_tenant_quota_limit", "A tenant's limit of each quota (0: no limit).",
			[]string{"tenant", "quota"}, nil),
		upDesc: prometheus.NewDesc("kiln_tenant_usage_up", "Whether the last count of the tenants' usage succeeded.", nil, nil),
	}
	if q.interval <= 0 {
		q.interval = DefaultUsageInterval
	}
	return q
}

func (s *Service) quotasOn() bool { return s.usage != nil && s.quotas != nil }

func writeInvalidQuota(w http.ResponseWriter) {
	httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidQuota,
		"quotas (concurrent_jobs, stored_bytes, encoded_minutes_per_month) must be whole numbers of at least 0 (0: no limit)")
}

// putLimits tells ingest a tenant's new limits at once (RunUsage would
// within its interval).
func (s *Service) putLimits(ctx context.Context, tenantID string, l quota.Limits) {
	if s.quotas == nil {
		return
	}
	if err := s.quotas.PutLimits(ctx, tenantID, l); err != nil {
		s.log.Warn("publish a tenant's limits (the next usage pass repeats it)", zap.String("tenant_id", tenantID), zap.Error(err))
	}
}

// setQuotas answers PUT /v1/tenants/{id}/quotas: the body replaces every
// limit (an absent one is 0, no limit).
func (s *Service) setQuotas(w http.ResponseWriter, r *http.Request) {
	var l quota.Limits
	if !httpapi.DecodeJSON(w, r, &l, maxBody, true) {
		return
	}
	if !l.Valid() {
		writeInvalidQuota(w)
		return
	}
	t, ok := s.liveTenant(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	if _, err := s.db.ExecContext(ctx, `UPDATE tenants SET quota_concurrent_jobs = ?, quota_stored_bytes = ?,
		quota_encoded_minutes = ? WHERE id = ?`, l.ConcurrentJobs, l.StoredBytes, l.EncodedMinutesPerMonth, t.ID); err != nil {
		s.internal(w, r, fmt.Errorf("set quotas of %s: %w", t.ID, err))
		return
	}
	t.Quotas = l
	s.putLimits(ctx, t.ID, l)
	s.log.Info("tenant quotas set", zap.String("tenant_id", t.ID), zap.Int64("concurrent_jobs", l.ConcurrentJobs),
		zap.Int64("stored_bytes", l.StoredBytes), zap.Int64("encoded_minutes_per_month", l.EncodedMinutesPerMonth),
		zap.String("key", httpapi.KeyName(ctx)))
	httpapi.WriteJSON(w, http.StatusOK, t)
}

// usageJSON is the body of GET /v1/usage: each quota's use and limit
// (null: none) in the period of the monthly one.
type usageJSON struct {
	TenantID       string       `json:"tenant_id"`
	PeriodStart    time.Time    `json:"period_start"`
	PeriodEnd      time.Time    `json:"period_end"`
	ConcurrentJobs quotaFigures `json:"concurrent_jobs"`
	StoredBytes    quotaFigures `json:"stored_bytes"`
	EncodedMinutes quotaFigures `json:"encoded_minutes"`
}

type quotaFigures struct {
	Used  float64 `json:"used"`
	Limit *int64  `json:"limit"`
}

func limitOf(n int64) *int64 {
	if n <= 0 {
		return nil
	}
	return &n
}

func (s *Service) ownUsage(w http.ResponseWriter, r *http.Request) {
	s.writeUsage(w, r, httpapi.Tenant(r.Context()))
}

func (s *Service) tenantUsage(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.pathTenant(w, r); ok {
		s.writeUsage(w, r, t.ID)
	}
}

// writeUsage answers with tenantID's usage: stored bytes and minutes
// counted in the database now, concurrent jobs as ingest counts them.
func (s *Service) writeUsage(w http.ResponseWriter, r *http.Request, tenantID string) {
	if !s.quotasOn() {
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "quotas are not configured on this server")
		return
	}
	ctx := r.Context()
	var l quota.Limits
	err := s.db.QueryRowContext(ctx, `SELECT quota_concurrent_jobs, quota_stored_bytes, quota_encoded_minutes FROM tenants WHERE id = ?`,
		tenantID).Scan(&l.ConcurrentJobs, &l.StoredBytes, &l.EncodedMinutesPerMonth)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		s.internal(w, r, fmt.Errorf("usage of %s: limits: %w", tenantID, err))
		return
	}
	start := quota.MonthStart(s.now())
	used, err := s.usage.TenantUsage(ctx, tenantID, start)
	if err != nil {
		s.internal(w, r, fmt.Errorf("usage of %s: %w", tenantID, err))
		return
	}
	active, err := s.quotas.Active(ctx, tenantID)
	if err != nil {
		s.log.Error("usage: concurrent jobs", zap.String("tenant_id", tenantID), zap.Error(err))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the quota store is unavailable; retry")
		return
	}
	u := used[tenantID]
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, usageJSON{
		TenantID: tenantID, PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0),
		ConcurrentJobs: quotaFigures{Used: float64(active), Limit: limitOf(l.ConcurrentJobs)},
		StoredBytes:    quotaFigures{Used: float64(u.StoredBytes), Limit: limitOf(l.StoredBytes)},
		EncodedMinutes: quotaFigures{Used: minutes(u.EncodedSeconds), Limit: limitOf(l.EncodedMinutesPerMonth)},
	})
}

// minutes rounds seconds to minutes with two decimals.
func minutes(sec float64) float64 { return math.Round(sec/60*100) / 100 }

// RunUsage publishes every tenant's limits and usage (PublishUsage) every
// UsageInterval, until ctx ends; the first pass is the caller's, made
// before the catalog serves. Every catalog replica may run it: each pass
// writes the whole truth of the database.
func (s *Service) RunUsage(ctx context.Context) error {
	if !s.quotasOn() {
		return nil
	}
	return s.every(ctx, s.interval, "publish usage", s.PublishUsage)
}

// PublishUsage counts every tenant's usage in the database, resolves
// ingest's reservations against the recorded jobs, and publishes the
// snapshot (quota.Store.Publish) and the figures /metrics reports.
func (s *Service) PublishUsage(ctx context.Context) (err error) {
	defer func() {
		s.mu.Lock()
		s.up = err == nil
		s.mu.Unlock()
	}()
	limits, err := s.allLimits(ctx)
	if err != nil {
		return err
	}
	// Reservations first: a job recorded after this read is resolved by
	// the next pass, never dropped by this one.
	reserved, err := s.quotas.Reservations(ctx)
	if err != nil {
		return err
	}
	usage, err := s.usage.TenantUsage(ctx, "", quota.MonthStart(s.now()))
	if err != nil {
		return err
	}
	running, err := s.usage.RunningSources(ctx)
	if err != nil {
		return err
	}
	owner := map[string]string{}
	var keys []string
	for t, ks := range reserved {
		for _, k := range ks {
			owner[k] = t
			keys = append(keys, k)
		}
	}
	ended, err := s.usage.EndedSources(ctx, keys)
	if err != nil {
		return err
	}
	snap := quota.Snapshot{Limits: limits, Usage: usage, Running: running, Ended: map[string][]string{}}
	for _, k := range ended {
		snap.Ended[owner[k]] = append(snap.Ended[owner[k]], k)
	}
	if err := s.quotas.Publish(ctx, snap); err != nil {
		return err
	}
	s.remember(snap, reserved, ended)
	return nil
}

// allLimits returns the limits of every tenant (not deleted) that has one.
func (s *Service) allLimits(ctx context.Context) (map[string]quota.Limits, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, quota_concurrent_jobs, quota_stored_bytes, quota_encoded_minutes FROM tenants
		WHERE deleted_at IS NULL AND (quota_concurrent_jobs > 0 OR quota_stored_bytes > 0 OR quota_encoded_minutes > 0)`)
	if err != nil {
		return nil, fmt.Errorf("tenants: limits: %w", err)
	}
	defer rows.Close()
	out := map[string]quota.Limits{}
	for rows.Next() {
		var id string
		var l quota.Limits
		if err := rows.Scan(&id, &l.ConcurrentJobs, &l.StoredBytes, &l.EncodedMinutesPerMonth); err != nil {
			return nil, fmt.Errorf("tenants: limits: %w", err)
		}
		out[id] = l
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tenants: limits: %w", err)
	}
	return out, nil
}

// remember keeps a pass's figures for /metrics: concurrent jobs are the
// running ones and the reservations no job resolved yet.
func (s *Service) remember(snap quota.Snapshot, reserved map[string][]string, ended []string) {
	gone := map[string]bool{}
	for _, k := range ended {
		gone[k] = true
	}
	running := map[string]bool{}
	figs := map[string]tenantFigures{}
	fig := func(t string) tenantFigures {
		f, ok := figs[t]
		if !ok {
			f = tenantFigures{used: map[string]float64{}, limits: snap.Limits[t]}
			figs[t] = f
		}
		return f
	}
	for t, ks := range snap.Running {
		for _, k := range ks {
			running[k] = true
		}
		fig(t).used[quota.ConcurrentJobs] += float64(len(ks))
	}
	for t, ks := range reserved {
		for _, k := range ks {
			if !gone[k] && !running[k] {
				fig(t).used[quota.ConcurrentJobs]++
			}
		}
	}
	for t, u := range snap.Usage {
		f := fig(t)
		f.used[quota.StoredBytes] = float64(u.StoredBytes)
		f.used[quota.EncodedMinutes] = minutes(u.EncodedSeconds)
	}
	for t := range snap.Limits {
		fig(t)
	}
	fig(tenant.Default) // always there, using nothing or something
	s.mu.Lock()
	s.last = figs
	s.mu.Unlock()
}

// Describe and Collect make the Service a prometheus.Collector of the
// last usage pass: kiln_tenant_usage and kiln_tenant_quota_limit per
// tenant (the default one, and every other that uses something or has a
// limit) and quota, and kiln_tenant_usage_up.
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.usageDesc
	ch <- s.limitDesc
	ch <- s.upDesc
}

func (s *Service) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	up := 0.0
	if s.up {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(s.upDesc, prometheus.GaugeValue, up)
	for t, f := range s.last {
		for _, q := range quota.Names {
			ch <- prometheus.MustNewConstMetric(s.usageDesc, prometheus.GaugeValue, f.used[q], t, q)
		}
		for q, n := range map[string]int64{quota.ConcurrentJobs: f.limits.ConcurrentJobs, quota.StoredBytes: f.limits.StoredBytes,
			quota.EncodedMinutes: f.limits.EncodedMinutesPerMonth} {
			ch <- prometheus.MustNewConstMetric(s.limitDesc, prometheus.GaugeValue, float64(n), t, q)
		}
	}
}
