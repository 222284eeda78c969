package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

// source1080 is what the probe reports for the generated 1080p clips.
func source1080(seconds float64) *kilnv1.MediaInfo {
	return &kilnv1.MediaInfo{
		DurationSeconds: seconds,
		Video:           &kilnv1.VideoStream{Width: 1920, Height: 1080, FrameRate: 30},
		Audio:           &kilnv1.AudioStream{Channels: 2, SampleRate: 48000},
	}
}

// x264Preset is the workers' default (KILN_X264_PRESET), which the stack
// runs with: the baseline encodes with the same one.
const x264Preset = "veryfast"

// bareLadderArgs is the one ffmpeg command a user would write for the
// plan's ladder without kiln: decode once, split to every rung, the plan's
// sizes, bit rates and GOP, AAC once as an audio group, HLS fMP4 with a
// master playlist, from a local file.
func bareLadderArgs(src string, plan *kilnv1.Plan, out string) []string {
	var fg strings.Builder
	fmt.Fprintf(&fg, "[0:v]split=%d", len(plan.Rungs))
	for i := range plan.Rungs {
		fmt.Fprintf(&fg, "[s%d]", i)
	}
	for i, r := range plan.Rungs {
		fmt.Fprintf(&fg, ";[s%d]scale=%d:%d[v%d]", i, r.Width, r.Height, i)
	}
	gop := strconv.Itoa(int(plan.GopFrames))
	args := []string{"-hide_banner", "-nostdin", "-v", "error", "-y", "-i", src, "-filter_complex", fg.String()}
	var streams []string
	for i, r := range plan.Rungs {
		br := r.VideoBitRate
		args = append(args, "-map", fmt.Sprintf("[v%d]", i),
			fmt.Sprintf("-b:v:%d", i), strconv.FormatInt(br, 10),
			fmt.Sprintf("-maxrate:v:%d", i), strconv.FormatInt(br*6/5, 10),
			fmt.Sprintf("-bufsize:v:%d", i), strconv.FormatInt(br*2, 10))
		streams = append(streams, fmt.Sprintf("v:%d,agroup:aud", i))
	}
	args = append(args, "-c:v", "libx264", "-preset", x264Preset, "-profile:v", "high", "-pix_fmt", "yuv420p",
		"-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
		"-map", "0:a:0", "-c:a", "aac", "-b:a", strconv.FormatInt(plan.AudioBitRate, 10), "-ar", "48000", "-ac", "2",
		"-f", "hls", "-hls_time", strconv.Itoa(int(plan.SegmentSeconds)), "-hls_playlist_type", "vod",
		"-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
		"-hls_segment_filename", filepath.Join(out, "%v", "seg_%05d.m4s"),
		"-master_pl_name", "master.m3u8",
		"-var_stream_map", strings.Join(append(streams, "a:0,agroup:aud"), " "),
		filepath.Join(out, "%v", "index.m3u8"))
	return args
}

// workerPeak is P5's worker side: peaks seen while the worker transcoded
// P1's clips.
type workerPeak struct {
	goHWM    int64            // the worker's VmHWM after its transcodes
	children map[string]int64 // peak VmHWM of its children, by program
}

// sampleWorker polls the worker's children's VmHWM (each child's own
// peak, read while it runs) until stop is called.
func sampleWorker(pid int) (stop func() map[string]int64) {
	done := make(chan struct{})
	var mu sync.Mutex
	peaks := map[string]int64{}
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for _, c := range children(pid) {
				name, hwm := comm(c), status(c, "VmHWM")
				mu.Lock()
				peaks[name] = max(peaks[name], hwm)
				mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() map[string]int64 {
		close(done)
		mu.Lock()
		defer mu.Unlock()
		return peaks
	}
}

// p1p2 is P1 (upload finished → ready, against one bare ffmpeg making the
// same ladder) and P2 (upload finished → playable, short and long clip),
// alternated together: bare ffmpeg, kiln on the short clip, kiln on the
// long clip, and again. The short clip's kiln runs give P1 and P2's short
// side at once; the long clip's job is canceled once it plays. While the
// short clip transcodes, P5's worker side is sampled.
func (s *suite) p1p2(b *testing.B) []Row {
	st := s.stack(b)
	short, long := s.clip1080(b, s.sc.e2eSeconds), s.clip1080(b, s.sc.longSeconds)
	plan, err := workers.Plan(source1080(s.sc.e2eSeconds), workers.DefaultPreset())
	if err != nil {
		b.Fatal(err)
	}
	out := b.TempDir()
	var playableShort []float64
	peak := &workerPeak{children: map[string]int64{}}
	sampleTimeout := time.Duration(max(30, 4*s.sc.longSeconds)) * time.Second

	bare := func(i int) float64 {
		st.idle(b)
		dir := filepath.Join(out, "bare-"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		cmd := exec.CommandContext(b.Context(), "ffmpeg", bareLadderArgs(short, plan, dir)...)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("bare ffmpeg: %v\n%s", err, o)
		}
		d := time.Since(start).Seconds()
		_ = os.RemoveAll(dir)
		return d
	}
	kiln := func(int) float64 {
		st.idle(b)
		ctx, cancel := context.WithTimeout(b.Context(), sampleTimeout)
		defer cancel()
		stop := sampleWorker(st.worker.Pid())
		up, err := st.api.uploadFile(ctx, short)
		if err != nil {
			b.Fatal(err)
		}
		played := make(chan time.Time, 1)
		go func() {
			at, err := st.api.pollPlayable(ctx, up.AssetID, 100*time.Millisecond)
			if err != nil {
				b.Log(err)
			}
			played <- at
		}()
		j, readyAt, err := st.api.wait(ctx, up.JobID)
		if err != nil {
			b.Fatal(err)
		}
		if j.State != "ready" {
			b.Fatalf("job %s ended %s: %+v", j.ID, j.State, j.Error)
		}
		playedAt := <-played
		for name, v := range stop() {
			peak.children[name] = max(peak.children[name], v)
		}
		peak.goHWM = status(st.worker.Pid(), "VmHWM")
		if playedAt.IsZero() {
			b.Fatalf("asset %s of ready job %s never played", up.AssetID, j.ID)
		}
		playableShort = append(playableShort, playedAt.Sub(up.Done).Seconds())
		return readyAt.Sub(up.Done).Seconds()
	}
	longSide := func(int) float64 {
		st.idle(b)
		ctx, cancel := context.WithTimeout(b.Context(), sampleTimeout)
		defer cancel()
		up, err := st.api.uploadFile(ctx, long)
		if err != nil {
			b.Fatal(err)
		}
		at, err := st.api.pollPlayable(ctx, up.AssetID, 100*time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		var j job
		if err := st.api.do(ctx, http.MethodGet, "/v1/jobs/"+up.JobID, &j); err != nil {
			b.Fatal(err)
		}
		if j.Chunks == nil || j.Chunks.Total < 2 {
			b.Fatalf("the long clip's job %s is not chunked: %+v", up.JobID, j.Chunks)
		}
		// What comes after playable is P1's business: stop the encode.
		if err := st.api.cancelJob(ctx, up.JobID); err != nil {
			b.Fatal(err)
		}
		return at.Sub(up.Done).Seconds()
	}
	v := alternate(b, Rounds, []string{"bare ffmpeg", "kiln " + clipName(s.sc.e2eSeconds), "kiln playable " + clipName(s.sc.longSeconds)},
		bare, kiln, longSide)
	s.mu.Lock()
	s.worker = peak
	s.mu.Unlock()

	p1 := Row{ID: "P1", Name: "end to end, " + clipName(s.sc.e2eSeconds) + " 1080p30: upload finished → ready",
		A: "kiln", B: "bare ffmpeg", Unit: "s", ASamp: v[1], BSamp: v[0], RatioOf: "A/B", Target: "≤ 1.0",
		Note: fmt.Sprintf("bare ffmpeg: one command, local file, split to the plan's %d rungs, x264 %s, AAC once, HLS fMP4 (bench/e2e_test.go bareLadderArgs)",
			len(plan.Rungs), x264Preset)}
	p1.AMed, p1.BMed = median(p1.ASamp), median(p1.BSamp)
	p1.Ratio = ptr(p1.AMed / p1.BMed)
	p1.Met = ptr(*p1.Ratio <= 1.0)

	p2 := Row{ID: "P2", Name: "first playable: upload finished → master and first segments fetchable",
		A: clipName(s.sc.e2eSeconds), B: clipName(s.sc.longSeconds), Unit: "s", ASamp: playableShort, BSamp: v[2],
		Target: "≤ 10 s each; B within 20 % of A",
		Note:   "polls the playback URL every 100 ms: master, every media playlist, first segment and init of each; the long clip is encoded in chunks, the short one whole"}
	p2.AMed, p2.BMed = median(p2.ASamp), median(p2.BSamp)
	p2.Ratio = ptr(p2.BMed / p2.AMed)
	p2.RatioOf = "B/A"
	p2.Met = ptr(p2.AMed <= 10 && p2.BMed <= 10 && *p2.Ratio <= 1.2)
	return []Row{p1, p2}
}

func clipName(seconds float64) string {
	if seconds >= 60 && int(seconds)%60 == 0 {
		return fmt.Sprintf("%d min", int(seconds)/60)
	}
	return fmt.Sprintf("%g s", seconds)
}

const mib = 1 << 20

// p5WorkerRow is P5's worker side, measured during P1 (none when P1 did
// not run).
func (s *suite) p5WorkerRow() []Row {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker == nil {
		return nil
	}
	ff := s.worker.children["ffmpeg"]
	r := Row{ID: "P5", Name: "peak RSS, worker during a transcode (VmHWM)", A: "worker (Go)", B: "its ffmpeg",
		Unit: "MiB", AMed: float64(s.worker.goHWM) / mib, BMed: float64(ff) / mib, Target: "≤ 64 MiB (Go process)",
		Note: fmt.Sprintf("worker: VmHWM of the kiln worker process after P1's transcodes; ffmpeg (reported apart, no target): "+
			"peak VmHWM of its ffmpeg children polled every 100 ms; all children: %v", mibs(s.worker.children))}
	r.Met = ptr(r.AMed <= 64)
	return []Row{r}
}

func mibs(m map[string]int64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %.0f MiB", k, float64(v)/mib))
	}
	return strings.Join(parts, ", ")
}
