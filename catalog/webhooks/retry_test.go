package webhooks

import (
	"math/rand/v2"
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	got, err := ParseSchedule("100ms, 200ms,300ms")
	if err != nil || !reflect.DeepEqual(got, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}) {
		t.Fatalf("ParseSchedule = %v, %v", got, err)
	}
	if got, err := ParseSchedule(" "); err != nil || !reflect.DeepEqual(got, DefaultRetrySchedule) {
		t.Fatalf("empty schedule = %v, %v", got, err)
	}
	for _, bad := range []string{"5", "5s,,1m", "-1s", "0s", "soon"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("ParseSchedule(%q) accepted", bad)
		}
	}
	want := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour,
		10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour}
	if !reflect.DeepEqual(DefaultRetrySchedule, want) {
		t.Fatalf("default schedule = %v", DefaultRetrySchedule)
	}
}

func TestRetryDelayJitterBounds(t *testing.T) {
	sched := DefaultRetrySchedule
	for attempt := 1; attempt <= len(sched); attempt++ {
		base := sched[attempt-1]
		lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2)
		// The extremes of the random source map onto the bounds…
		if d, ok := retryDelay(sched, attempt, func() float64 { return 0 }); !ok || d != lo {
			t.Errorf("attempt %d, rnd 0: %v, want %v", attempt, d, lo)
		}
		if d, _ := retryDelay(sched, attempt, func() float64 { return 0.5 }); d != base {
			t.Errorf("attempt %d, rnd 0.5: %v, want %v", attempt, d, base)
		}
		// …and real draws stay inside them and actually vary.
		seen := map[time.Duration]bool{}
		for range 500 {
			d, ok := retryDelay(sched, attempt, rand.Float64)
			if !ok || d < lo || d > hi {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, lo, hi)
			}
			seen[d] = true
		}
		if len(seen) < 100 {
			t.Errorf("attempt %d: only %d distinct delays", attempt, len(seen))
		}
	}
	if _, ok := retryDelay(sched, len(sched)+1, nil); ok {
		t.Error("schedule not exhausted after its last delay")
	}
	if _, ok := retryDelay(sched, 0, nil); ok {
		t.Error("attempt 0 has a delay")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 7 ", 7 * time.Second, true},
		{"-5", 0, false},
		{"999999999999", MaxRetryAfter, true},
		{"90000", MaxRetryAfter, true}, // 25 h, capped
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true}, // in the past: now
		{now.Add(48 * time.Hour).Format(http.TimeFormat), MaxRetryAfter, true},
		{"Sunday, 01-Mar-26 12:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"later", 0, false},
		{"1.5", 0, false},
	} {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
