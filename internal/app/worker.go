package app

import (
	"context"
	"fmt"
	"os"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/lease"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/packager"
	"github.com/kilnvideo/kiln/workers"
)

// worker runs the asynq server of every stage (probe, transcode,
// thumbnail, package) and the webhook deliveries; with concurrency 0 (serve
// without workers) it runs nothing.
func (p *process) worker(ctx context.Context) error {
	cfg := p.cfg
	if cfg.Concurrency <= 0 {
		return nil
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
	runner := ffmpeg.New(ffmpeg.Config{FFmpegPath: cfg.FFmpegPath, FFprobePath: cfg.FFprobePath, MaxMemory: cfg.FFmpegMaxMemory, Logger: p.log})
	mux := asynq.NewServeMux()
	leases := lease.Config{Redis: p.redis, TTL: cfg.TaskLease, Logger: p.log.Named("lease")}
	counts := &lease.Counts{}
	p.collectors = append(p.collectors, counts)
	mux.Use(cancel.Middleware(p.cancel), lease.Middleware(leases, counts))
	workers.New(workers.Config{
		FFmpeg: runner, Objects: p.objects, Events: p.bus, Queue: p.queue, Jobs: p.cancel,
		OutputsBucket: cfg.OutputsBucket, WorkDir: workDir, Threads: cfg.FFmpegThreads,
		Presets: presets, Limits: cfg.Limits, X264Preset: cfg.X264Preset, Logger: p.log.Named("worker"),
	}).Register(mux)
	packager.New(packager.Config{
		FFmpeg: runner, Objects: p.objects, Events: p.bus, OutputsBucket: cfg.OutputsBucket, Jobs: p.cancel,
		WorkDir: workDir, Logger: p.log.Named("packager"),
	}).Register(mux)
	webhooks.NewDeliverer(webhooks.DelivererConfig{
		AllowLoopback: cfg.WebhookAllowLoopback, Logger: p.log.Named("webhooks"),
	}).Register(mux)
	srv := asynq.NewServer(p.redisOpt(), asynq.Config{
		Concurrency:     cfg.Concurrency,
		Queues:          tasks.QueueWeights(),
		RetryDelayFunc:  tasks.RetryDelay,
		ErrorHandler:    &tasks.FailureHandler{Events: p.bus, Logger: p.log.Named("worker")},
		ShutdownTimeout: cfg.ShutdownTimeout,
		Logger:          asynqLogger{p.log.Named("asynq").Sugar()},
		BaseContext:     func() context.Context { return ctx },
	})
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("asynq server: %w", err)
	}
	p.g.Go(func() error {
		<-ctx.Done()
		srv.Shutdown()
		return nil
	})
	p.g.Go(func() error {
		lease.NewRescuer(leases, p.inspector, p.queue, counts).Run(ctx)
		return nil
	})
	return nil
}

// asynqLogger adapts zap to asynq's logger interface.
type asynqLogger struct{ s *zap.SugaredLogger }

func (l asynqLogger) Debug(args ...any) { l.s.Debug(args...) }
func (l asynqLogger) Info(args ...any)  { l.s.Info(args...) }
func (l asynqLogger) Warn(args ...any)  { l.s.Warn(args...) }
func (l asynqLogger) Error(args ...any) { l.s.Error(args...) }
func (l asynqLogger) Fatal(args ...any) { l.s.Error(args...) }
