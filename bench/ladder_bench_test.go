// Package bench holds kiln's benchmarks. Each one measures kiln's way and a
// baseline in the same run and reports their ratio, because these machines
// are too noisy for absolute numbers. Run with `go tool task bench`.
package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

// BenchmarkLadder compares kiln's single-decode ladder (one ffmpeg, split to
// every rung) with the common baseline of one ffmpeg per rung, on a 6 s
// 1280x720 clip and the default ladder (720p…144p). It reports
// split_speedup = baseline time / kiln time (> 1 means kiln is faster).
func BenchmarkLadder(b *testing.B) {
	clip := testenv.Clip(b, testenv.ClipSpec{Name: "src.mp4", Seconds: 6, Width: 1280, Height: 720})
	dir := filepath.Dir(clip)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	input := srv.URL + "/src.mp4"
	media := &kilnv1.MediaInfo{
		DurationSeconds: 6,
		Video:           &kilnv1.VideoStream{Width: 1280, Height: 720, FrameRate: 30},
		Audio:           &kilnv1.AudioStream{Channels: 2, SampleRate: 48000},
	}
	plan, err := workers.Plan(media, workers.DefaultPreset())
	if err != nil {
		b.Fatal(err)
	}
	runner := ffmpeg.New(ffmpeg.Config{})
	opt := workers.EncodeOptions{X264Preset: "veryfast"}

	var kiln, baseline time.Duration
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(dir, fmt.Sprint("run", i))
		split, each := workers.Outputs{Root: out + "-split"}, workers.Outputs{Root: out + "-each"}
		for _, o := range []workers.Outputs{split, each} {
			if err := o.Prepare(plan); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		if err := runner.Run(b.Context(), workers.TranscodeArgs(workers.Input{URL: input}, plan, split, opt), nil); err != nil {
			b.Fatal(err)
		}
		kiln += time.Since(start)

		start = time.Now()
		for _, r := range plan.Rungs {
			one := &kilnv1.Plan{Rungs: []*kilnv1.Rung{r}, FrameRate: plan.FrameRate, GopFrames: plan.GopFrames,
				SegmentSeconds: plan.SegmentSeconds, HasAudio: plan.HasAudio, AudioBitRate: plan.AudioBitRate}
			if err := runner.Run(b.Context(), workers.TranscodeArgs(workers.Input{URL: input}, one, each, opt), nil); err != nil {
				b.Fatal(err)
			}
		}
		baseline += time.Since(start)
	}
	b.ReportMetric(kiln.Seconds()/float64(b.N), "split_s/op")
	b.ReportMetric(baseline.Seconds()/float64(b.N), "per_rung_s/op")
	b.ReportMetric(baseline.Seconds()/kiln.Seconds(), "split_speedup")
}
