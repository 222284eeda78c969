package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// span is one ffmpeg or ffprobe run, [start, end].
type span struct{ start, end time.Time }

// ffmpegRuns reads the runs of ffmpeg and ffprobe the worker recorded in
// its log: the ffmpeg runner's debug line "finished" (internal/ffmpeg)
// carries the program and its wall time ("elapsed", seconds) and is
// written when the program has exited ("ts", seconds since the epoch).
func ffmpegRuns(log string) ([]span, error) {
	f, err := os.Open(log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []span
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // the process helper's marker lines
		}
		var rec struct {
			Msg     string   `json:"msg"`
			Program string   `json:"program"`
			TS      float64  `json:"ts"`
			Elapsed *float64 `json:"elapsed"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "finished" || rec.Elapsed == nil ||
			(rec.Program != "ffmpeg" && rec.Program != "ffprobe") {
			continue
		}
		end := time.Unix(0, int64(rec.TS*1e9))
		out = append(out, span{start: end.Add(-time.Duration(*rec.Elapsed * 1e9)), end: end})
	}
	return out, sc.Err()
}

// covered is how much of [from, to] at least one of the runs covers:
// runs side by side (thumbnails beside the encode) count once.
func covered(runs []span, from, to time.Time) (time.Duration, int) {
	var in []span
	for _, r := range runs {
		s, e := maxTime(r.start, from), minTime(r.end, to)
		if e.After(s) {
			in = append(in, span{s, e})
		}
	}
	slices.SortFunc(in, func(a, b span) int { return a.start.Compare(b.start) })
	var total time.Duration
	var cur span
	for i, r := range in {
		switch {
		case i == 0:
			cur = r
		case !r.start.After(cur.end):
			cur.end = maxTime(cur.end, r.end)
		default:
			total += cur.end.Sub(cur.start)
			cur = r
		}
	}
	if len(in) > 0 {
		total += cur.end.Sub(cur.start)
	}
	return total, len(in)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// p7 uploads s.sc.clips one-second 1080p clips one after the other and, for
// each, takes from its end-to-end time (upload finished → ready, from the
// job's event stream) the time ffmpeg and ffprobe ran for it as the worker
// recorded it: what is left is kiln's orchestration (queues, events,
// uploads of outputs, the catalog). One job at a time, so that every run in
// a job's window is that job's.
func (s *suite) p7(b *testing.B) []Row {
	st := s.stack(b)
	clip := s.clip1080(b, 1)
	type sample struct {
		e2e, ff time.Duration
		runs    int
		from    time.Time
		to      time.Time
	}
	var samples []sample
	states := map[string][]float64{} // the catalog's job timestamps, ms after the upload finished
	for i := range s.sc.clips {
		st.idle(b)
		ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
		up, err := st.api.uploadFile(ctx, clip)
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		j, readyAt, err := st.api.wait(ctx, up.JobID)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if j.State != "ready" {
			b.Fatalf("clip %d: job %s ended %s: %+v", i, j.ID, j.State, j.Error)
		}
		samples = append(samples, sample{e2e: readyAt.Sub(up.Done), from: up.Done, to: readyAt})
		for state, at := range j.Timestamps {
			states[state] = append(states[state], float64(at.Sub(up.Done))/1e6)
		}
	}
	// The worker writes its log as it goes; wait for the last line.
	st.idle(b)
	time.Sleep(500 * time.Millisecond)
	runs, err := ffmpegRuns(st.workerLog)
	if err != nil {
		b.Fatal(err)
	}
	var over, e2e, ff []float64
	minRuns := math.MaxInt
	for i := range samples {
		sm := &samples[i]
		sm.ff, sm.runs = covered(runs, sm.from, sm.to)
		minRuns = min(minRuns, sm.runs)
		over = append(over, float64(sm.e2e-sm.ff)/1e6)
		e2e = append(e2e, sm.e2e.Seconds()*1000)
		ff = append(ff, sm.ff.Seconds()*1000)
	}
	if minRuns == 0 {
		b.Fatalf("a job without a recorded ffmpeg run in its window: the worker's log (%s) has no debug \"finished\" lines", st.workerLog)
	}
	b.Logf("P7 per job (ms): end to end %v; ffmpeg %v", rounded(e2e), rounded(ff))
	b.Logf("P7 first job's ffmpeg/ffprobe runs (ms after the upload finished): %s", timeline(runs, samples[0].from, samples[0].to))
	var marks []string
	for _, st := range []string{"queued", "probing", "transcoding", "packaging", "ready"} {
		if v, ok := states[st]; ok {
			marks = append(marks, fmt.Sprintf("%s %+.0f", st, median(v)))
		}
	}
	r := Row{ID: "P7", Name: fmt.Sprintf("orchestration: end to end minus ffmpeg time, %d one-second 1080p clips", s.sc.clips),
		A: "median", B: "p95", Unit: "ms", ASamp: over, AMed: median(over), BMed: quantile(over, 0.95), Target: "≤ 100 ms median",
		Note: fmt.Sprintf("one job at a time; end to end median %.0f ms, of which ffmpeg/ffprobe ran %.0f ms (the union of the runs "+
			"the worker logged in the job's window: its debug \"finished\" lines), at least %d runs per job; "+
			"the job's timestamps, median ms after the upload finished: %s",
			median(e2e), median(ff), minRuns, strings.Join(marks, ", "))}
	r.Met = ptr(r.AMed <= 100)
	return []Row{r}
}

func rounded(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(math.Round(x))
	}
	return out
}

// timeline lists the runs within [from, to] as start–end offsets.
func timeline(runs []span, from, to time.Time) string {
	var parts []string
	for _, r := range runs {
		if r.end.After(from) && r.start.Before(to) {
			parts = append(parts, fmt.Sprintf("%.0f–%.0f", float64(r.start.Sub(from))/1e6, float64(r.end.Sub(from))/1e6))
		}
	}
	return strings.Join(parts, " ") + fmt.Sprintf(" (ready at %.0f)", float64(to.Sub(from))/1e6)
}
