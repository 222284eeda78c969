package bench

import (
	"math"
	"testing"
	"time"
)

// TestCovered: runs side by side count once, runs outside the window do
// not count, runs across its edges count inside it only.
func TestCovered(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	runs := []span{
		{at(-500), at(100)}, // across the start: 100 ms inside
		{at(200), at(900)},  // holds the next: 200–900 once
		{at(300), at(400)},
		{at(900), at(1000)},  // touches the previous: 200–1000
		{at(1500), at(2500)}, // across the end: 1500–2000
		{at(3000), at(4000)}, // after the window
	}
	got, n := covered(runs, at(0), at(2000))
	if want := 1400 * time.Millisecond; got != want || n != 5 {
		t.Errorf("covered = %s over %d runs, want %s over 5", got, n, want)
	}
	if got, n := covered(nil, at(0), at(2000)); got != 0 || n != 0 {
		t.Errorf("no runs: covered = %s over %d", got, n)
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ q, want float64 }{{0.5, 3}, {0, 1}, {1, 5}, {0.95, 4.8}} {
		if got := quantile(xs, c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v, %v) = %v, want %v", xs, c.q, got, c.want)
		}
	}
	if got := median([]float64{2, 1, 4, 3}); got != 2.5 {
		t.Errorf("median of 4 = %v, want 2.5", got)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is a number")
	}
}
