package app

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kilnvideo/kiln/internal/ledger"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/lease"
	"github.com/kilnvideo/kiln/internal/metrics"
	"github.com/kilnvideo/kiln/internal/profiling"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/packager"
	"github.com/kilnvideo/kiln/workers"
)

// worker runs the asynq server of every stage (probe, transcode,
// thumbnail, package) and the webhook deliveries, or of the queues of
// cfg.WorkerQueues only; with concurrency 0 (serve without workers) it runs
// nothing.
func (p *process) worker(ctx context.Context) error {
	cfg := p.cfg
	if cfg.Concurrency <= 0 {
		return nil
	}
	queues, err := WorkerQueueWeights(cfg.WorkerQueues)
	if err != nil {
		return err
	}
	presets, err := workers.LoadPresets(cfg.PresetsFile)
	if err != nil {
		return err
	}
	workDir, err := workers.PrepareWorkDir(cfg.WorkDir, p.log)
	if err != nil {
		return err
	}
	p.onClose(func() { _ = os.RemoveAll(workDir) })
	runner, err := metrics.NewFFmpeg(p.metrics, ffmpeg.New(ffmpeg.Config{FFmpegPath: cfg.FFmpegPath, FFprobePath: cfg.FFprobePath, MaxMemory: cfg.FFmpegMaxMemory, Logger: p.log,
		TracerProvider: cfg.TracerProvider}),
		tasks.QueueTranscode, tasks.QueuePackage)
	if err != nil {
		return err
	}
	taskMetrics, err := metrics.NewTasks(p.metrics, tasks.TypeProbe, tasks.TypeTranscode, tasks.TypePackage, webhooks.TypeDeliver)
	if err != nil {
		return err
	}
	objects := p.objectIO.For(string(RoleWorker), p.objects)
	mux := asynq.NewServeMux()
	leases := lease.NewManager(lease.Config{Redis: p.redis, TTL: cfg.TaskLease, Logger: p.log.Named("lease")})
	if err := p.metrics.Register(leases.Counts()); err != nil {
		return err
	}
	mux.Use(tasks.Tracing(cfg.TracerProvider), taskMetrics.Middleware(), cancel.Middleware(p.cancel), leases.Middleware(),
		p.work.Middleware()) // a transcode's slot goes to the next waiting work as soon as it is done
	if cfg.PyroscopeURL != "" {
		mux.Use(profiling.Middleware()) // CPU samples labelled task_type
	}
	workers.New(workers.Config{
		FFmpeg: runner, Objects: objects, Events: p.bus, Queue: p.work, Jobs: p.cancel,
		OutputsBucket: cfg.OutputsBucket, WorkDir: workDir, Threads: cfg.FFmpegThreads,
		Presets: presets, Limits: cfg.Limits, X264Preset: cfg.X264Preset, Logger: p.log.Named("worker"),
		Chunks: cfg.Chunks, Ledger: ledger.New(p.redis), Fleet: fleet{p.inspector},
	}).Register(mux)
	packager.New(packager.Config{
		FFmpeg: runner, Objects: objects, Events: p.bus, OutputsBucket: cfg.OutputsBucket, Jobs: p.cancel,
		WorkDir: workDir, Logger: p.log.Named("packager"),
	}).Register(mux)
	webhooks.NewDeliverer(webhooks.DelivererConfig{
		AllowLoopback: cfg.WebhookAllowLoopback, Logger: p.log.Named("webhooks"),
	}).Register(mux)
	handlers, stopHandlers := context.WithCancel(context.WithoutCancel(ctx))
	var servers []*asynq.Server
	for _, group := range ServerQueues(queues) {
		srv := asynq.NewServer(p.redisOpt(), asynq.Config{
			Concurrency:    cfg.Concurrency,
			Queues:         group,
			RetryDelayFunc: retryDelay,
			// A run that found its task's lease held is no failure: it neither
			// uses up a retry nor fails the job (lease.ErrBusy).
			IsFailure:       func(err error) bool { return !errors.Is(err, lease.ErrBusy) },
			ErrorHandler:    busyQuiet{&tasks.FailureHandler{Events: p.bus, Logger: p.log.Named("worker")}},
			ShutdownTimeout: cfg.ShutdownTimeout,
			// asynq's default, a second, would be paid at every stage's
			// hand-over on an idle fleet; each check is one Redis script.
			TaskCheckInterval: cfg.TaskCheckInterval,
			Logger:            asynqLogger{p.log.Named("asynq").Sugar()},
			// Not ctx: SIGTERM must let running tasks finish within the
			// shutdown timeout; asynq hands back the rest, then they stop.
			BaseContext: func() context.Context { return handlers },
		})
		if err := srv.Start(mux); err != nil {
			for _, started := range servers {
				started.Shutdown()
			}
			stopHandlers()
			return fmt.Errorf("asynq server: %w", err)
		}
		servers = append(servers, srv)
	}
	p.g.Go(func() error {
		<-ctx.Done()
		// Each waits up to ShutdownTimeout, then hands its unfinished tasks
		// back: side by side, so that the whole takes that long at most.
		var wg sync.WaitGroup
		for _, srv := range servers {
			wg.Go(srv.Shutdown)
		}
		wg.Wait()
		stopHandlers() // their ffmpegs die
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		leases.ReleaseAll(rctx) // another worker takes them at once
		return nil
	})
	p.g.Go(func() error {
		// A rescue copy replaces a task already admitted: straight to asynq.
		leases.Rescuer(p.inspector, p.queue).Run(ctx)
		return nil
	})
	p.g.Go(func() error {
		p.work.Run(ctx)
		return nil
	})
	return nil
}

// ServerQueues splits a worker's queues (with their weights) among its
// asynq servers: the transcode queue gets a server of its own, the short
// stages (probe, package, webhook) share another, each running
// KILN_CONCURRENCY tasks at once. In one server the transcodes would take
// every goroutine whenever the fleet is busy, and an upload would not be
// probed, a download not packaged, a webhook not sent, until an encode
// ended; apart, the transcode server's concurrency is exactly the
// process's transcode slots (what admission counts, from the servers'
// heartbeats), and the short stages never wait behind an encode.
func ServerQueues(queues map[string]int) []map[string]int {
	var out []map[string]int
	if w, ok := queues[tasks.QueueTranscode]; ok {
		out = append(out, map[string]int{tasks.QueueTranscode: w})
	}
	short := map[string]int{}
	for q, w := range queues {
		if q != tasks.QueueTranscode {
			short[q] = w
		}
	}
	if len(short) > 0 {
		out = append(out, short)
	}
	return out
}

// WorkerQueueWeights are the asynq queues of a worker that takes tasks
// from the named queues (nil or empty: all of them), each with its
// tasks.QueueWeights weight; an unknown or repeated name is an error.
func WorkerQueueWeights(names []string) (map[string]int, error) {
	all := tasks.QueueWeights()
	if len(names) == 0 {
		return all, nil
	}
	weights := map[string]int{}
	for _, q := range names {
		w, ok := all[q]
		if !ok {
			known := slices.Sorted(maps.Keys(all))
			return nil, fmt.Errorf("worker queue %q: unknown (want one of %s)", q, strings.Join(known, ", "))
		}
		if _, dup := weights[q]; dup {
			return nil, fmt.Errorf("worker queue %q: named twice", q)
		}
		weights[q] = w
	}
	return weights, nil
}

// retryDelay is tasks.RetryDelay, but soon for a run that found its task's
// lease held.
func retryDelay(n int, err error, t *asynq.Task) time.Duration {
	if errors.Is(err, lease.ErrBusy) {
		return lease.BusyRetryDelay
	}
	return tasks.RetryDelay(n, err, t)
}

// busyQuiet keeps lease.ErrBusy out of the failure handler: it is no
// failure, and says so at debug level.
type busyQuiet struct{ h asynq.ErrorHandler }

func (b busyQuiet) HandleError(ctx context.Context, t *asynq.Task, err error) {
	if errors.Is(err, lease.ErrBusy) {
		return
	}
	b.h.HandleError(ctx, t, err)
}

// asynqLogger adapts zap to asynq's logger interface.
type asynqLogger struct{ s *zap.SugaredLogger }

func (l asynqLogger) Debug(args ...any) { l.s.Debug(args...) }
func (l asynqLogger) Info(args ...any)  { l.s.Info(args...) }
func (l asynqLogger) Warn(args ...any)  { l.s.Warn(args...) }
func (l asynqLogger) Error(args ...any) { l.s.Error(args...) }
func (l asynqLogger) Fatal(args ...any) { l.s.Error(args...) }

// fleet counts the fleet's transcode slots from the asynq servers' heartbeats.
type fleet struct{ inspector *asynq.Inspector }

func (f fleet) TranscodeSlots(context.Context) (int, error) {
	servers, err := f.inspector.Servers()
	if err != nil {
		return 0, fmt.Errorf("fleet: %w", err)
	}
	n := 0
	for _, s := range servers {
		if _, ok := s.Queues[tasks.QueueTranscode]; ok && s.Status != "closed" {
			n += s.Concurrency
		}
	}
	return max(n, 1), nil
}
