package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

// p3 compares kiln's single-decode ladder (the workers' transcode command:
// one ffmpeg, split to every rung) with one ffmpeg per rung (the same
// command with one rung each), on a 1080p clip and the default ladder,
// read over HTTP as the workers read sources. The ratio is per-rung time /
// one-decode time (> 1: kiln's way is faster).
func (s *suite) p3(b *testing.B) []Row {
	clip := s.clip1080(b, s.sc.ladderSeconds)
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(clip))))
	defer srv.Close()
	input := srv.URL + "/" + filepath.Base(clip)
	plan, err := workers.Plan(source1080(s.sc.ladderSeconds), workers.DefaultPreset())
	if err != nil {
		b.Fatal(err)
	}
	runner := ffmpeg.New(ffmpeg.Config{})
	opt := workers.EncodeOptions{X264Preset: x264Preset}
	out := b.TempDir()
	dir := func(name string, i int) workers.Outputs {
		o := workers.Outputs{Root: filepath.Join(out, fmt.Sprint(name, i))}
		if err := o.Prepare(plan); err != nil {
			b.Fatal(err)
		}
		return o
	}
	split := func(i int) float64 {
		d := dir("split", i)
		defer os.RemoveAll(d.Root)
		start := time.Now()
		if err := runner.Run(b.Context(), workers.TranscodeArgs(workers.Input{URL: input}, plan, d, opt), nil); err != nil {
			b.Fatal(err)
		}
		return time.Since(start).Seconds()
	}
	each := func(i int) float64 {
		d := dir("each", i)
		defer os.RemoveAll(d.Root)
		start := time.Now()
		for j, r := range plan.Rungs {
			// The audio once, with the first rung, as the one decode does.
			one := &kilnv1.Plan{Rungs: []*kilnv1.Rung{r}, FrameRate: plan.FrameRate, GopFrames: plan.GopFrames,
				SegmentSeconds: plan.SegmentSeconds, HasAudio: plan.HasAudio && j == 0, AudioBitRate: plan.AudioBitRate}
			if err := runner.Run(b.Context(), workers.TranscodeArgs(workers.Input{URL: input}, one, d, opt), nil); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start).Seconds()
	}
	v := alternate(b, Rounds, []string{"one decode", "one ffmpeg per rung"}, split, each)
	r := Row{ID: "P3", Name: fmt.Sprintf("one decode for every rung vs one ffmpeg per rung (%s 1080p, %d rungs)", clipName(s.sc.ladderSeconds), len(plan.Rungs)),
		A: "one decode", B: "per rung", Unit: "s", ASamp: v[0], BSamp: v[1], RatioOf: "B/A", Target: "≥ 1.3",
		Note: "both sides are workers.TranscodeArgs (the workers' own command, straight to HLS segments, without the stills), with every rung or one rung per run; the audio is encoded once on both sides"}
	r.AMed, r.BMed = median(r.ASamp), median(r.BSamp)
	r.Ratio = ptr(r.BMed / r.AMed)
	r.Met = ptr(*r.Ratio >= 1.3)
	return []Row{r}
}
