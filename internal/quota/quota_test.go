package quota_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// redisDB is this package's database of the test stack's Redis (see
// testenv/redis.go).
const redisDB = 3

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newStore(t *testing.T) (*quota.Store, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}
	return &quota.Store{Redis: testenv.RedisClient(t, testenv.RedisDB(t, redisDB)), Now: c.now}, c
}

func admit(t *testing.T, s *quota.Store, tenant, key string, size int64) quota.Verdict {
	t.Helper()
	v, err := s.Admit(t.Context(), tenant, key, size, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestConcurrentUploadsRace: 20 uploads of one tenant racing for a limit
// of 3 concurrent jobs: exactly 3 are admitted; the same upload asking
// again is renewed, never refused; another tenant is not affected.
func TestConcurrentUploadsRace(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	if err := s.PutLimits(ctx, "ten_a", quota.Limits{ConcurrentJobs: 3}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	verdicts := make([]quota.Verdict, 20)
	errs := make([]error, 20)
	for i := range verdicts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			verdicts[i], errs[i] = s.Admit(ctx, "ten_a", fmt.Sprintf("sources/k%d", i), 100, time.Minute)
		}()
	}
	wg.Wait()
	admitted := []int{}
	for i, v := range verdicts {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		switch v.Exceeded {
		case "":
			admitted = append(admitted, i)
		case quota.ConcurrentJobs:
			if v.Limit != 3 || v.Used != 3 {
				t.Errorf("refusal %+v, want limit 3 used 3", v)
			}
		default:
			t.Errorf("upload %d refused by %q", i, v.Exceeded)
		}
	}
	if len(admitted) != 3 {
		t.Fatalf("%d uploads admitted under a limit of 3: %v", len(admitted), admitted)
	}
	if v := admit(t, s, "ten_a", fmt.Sprintf("sources/k%d", admitted[0]), 100); v.Exceeded != "" {
		t.Errorf("a reserved upload asking again is refused: %+v", v)
	}
	if v := admit(t, s, "ten_b", "sources/b", 100); v.Exceeded != "" {
		t.Errorf("another tenant refused: %+v", v)
	}
	if n, err := s.Active(ctx, "ten_a"); err != nil || n != 3 {
		t.Errorf("Active = %d, %v; want 3", n, err)
	}
}

// TestReservationsLapseAndRelease: a reservation counts until it lapses
// or is released; Hold extends it; once the catalog took it over (+inf),
// neither Hold nor Release touches it.
func TestReservationsLapseAndRelease(t *testing.T) {
	s, c := newStore(t)
	ctx := t.Context()
	if err := s.PutLimits(ctx, "ten_a", quota.Limits{ConcurrentJobs: 1}); err != nil {
		t.Fatal(err)
	}
	admit(t, s, "ten_a", "sources/1", -1)
	if v := admit(t, s, "ten_a", "sources/2", -1); v.Exceeded != quota.ConcurrentJobs {
		t.Fatalf("second upload under a limit of 1: %+v", v)
	}
	if err := s.Hold(ctx, "ten_a", "sources/1", 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	c.add(2 * time.Minute) // past Admit's minute, within Hold's five
	if v := admit(t, s, "ten_a", "sources/2", -1); v.Exceeded != quota.ConcurrentJobs {
		t.Fatalf("a held reservation lapsed at its first deadline: %+v", v)
	}
	c.add(4 * time.Minute)
	if v := admit(t, s, "ten_a", "sources/2", -1); v.Exceeded != "" {
		t.Fatalf("a lapsed reservation still counts: %+v", v)
	}
	if err := s.Release(ctx, "ten_a", "sources/2"); err != nil {
		t.Fatal(err)
	}
	if v := admit(t, s, "ten_a", "sources/3", -1); v.Exceeded != "" {
		t.Fatalf("a released reservation still counts: %+v", v)
	}
	// The catalog records sources/3's job: it counts however long it runs.
	if err := s.Publish(ctx, quota.Snapshot{Limits: map[string]quota.Limits{"ten_a": {ConcurrentJobs: 1}},
		Running: map[string][]string{"ten_a": {"sources/3"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "ten_a", "sources/3"); err != nil {
		t.Fatal(err)
	}
	c.add(time.Hour)
	if v := admit(t, s, "ten_a", "sources/4", -1); v.Exceeded != quota.ConcurrentJobs {
		t.Fatalf("a running job stopped counting (released or lapsed): %+v", v)
	}
}

// TestPublishResolves: Publish turns the reservations of recorded jobs
// into running jobs, drops ended ones (reserved or running), keeps the
// reservations it knows nothing of, and rebuilds everything after Redis
// lost it.
func TestPublishResolves(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	for _, k := range []string{"sources/run", "sources/ended", "sources/pending"} {
		admit(t, s, "ten_a", k, -1)
	}
	res, err := s.Reservations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res); got != "map[ten_a:[sources/ended sources/pending sources/run]]" {
		t.Fatalf("Reservations = %s", got)
	}
	snap := quota.Snapshot{
		Running: map[string][]string{"ten_a": {"sources/run", "sources/old"}, "ten_b": {"sources/b"}},
		Ended:   map[string][]string{"ten_a": {"sources/ended"}},
	}
	if err := s.Publish(ctx, snap); err != nil {
		t.Fatal(err)
	}
	active := func(tenant string) int64 {
		n, err := s.Active(ctx, tenant)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// run, old (running) and pending (reserved); ended is gone.
	if n := active("ten_a"); n != 3 {
		t.Errorf("ten_a active = %d, want 3", n)
	}
	if n := active("ten_b"); n != 1 {
		t.Errorf("ten_b active = %d, want 1", n)
	}
	if res, _ := s.Reservations(ctx); fmt.Sprint(res) != "map[ten_a:[sources/pending]]" {
		t.Errorf("Reservations after Publish = %v", res)
	}
	// sources/run ends; ten_b's job too.
	if err := s.Publish(ctx, quota.Snapshot{Running: map[string][]string{"ten_a": {"sources/old"}}}); err != nil {
		t.Fatal(err)
	}
	if n := active("ten_a"); n != 2 {
		t.Errorf("ten_a active after its job ended = %d, want 2", n)
	}
	if n := active("ten_b"); n != 0 {
		t.Errorf("ten_b active after its job ended = %d, want 0", n)
	}
	// Redis loses everything: the next Publish brings back what counts.
	if err := s.Redis.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(ctx, quota.Snapshot{Limits: map[string]quota.Limits{"ten_a": {ConcurrentJobs: 1}},
		Running: map[string][]string{"ten_a": {"sources/old"}}}); err != nil {
		t.Fatal(err)
	}
	if v := admit(t, s, "ten_a", "sources/new", -1); v.Exceeded != quota.ConcurrentJobs {
		t.Errorf("after Redis lost its data, a running job does not count: %+v", v)
	}
}

// TestStoredBytesAndMinutes: stored bytes refuse an upload whose size
// would pass the limit (or any upload once the limit is reached, when
// its size is unknown; a retry, which stores nothing, passes) and tell
// the room left; encoded minutes refuse
// once this month's reach the limit, and count nothing of last month's.
func TestStoredBytesAndMinutes(t *testing.T) {
	s, c := newStore(t)
	ctx := t.Context()
	limits := map[string]quota.Limits{"ten_a": {StoredBytes: 1_000_000_000_000, EncodedMinutesPerMonth: 10}}
	pub := func(stored int64, seconds float64) {
		t.Helper()
		if err := s.Publish(ctx, quota.Snapshot{Limits: limits,
			Usage: map[string]quota.Usage{"ten_a": {StoredBytes: stored, EncodedSeconds: seconds}}}); err != nil {
			t.Fatal(err)
		}
	}
	pub(999_999_999_000, 0)
	if v := admit(t, s, "ten_a", "sources/fits", 1000); v.Exceeded != "" || v.RemainingBytes != 1000 {
		t.Errorf("an upload that fits exactly: %+v", v)
	}
	if v := admit(t, s, "ten_a", "sources/big", 1001); v.Exceeded != quota.StoredBytes || v.Limit != 1_000_000_000_000 || v.Used != 999_999_999_000 {
		t.Errorf("an upload one byte over: %+v", v)
	}
	if v := admit(t, s, "ten_a", "sources/unknown", -1); v.Exceeded != "" {
		t.Errorf("an upload of unknown size with room left: %+v", v)
	}
	pub(1_000_000_000_000, 0)
	if v := admit(t, s, "ten_a", "sources/unknown2", -1); v.Exceeded != quota.StoredBytes {
		t.Errorf("an upload of unknown size with no room left: %+v", v)
	}
	if v := admit(t, s, "ten_a", "sources/fits", 0); v.Exceeded != "" {
		t.Errorf("a retry (no new bytes) with no room left: %+v", v)
	}
	pub(0, 599.5)
	if v := admit(t, s, "ten_a", "sources/m1", 1); v.Exceeded != "" {
		t.Errorf("9.99 of 10 minutes used: %+v", v)
	}
	pub(0, 600)
	if v := admit(t, s, "ten_a", "sources/m2", 1); v.Exceeded != quota.EncodedMinutes || v.Limit != 10 || v.Used != 10 {
		t.Errorf("10 of 10 minutes used: %+v", v)
	}
	c.add(30 * 24 * time.Hour) // January: December's minutes count no more
	if v := admit(t, s, "ten_a", "sources/m3", 1); v.Exceeded != "" {
		t.Errorf("last month's minutes refuse this month's upload: %+v", v)
	}
	if got := quota.MonthStart(c.now()); !got.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("MonthStart = %v", got)
	}
}
