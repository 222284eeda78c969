// Package quota is the shared contract of tenant quotas on Redis: the
// limits of each tenant, its usage, and the set of its jobs that count
// against its concurrency limit. Ingest checks an upload against them
// (Admit) before it stores a byte; the catalog, which owns the facts,
// writes them (Publish) from its database every few seconds.
//
// A tenant's concurrent jobs are the members of one sorted set, each a
// source key: a running job's, scored +inf, and an upload's that is not
// a job yet, scored with the time its reservation lapses. Admit reserves
// the upload's source key atomically with the check, so that uploads
// racing each other cannot pass one limit together; the catalog turns a
// reservation into +inf once the job is recorded and removes it once the
// job ends. A reservation nobody resolves (an upload that never finished,
// an object that never landed) lapses by itself.
//
// Layout (one hash tag, so the scripts touch one slot):
//
//	{kiln:quota}:limits          hash   tenant → Limits (JSON)
//	{kiln:quota}:usage           hash   tenant → {stored_bytes, encoded_seconds, month}
//	{kiln:quota}:tenants         set    tenants whose active set may have members
//	{kiln:quota}:active:<tenant> zset   source key → lapse time (ms) or +inf
package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnvideo/kiln/internal/httpapi"
)

// The quotas, as named in errors, usage and metrics.
const (
	ConcurrentJobs = "concurrent_jobs"
	StoredBytes    = "stored_bytes"
	EncodedMinutes = "encoded_minutes"
)

// Error codes of a refusal (WriteRefusal).
const (
	// CodeConcurrencyLimit (429, with Retry-After): the tenant has as many
	// jobs running (or uploads becoming one) as its concurrent_jobs quota
	// allows; retry once one ends.
	CodeConcurrencyLimit = "concurrency_limit"
	// CodeQuotaExceeded (403): the upload would pass the tenant's
	// stored_bytes quota, or its encoded minutes of this month reached
	// encoded_minutes_per_month.
	CodeQuotaExceeded = "quota_exceeded"
)

// ConcurrencyRetryAfter is the Retry-After (seconds) of a 429
// concurrency_limit.
const ConcurrencyRetryAfter = 10

// WriteRefusal answers a request that quota v refused (v.Exceeded set);
// size is the upload's (-1 unknown, 0 none).
func WriteRefusal(w http.ResponseWriter, v Verdict, size int64) {
	switch v.Exceeded {
	case ConcurrentJobs:
		w.Header().Set("Retry-After", strconv.Itoa(ConcurrencyRetryAfter))
		httpapi.WriteError(w, http.StatusTooManyRequests, CodeConcurrencyLimit,
			fmt.Sprintf("%d of %d concurrent jobs are running: retry once one ends", v.Used, v.Limit))
	case StoredBytes:
		msg := fmt.Sprintf("stored_bytes quota: %d of %d bytes are stored", v.Used, v.Limit)
		if size > 0 {
			msg += fmt.Sprintf("; this upload of %d bytes would pass it", size)
		}
		httpapi.WriteError(w, http.StatusForbidden, CodeQuotaExceeded, msg)
	default:
		httpapi.WriteError(w, http.StatusForbidden, CodeQuotaExceeded,
			fmt.Sprintf("encoded_minutes_per_month quota: %d of %d minutes encoded this month", v.Used, v.Limit))
	}
}

// Names lists every quota.
var Names = []string{ConcurrentJobs, StoredBytes, EncodedMinutes}

// Limits are a tenant's quotas; 0 is no limit.
type Limits struct {
	// ConcurrentJobs bounds the jobs that are not ended (queued to
	// packaging) plus the uploads that are becoming one.
	ConcurrentJobs int64 `json:"concurrent_jobs"`
	// StoredBytes bounds the bytes of the tenant's sources that are kept
	// (not deleted).
	StoredBytes int64 `json:"stored_bytes"`
	// EncodedMinutesPerMonth bounds the minutes of video of the jobs that
	// became ready in the calendar month (UTC).
	EncodedMinutesPerMonth int64 `json:"encoded_minutes_per_month"`
}

// Valid reports whether no limit is negative.
func (l Limits) Valid() bool {
	return l.ConcurrentJobs >= 0 && l.StoredBytes >= 0 && l.EncodedMinutesPerMonth >= 0
}

// Usage is what a tenant uses of the quotas that are counted in the
// catalog's database.
type Usage struct {
	StoredBytes    int64   `json:"stored_bytes"`
	EncodedSeconds float64 `json:"encoded_seconds"`
}

// MonthStart is the first instant of t's calendar month, in UTC: the
// period of the encoded-minutes quota.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

func monthOf(t time.Time) string { return t.UTC().Format("2006-01") }

// Redis keys.
const (
	keyLimits  = "{kiln:quota}:limits"
	keyUsage   = "{kiln:quota}:usage"
	keyTenants = "{kiln:quota}:tenants"
	// ActivePrefix begins a tenant's active set.
	ActivePrefix = "{kiln:quota}:active:"
)

// Store is the quota state on Redis.
type Store struct {
	Redis redis.UniversalClient
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Verdict is Admit's answer.
type Verdict struct {
	// Exceeded is the quota that refuses the upload ("" when admitted).
	Exceeded string
	// Limit and Used are the refusing quota's figures (minutes for
	// EncodedMinutes).
	Limit, Used int64
	// RemainingBytes is how many bytes the admitted upload may store
	// (-1: no limit).
	RemainingBytes int64
}

// admit checks a tenant's limits against its usage and reserves member in
// its active set until ARGV[4] (ms), unless a quota refuses: stored bytes
// (used, or used plus the upload's size when known, over the limit; not
// checked for a size of 0, which stores nothing new),
// encoded minutes (this month's at the limit) or concurrent jobs (the
// members that have not lapsed, at the limit; a member already reserved is
// renewed, never refused).
//
// KEYS: limits, usage, active set, tenants. ARGV: tenant, member, now (ms),
// lapse (ms), size (-1 unknown), month.
var admit = redis.NewScript(`
local lim = redis.call('HGET', KEYS[1], ARGV[1])
local limits = {}
if lim then limits = cjson.decode(lim) end
local use = redis.call('HGET', KEYS[2], ARGV[1])
local usage = {}
if use then usage = cjson.decode(use) end
local size = tonumber(ARGV[5])
local stored = tonumber(usage.stored_bytes or 0)
local maxBytes = tonumber(limits.stored_bytes or 0)
if maxBytes > 0 and size ~= 0 and (stored >= maxBytes or (size > 0 and stored + size > maxBytes)) then
  return {'stored_bytes', maxBytes, stored, 0}
end
local encoded = 0
if usage.month == ARGV[6] then encoded = tonumber(usage.encoded_seconds or 0) end
local maxMinutes = tonumber(limits.encoded_minutes_per_month or 0)
if maxMinutes > 0 and encoded >= maxMinutes * 60 then
  return {'encoded_minutes', maxMinutes, math.floor(encoded / 60), 0}
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
local maxJobs = tonumber(limits.concurrent_jobs or 0)
local held = redis.call('ZSCORE', KEYS[3], ARGV[2])
if not held then
  local n = redis.call('ZCARD', KEYS[3])
  if maxJobs > 0 and n >= maxJobs then
    return {'concurrent_jobs', maxJobs, n, 0}
  end
end
if held ~= 'inf' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
end
redis.call('SADD', KEYS[4], ARGV[1])
local remaining = -1
if maxBytes > 0 then remaining = maxBytes - stored end
return {'', 0, 0, remaining}
`)

// Admit checks an upload of size bytes (-1 when unknown, 0 for a job that
// stores nothing new: a retry) by tenant against its quotas and, when they allow it, reserves its source key
// among the tenant's concurrent jobs for hold (Hold renews it; the
// catalog takes it over once the job is recorded).
func (s *Store) Admit(ctx context.Context, tenant, sourceKey string, size int64, hold time.Duration) (Verdict, error) {
	now := s.now()
	res, err := admit.Run(ctx, s.Redis, []string{keyLimits, keyUsage, ActivePrefix + tenant, keyTenants},
		tenant, sourceKey, now.UnixMilli(), now.Add(hold).UnixMilli(), size, monthOf(now)).Slice()
	if err != nil {
		return Verdict{}, fmt.Errorf("quota: admit: %w", err)
	}
	if len(res) != 4 {
		return Verdict{}, errors.New("quota: admit: unexpected reply")
	}
	v := Verdict{}
	v.Exceeded, _ = res[0].(string)
	v.Limit, _ = res[1].(int64)
	v.Used, _ = res[2].(int64)
	v.RemainingBytes, _ = res[3].(int64)
	return v, nil
}

// hold moves a reservation's lapse time to ARGV[2] (ms); a member the
// catalog took over (+inf) or that is gone is left alone.
var hold = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and s ~= 'inf' then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
return 0
`)

// Hold makes tenant's reservation of sourceKey lapse d from now: longer
// while its upload streams, shorter once its job is on its way.
func (s *Store) Hold(ctx context.Context, tenant, sourceKey string, d time.Duration) error {
	if err := hold.Run(ctx, s.Redis, []string{ActivePrefix + tenant}, sourceKey, s.now().Add(d).UnixMilli()).Err(); err != nil {
		return fmt.Errorf("quota: hold: %w", err)
	}
	return nil
}

// release drops a reservation that is still one (not a recorded job's).
var release = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and s ~= 'inf' then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
`)

// Release gives back tenant's reservation of sourceKey: its upload
// failed, or was aborted.
func (s *Store) Release(ctx context.Context, tenant, sourceKey string) error {
	if err := release.Run(ctx, s.Redis, []string{ActivePrefix + tenant}, sourceKey).Err(); err != nil {
		return fmt.Errorf("quota: release: %w", err)
	}
	return nil
}

// PutLimits records one tenant's limits (the catalog, when they change;
// Publish rewrites them all).
func (s *Store) PutLimits(ctx context.Context, tenant string, l Limits) error {
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("quota: put limits: %w", err)
	}
	if err := s.Redis.HSet(ctx, keyLimits, tenant, b).Err(); err != nil {
		return fmt.Errorf("quota: put limits: %w", err)
	}
	return nil
}

// Reservations returns every tenant's reservations that have not lapsed
// and are not recorded jobs yet: the source keys the catalog looks up
// before Publish.
func (s *Store) Reservations(ctx context.Context) (map[string][]string, error) {
	tenants, err := s.Redis.SMembers(ctx, keyTenants).Result()
	if err != nil {
		return nil, fmt.Errorf("quota: reservations: %w", err)
	}
	out := map[string][]string{}
	min := strconv.FormatInt(s.now().UnixMilli(), 10)
	for _, t := range tenants {
		keys, err := s.Redis.ZRangeByScore(ctx, ActivePrefix+t, &redis.ZRangeBy{Min: min, Max: "(+inf"}).Result()
		if err != nil {
			return nil, fmt.Errorf("quota: reservations: %w", err)
		}
		if len(keys) > 0 {
			out[t] = keys
		}
	}
	return out, nil
}

// Active returns how many of tenant's concurrent jobs count against its
// limit now (recorded jobs and reservations that have not lapsed).
func (s *Store) Active(ctx context.Context, tenant string) (int64, error) {
	n, err := s.Redis.ZCount(ctx, ActivePrefix+tenant, strconv.FormatInt(s.now().UnixMilli(), 10), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("quota: active: %w", err)
	}
	return n, nil
}

// Snapshot is the catalog's view of every tenant, which Publish writes.
type Snapshot struct {
	// Limits of every tenant that has any (others have none).
	Limits map[string]Limits
	// Usage of every tenant that has any.
	Usage map[string]Usage
	// Running are the source keys of every tenant's jobs that are not
	// ended: they count, whatever reservations say.
	Running map[string][]string
	// Ended are source keys of reservations (from Reservations) whose jobs
	// are recorded and ended: they count no more.
	Ended map[string][]string
}

// publish replaces limits and usage and brings every active set in line
// with the catalog: running jobs +inf, other +inf members (ended jobs)
// and ended reservations removed, other reservations kept.
//
// KEYS: limits, usage, tenants. ARGV: the snapshot's JSON (limits and
// usage already encoded: Lua's cjson would print large numbers in
// exponent form), active set prefix.
var publish = redis.NewScript(`
local d = cjson.decode(ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2])
for t, l in pairs(d.limits) do redis.call('HSET', KEYS[1], t, l) end
for t, u in pairs(d.usage) do redis.call('HSET', KEYS[2], t, u) end
local tenants = {}
for _, t in ipairs(redis.call('SMEMBERS', KEYS[3])) do tenants[t] = true end
for t, _ in pairs(d.running) do tenants[t] = true end
for t, _ in pairs(tenants) do
  local key = ARGV[2] .. t
  local running = {}
  for _, m in ipairs(d.running[t] or {}) do running[m] = true end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '+inf', '+inf')) do
    if not running[m] then redis.call('ZREM', key, m) end
  end
  for m, _ in pairs(running) do redis.call('ZADD', key, '+inf', m) end
  for _, m in ipairs(d.ended[t] or {}) do
    local s = redis.call('ZSCORE', key, m)
    if s and s ~= 'inf' then redis.call('ZREM', key, m) end
  end
  if redis.call('ZCARD', key) == 0 then
    redis.call('SREM', KEYS[3], t)
  else
    redis.call('SADD', KEYS[3], t)
  end
end
return 0
`)

// Publish writes the catalog's snapshot (see Snapshot), atomically.
func (s *Store) Publish(ctx context.Context, snap Snapshot) error {
	body := struct {
		Limits  map[string]string   `json:"limits"`
		Usage   map[string]string   `json:"usage"`
		Running map[string][]string `json:"running"`
		Ended   map[string][]string `json:"ended"`
	}{map[string]string{}, map[string]string{}, map[string][]string{}, map[string][]string{}}
	for t, l := range snap.Limits {
		b, err := json.Marshal(l)
		if err != nil {
			return fmt.Errorf("quota: publish: %w", err)
		}
		body.Limits[t] = string(b)
	}
	month := monthOf(s.now())
	for t, u := range snap.Usage {
		b, err := json.Marshal(usageRecord{StoredBytes: u.StoredBytes, EncodedSeconds: u.EncodedSeconds, Month: month})
		if err != nil {
			return fmt.Errorf("quota: publish: %w", err)
		}
		body.Usage[t] = string(b)
	}
	for t, keys := range snap.Running {
		if len(keys) > 0 {
			body.Running[t] = keys
		}
	}
	for t, keys := range snap.Ended {
		if len(keys) > 0 {
			body.Ended[t] = keys
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("quota: publish: %w", err)
	}
	if err := publish.Run(ctx, s.Redis, []string{keyLimits, keyUsage, keyTenants}, b, ActivePrefix).Err(); err != nil {
		return fmt.Errorf("quota: publish: %w", err)
	}
	return nil
}

// usageRecord is a tenant's field in the usage hash; Month is the month
// its encoded seconds are of (Admit counts none of another month's).
type usageRecord struct {
	StoredBytes    int64   `json:"stored_bytes"`
	EncodedSeconds float64 `json:"encoded_seconds"`
	Month          string  `json:"month"`
}
