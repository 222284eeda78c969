package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/workers"
)

// p4 measures chunked encoding (workers.ChunkArgs for every chunk, each
// taking the stills of its frames, and workers.TrackArgs, the audio,
// beside them: the commands the chunk and track tasks run) against the
// whole-file encode (workers.TranscodeArgs), on a 1080p clip read over
// HTTP, each ffmpeg on one thread (one worker slot = one core):
//   - CPU: the chunked encode's total CPU time ÷ the whole encode's;
//   - wall: the chunked encode run by one worker slot ÷ by two at once;
//   - a model of the speedup with W slots for a one-hour source.
func (s *suite) p4(b *testing.B) []Row {
	seconds := s.sc.chunkSeconds
	clip := s.clip1080(b, seconds)
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(clip))))
	defer srv.Close()
	in := workers.Input{URL: srv.URL + "/" + filepath.Base(clip), Seconds: seconds + 2}
	media := source1080(seconds)
	plan, err := workers.Plan(media, workers.DefaultPreset())
	if err != nil {
		b.Fatal(err)
	}
	chunked := proto.CloneOf(plan)
	workers.PlanChunks(chunked, media, workers.ChunkConfig{Threshold: time.Second, Length: p4ChunkLength})
	if chunked.Chunking == nil {
		b.Fatal("the clip is not chunked")
	}
	opt := workers.EncodeOptions{X264Preset: x264Preset, Threads: 1}
	out := b.TempDir()
	outputs := func(name string) workers.Outputs {
		o := workers.Outputs{Root: filepath.Join(out, name)}
		if err := o.Prepare(plan); err != nil {
			b.Fatal(err)
		}
		return o
	}
	// run runs one ffmpeg (one thread per encoder and for the filters)
	// and returns its CPU seconds.
	run := func(args []string) float64 {
		args = append([]string{"-hide_banner", "-nostdin", "-v", "error", "-y", "-filter_threads", "1", "-filter_complex_threads", "1"}, args...)
		cmd := exec.CommandContext(b.Context(), "ffmpeg", args...)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("ffmpeg: %v\n%s", err, msg)
		}
		return (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	whole := func(int) float64 {
		o := outputs("whole")
		defer os.RemoveAll(o.Root)
		o.Stills = workers.NewStills(filepath.Join(o.Root, "stills"), plan, seconds)
		_ = os.MkdirAll(o.Stills.Dir, 0o755)
		return run(workers.TranscodeArgs(in, plan, o, opt))
	}
	// parts are the chunked encode's commands, the track first.
	parts := func(o workers.Outputs) [][]string {
		cmds := [][]string{workers.TrackArgs(in, chunked, o)}
		for i := range int(chunked.Chunking.Count) {
			root := filepath.Join(o.Root, fmt.Sprint("c", i))
			start, end := workers.ChunkFrames(chunked.Chunking, i)
			c := workers.Outputs{Root: root, Stills: workers.NewStills(filepath.Join(root, "stills"), chunked, seconds).Window(int(start), int(end))}
			if err := c.Prepare(chunked); err != nil {
				b.Fatal(err)
			}
			cmds = append(cmds, workers.ChunkArgs(in, chunked, i, c, opt))
		}
		return cmds
	}
	var partCPU [][]float64 // per round: the track's CPU, then each chunk's
	chunkedCPU := func(int) float64 {
		o := outputs("chunked")
		defer os.RemoveAll(o.Root)
		var cpu []float64
		for _, args := range parts(o) {
			cpu = append(cpu, run(args))
		}
		partCPU = append(partCPU, cpu)
		var total float64
		for _, c := range cpu {
			total += c
		}
		return total
	}
	cpu := alternate(b, Rounds, []string{"whole", "chunked"}, whole, chunkedCPU)
	rows := []Row{{ID: "P4", Name: fmt.Sprintf("chunked encode CPU time ÷ the whole file's (%s 1080p, %d chunks of %s)", clipName(seconds), chunked.Chunking.Count, p4ChunkLength),
		A: "chunked", B: "whole", Unit: "CPU s", ASamp: cpu[1], BSamp: cpu[0], RatioOf: "A/B", Target: "≤ 1.10",
		Note: "one thread per ffmpeg; the chunked side is every chunk's ffmpeg (its rungs and the stills of its frames) and the track's (the audio, once)"}}
	rows[0].AMed, rows[0].BMed = median(rows[0].ASamp), median(rows[0].BSamp)
	rows[0].Ratio = ptr(rows[0].AMed / rows[0].BMed)
	rows[0].Met = ptr(*rows[0].Ratio <= 1.10)

	// Wall time: the parts run by one slot, then by two.
	pool := func(slots int) func(int) float64 {
		return func(int) float64 {
			o := outputs(fmt.Sprint("pool", slots))
			defer os.RemoveAll(o.Root)
			cmds := parts(o)
			work := make(chan []string)
			var wg sync.WaitGroup
			start := time.Now()
			for range slots {
				wg.Go(func() {
					for args := range work {
						run(args)
					}
				})
			}
			for _, c := range cmds {
				work <- c
			}
			close(work)
			wg.Wait()
			return time.Since(start).Seconds()
		}
	}
	wall := alternate(b, Rounds, []string{"one slot", "two slots"}, pool(1), pool(2))
	w := Row{ID: "P4", Name: "chunked encode wall time, one worker slot ÷ two", A: "one slot", B: "two slots", Unit: "s",
		ASamp: wall[0], BSamp: wall[1], RatioOf: "A/B", Target: "≈ 2 (the machine has 2 cores)",
		Note: "the same parts as above, taken from one queue by one or two goroutines, each running one single-threaded ffmpeg at a time"}
	w.AMed, w.BMed = median(w.ASamp), median(w.BSamp)
	w.Ratio = ptr(w.AMed / w.BMed)
	rows = append(rows, w)

	// The model: a one-hour source.
	med := medianParts(partCPU)
	rows = append(rows, speedupModel(med, seconds, float64(chunked.Chunking.Frames)/chunked.FrameRate, median(cpu[0]), workers.DefaultChunkLength.Seconds())...)
	return rows
}

// p4ChunkLength is the chunk length P4 measures: two segments, so a short
// clip has several chunks. Each chunk pays fixed costs (its seek margin's
// decode, the encoders' start and flush) that the default 60 s chunks
// spread five times thinner: the CPU ratio is a bound for them.
const p4ChunkLength = 12 * time.Second

// taskOverhead is what P7 measured a stage's hand-over to cost (the median
// orchestration overhead of a job, which has three hand-overs, is ~90 ms):
// the model charges every chunk task that much.
const taskOverhead = 0.1

// medianParts is each part's median over the rounds.
func medianParts(rounds [][]float64) []float64 {
	if len(rounds) == 0 {
		return nil
	}
	out := make([]float64, len(rounds[0]))
	for i := range out {
		var xs []float64
		for _, r := range rounds {
			xs = append(xs, r[i])
		}
		out[i] = median(xs)
	}
	return out
}

// speedupModel models a chunked one-hour encode on W single-core slots
// from the measured parts of a clip of `seconds` s (parts[0] the track,
// then the chunks, CPU seconds), and the whole encode's CPU (whole):
//   - a one-hour source is cut into chunks of workers.DefaultChunkLength;
//     each costs what a measured full-length chunk costs per second of
//     video, times its length; the track costs its
//     measured CPU per second of video, times 3600, and holds its slot
//     at least as long as reading the hour at workers.TrackReadRate takes;
//   - every task adds taskOverhead; the track starts first and holds one
//     slot; chunks go, in order, to the slot free first (the queue);
//   - the baseline is the whole encode on one slot: whole per second of
//     video times 3600 (one ffmpeg cannot use more than its threads).
func speedupModel(parts []float64, seconds, measuredChunk, whole, chunkSeconds float64) []Row {
	const hour = 3600.0
	// The full-length chunks are all but the first (short) and the last.
	var perSecond []float64
	for i := 2; i < len(parts)-1; i++ {
		perSecond = append(perSecond, parts[i]/measuredChunk)
	}
	if len(perSecond) == 0 && len(parts) > 1 {
		perSecond = append(perSecond, parts[len(parts)-1]/measuredChunk)
	}
	chunkCost := median(perSecond) * chunkSeconds
	track := max(parts[0]/seconds*hour, hour/workers.TrackReadRate)
	baseline := whole / seconds * hour
	n := int(hour / chunkSeconds)
	var rows []Row
	for _, workersN := range []int{2, 4, 8, 16} {
		slots := make([]float64, workersN)
		slots[0] = track + taskOverhead
		for range n {
			i := slices.Index(slots, slices.Min(slots))
			slots[i] += chunkCost + taskOverhead
		}
		makespan := slices.Max(slots)
		speedup := baseline / makespan
		r := Row{ID: "P4", Name: fmt.Sprintf("model: one-hour 1080p source, %d slots", workersN), A: "speedup", Unit: "×",
			AMed: speedup, Ratio: ptr(speedup / float64(workersN)), RatioOf: "speedup/W", Target: "≥ 0.8",
			Note: fmt.Sprintf("chunk %.0f s = %.1f CPU s, track %.0f CPU s, whole %.0f CPU s, %.0f ms a task (assumptions: bench/chunks_test.go speedupModel)",
				chunkSeconds, chunkCost, track, baseline, taskOverhead*1000)}
		r.Met = ptr(*r.Ratio >= 0.8)
		rows = append(rows, r)
	}
	return rows
}
