package workers_test

import (
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

// BenchmarkProbe compares the probe handler (quick window first) with one
// ffprobe of the full window (the probe before the quick window), both
// reading the source over HTTP through the memory-limiting re-exec, as a
// worker does. Each iteration runs both, alternately; the benchmark reports
// the medians (kiln_ms, full_ms) and speedup = full / kiln. Sources: a
// 10 s 1280x720 H.264+AAC clip in MP4 (moov at the end, as ffmpeg and
// most cameras write it, and faststart), Matroska and MPEG-TS, and an MP3.
func BenchmarkProbe(b *testing.B) {
	testenv.RequireBinaries(b, "ffmpeg", "ffprobe")
	src := testenv.Clip(b, testenv.ClipSpec{Name: "src.mp4", Seconds: 10, Width: 1280, Height: 720, SampleRate: 48000})
	dir := filepath.Dir(src)
	remux := func(name string, args ...string) string {
		out := filepath.Join(dir, name)
		cmd := exec.CommandContext(b.Context(), "ffmpeg", append(append([]string{"-hide_banner", "-nostdin", "-v", "error", "-y", "-i", src}, args...), out)...)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("remux to %s: %v\n%s", name, err, msg)
		}
		return out
	}
	sources := []struct{ name, file string }{
		{"mp4", src},
		{"mp4-faststart", remux("fs.mp4", "-c", "copy", "-movflags", "+faststart")},
		{"mkv", remux("src.mkv", "-c", "copy")},
		{"ts", remux("src.ts", "-c", "copy")},
		{"mp3", remux("src.mp3", "-vn", "-c:a", "libmp3lame")},
	}
	runner := ffmpeg.New(ffmpeg.Config{MaxMemory: 8 << 30, Logger: zap.NewNop()})
	for _, s := range sources {
		b.Run(s.name, func(b *testing.B) {
			srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
			b.Cleanup(srv.Close)
			url := srv.URL + "/" + filepath.Base(s.file)
			h := workers.New(workers.Config{
				FFmpeg: runner, Objects: presignTo{&fakes.Objects{}, url}, Events: &fakes.Events{}, Queue: &fakes.Queue{},
				OutputsBucket: outputsBucket, WorkDir: b.TempDir(),
			})
			cmd, err := tasks.NewProbeTask(b.Context(), &kilnv1.ProbeTask{JobId: jobID, AssetId: assetID, Attempt: attempt,
				Source: &kilnv1.ObjectRef{Bucket: sourcesBucket, Key: sourceKey, Size: 12345}})
			if err != nil {
				b.Fatal(err)
			}
			task := cmd.Task
			full := ffmpeg.ProbeOptions{
				FormatWhitelist: workers.FormatWhitelist, ProtocolWhitelist: workers.ProtocolWhitelist,
				ProbeSize: workers.ProbeSize, AnalyzeDuration: workers.AnalyzeDuration, ReadTimeout: workers.ReadTimeout,
			}
			var kiln, old []time.Duration
			for i := 0; b.Loop(); i++ {
				sides := []func(){
					func() {
						start := time.Now()
						if err := h.Probe(b.Context(), task); err != nil {
							b.Fatal(err)
						}
						kiln = append(kiln, time.Since(start))
					},
					func() {
						start := time.Now()
						if _, err := runner.Probe(b.Context(), url, full); err != nil {
							b.Fatal(err)
						}
						old = append(old, time.Since(start))
					},
				}
				if i%2 == 1 {
					slices.Reverse(sides)
				}
				for _, side := range sides {
					side()
				}
			}
			k, o := medianDuration(kiln), medianDuration(old)
			b.ReportMetric(float64(k)/1e6, "kiln_ms")
			b.ReportMetric(float64(o)/1e6, "full_ms")
			b.ReportMetric(float64(o)/float64(k), "speedup")
		})
	}
}

func medianDuration(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}
