package webhooks

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultRetrySchedule is the delay before each retry: a failed first
// attempt is retried after 5 s, then 5 m, … ; after the last delay's attempt
// fails the delivery is given up (10 attempts over about 3 days).
var DefaultRetrySchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour,
	10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour,
}

// MaxRetryAfter caps a receiver's Retry-After.
const MaxRetryAfter = 24 * time.Hour

// jitterFraction: every scheduled delay is drawn from ±20 % around it.
const jitterFraction = 0.2

// ParseSchedule parses a comma-separated list of Go durations
// ("5s,5m,30m"); empty means DefaultRetrySchedule.
func ParseSchedule(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return append([]time.Duration(nil), DefaultRetrySchedule...), nil
	}
	var out []time.Duration
	for _, part := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("webhooks: retry schedule %q: %w", s, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("webhooks: retry schedule %q: delays must be positive", s)
		}
		out = append(out, d)
	}
	return out, nil
}

// retryDelay is the jittered delay after failed attempt number attempt
// (1-based), and false when the schedule is exhausted.
func retryDelay(schedule []time.Duration, attempt int, rnd func() float64) (time.Duration, bool) {
	if attempt < 1 || attempt > len(schedule) {
		return 0, false
	}
	return jitter(schedule[attempt-1], rnd), true
}

// jitter draws uniformly from [d·0.8, d·1.2].
func jitter(d time.Duration, rnd func() float64) time.Duration {
	if rnd == nil {
		rnd = rand.Float64
	}
	f := 1 - jitterFraction + 2*jitterFraction*rnd()
	return time.Duration(float64(d) * f)
}

// parseRetryAfter reads a Retry-After header: delta-seconds or an HTTP
// date, relative to now; capped at MaxRetryAfter; false when absent or
// unparseable.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return 0, false
	}
	return min(d, MaxRetryAfter), true
}
