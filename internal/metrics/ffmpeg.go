package metrics

import (
	"context"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
)

// Runner runs ffmpeg and ffprobe (ffmpeg.Runner).
type Runner interface {
	Run(ctx context.Context, args []string, onProgress func(ffmpeg.Progress)) error
	Probe(ctx context.Context, input string, opts ffmpeg.ProbeOptions) (*ffmpeg.ProbeResult, error)
}

var _ Runner = (*ffmpeg.Runner)(nil)

// minMediaSeconds is the least media a run must have produced for its
// speed to count: a poster frame's run says nothing about throughput.
const minMediaSeconds = 1

// FFmpeg is a Runner that measures each ffmpeg run's speed.
type FFmpeg struct {
	Runner
	speed *prometheus.HistogramVec
}

// NewFFmpeg wraps r, its speeds registered with reg:
// kiln_ffmpeg_speed_ratio{stage}, with an (empty) series for each of
// stages.
func NewFFmpeg(reg prometheus.Registerer, r Runner, stages ...string) (*FFmpeg, error) {
	f := &FFmpeg{Runner: r, speed: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kiln_ffmpeg_speed_ratio",
		Help:    "Speed of each successful ffmpeg run in multiples of real time (media seconds produced / wall seconds), by stage queue.",
		Buckets: []float64{0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 50, 100, 500},
	}, []string{"stage"})}
	if err := reg.Register(f.speed); err != nil {
		return nil, err
	}
	for _, st := range stages {
		f.speed.WithLabelValues(st)
	}
	return f, nil
}

// Run runs ffmpeg, always with a progress report (whose out_time is the
// media produced), and observes its speed when it succeeds. onProgress, if
// any, gets every report too.
func (f *FFmpeg) Run(ctx context.Context, args []string, onProgress func(ffmpeg.Progress)) error {
	var produced time.Duration // written by the progress goroutine; Run returns after its last call
	start := time.Now()
	err := f.Runner.Run(ctx, args, func(p ffmpeg.Progress) {
		produced = max(produced, p.OutTime)
		if onProgress != nil {
			onProgress(p)
		}
	})
	wall := time.Since(start)
	if err == nil && produced.Seconds() >= minMediaSeconds && wall > 0 {
		stage, ok := asynq.GetQueueName(ctx)
		if !ok {
			stage = "none"
		}
		f.speed.WithLabelValues(stage).Observe(produced.Seconds() / wall.Seconds())
	}
	return err
}
