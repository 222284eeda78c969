// Package app wires kiln's roles — ingest, worker, catalog, or all of them
// with an embedded NATS server ("serve") — from one Config and runs them
// until the context ends.
package app

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/ingest"
	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/metrics"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/webui"
	"github.com/kilnvideo/kiln/packager"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

// Role is a part of kiln a process runs.
type Role string

// Roles.
const (
	RoleIngest  Role = "ingest"
	RoleWorker  Role = "worker"
	RoleCatalog Role = "catalog"
)

func (c *Config) has(r Role) bool { return slices.Contains(c.Roles, r) }

// Run runs the configured roles until ctx ends or one of them fails.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if cfg.WorkDir != "" {
		if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
	}
	natsURL := cfg.NATSURL
	if cfg.EmbedNATS {
		ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: cfg.NATSListen, StoreDir: cfg.NATSStoreDir, Logger: log})
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		natsURL = ns.ClientURL()
		log.Info("embedded NATS listening", zap.String("url", natsURL))
	}
	b, err := bus.Connect(ctx, bus.Config{URL: natsURL, Name: "kiln-" + roleNames(cfg.Roles), Logger: log})
	if err != nil {
		return err
	}
	defer b.Close()

	objects, err := objstore.New(cfg.S3)
	if err != nil {
		return err
	}
	redisOpt := asynq.RedisClientOpt{Addr: cfg.RedisAddr, Password: cfg.RedisPassword, DB: cfg.RedisDB}
	client := asynq.NewClient(redisOpt)
	defer client.Close()
	inspector := asynq.NewInspector(redisOpt)
	defer inspector.Close()

	runner := ffmpeg.New(ffmpeg.Config{FFmpegPath: cfg.FFmpegPath, FFprobePath: cfg.FFprobePath, Logger: log})
	presets, err := workers.LoadPresets(cfg.PresetsFile)
	if err != nil {
		return err
	}
	canceler := &tasks.Canceler{Redis: tasks.NewRedisClient(redisOpt), Inspector: inspector, Events: b, Logger: log.Named("cancel")}
	defer canceler.Redis.Close()
	keys, err := httpapi.NewKeySet(httpapi.KeysConfig{Keys: cfg.APIKeys, RateLimit: cfg.APIRateLimit, Burst: cfg.APIRateBurst})
	if err != nil {
		return err
	}
	var storageReady atomic.Bool

	g, ctx := errgroup.WithContext(ctx)
	mux := http.NewServeMux()
	checks := map[string]func(context.Context) error{
		"nats":  b.Ping,
		"redis": func(ctx context.Context) error { _, err := inspector.Queues(); return err },
		"storage": func(ctx context.Context) error {
			if !storageReady.Load() {
				return errors.New("buckets not set up yet")
			}
			return objects.Ping(ctx, cfg.SourcesBucket, cfg.OutputsBucket)
		},
	}

	// Storage setup waits for the object store: in the local stack MinIO
	// starts after kiln, because it needs kiln's NATS for notifications.
	g.Go(func() error {
		if err := setupStorage(ctx, objects, cfg, log); err != nil {
			return err
		}
		storageReady.Store(true)
		return nil
	})

	if cfg.has(RoleIngest) {
		in := ingest.New(ingest.Config{
			Objects: objects, Events: b, Queue: client,
			SourcesBucket: cfg.SourcesBucket, PublicURL: cfg.PublicURL,
			MaxUploadBytes: cfg.MaxUploadBytes, Presets: workers.PresetNames(presets), Logger: log.Named("ingest"),
			Idempotency: &ingest.RedisIdempotency{Redis: canceler.Redis}, Remover: objects, Presigner: objects,
		})
		mux.Handle("/v1/uploads", keys.Require(in.Handler()))
		mux.Handle("/v1/direct-uploads", keys.Require(in.Handler()))
		g.Go(func() error {
			return b.Consume(ctx, bus.ConsumerConfig{
				Durable:  "ingest",
				Subjects: []string{bus.SubjectObjectLanded, bus.SubjectS3Events},
			}, in.HandleMessage)
		})
	}

	if cfg.has(RoleCatalog) {
		store, err := catalog.OpenSQLite(ctx, cfg.Database)
		if err != nil {
			return err
		}
		defer store.Close()
		retrier := &tasks.Retrier{Queue: client, Canceler: canceler, Events: b}
		cat, err := catalog.New(catalog.Config{
			Store: store, Objects: objects, PublicURL: cfg.PublicURL, APIKeys: keys, Logger: log.Named("catalog"),
			SigningKey: cfg.PlaybackSigningKey, TokenTTL: cfg.PlaybackTokenTTL, Delivery: cfg.PlaybackDelivery,
			Canceler: canceler, Retrier: retrier, RenditionRetrier: retrier,
			Remover: objects, OutputsBucket: cfg.OutputsBucket,
		})
		if err != nil {
			return err
		}
		h := cat.Handler()
		mux.Handle("/v1/jobs", h)
		mux.Handle("/v1/jobs/", h)
		mux.Handle("/v1/openapi.json", h)
		mux.Handle("/v1/assets/", h)
		mux.Handle("/v1/play/", h)
		wh, err := webhooks.New(ctx, webhooks.Config{
			DB: store.DB(), Queue: client, Tasks: inspector, APIKeys: keys, PublicURL: cfg.PublicURL,
			DefaultSecret: cfg.WebhookSecret, RetrySchedule: cfg.WebhookRetrySchedule, Logger: log.Named("webhooks"),
		})
		if err != nil {
			return err
		}
		store.OnApply(wh.OnApply) // the outbox: before any event is applied
		store.OnDelete(wh.AssetDeleted)
		whh := wh.Handler()
		mux.Handle("/v1/webhooks", whh)
		mux.Handle("/v1/webhooks/", whh)
		mux.Handle("/v1/webhook-events/", whh)
		g.Go(func() error { return wh.Run(ctx) })
		g.Go(func() error {
			return b.Consume(ctx, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}},
				func(ctx context.Context, _ string, data []byte) error {
					var ev kilnv1.JobEvent
					if err := proto.Unmarshal(data, &ev); err != nil {
						return fmt.Errorf("catalog: %w: %w", bus.ErrPermanent, err)
					}
					if err := cat.HandleEvent(ctx, &ev); errors.Is(err, catalog.ErrInvalidEvent) {
						return fmt.Errorf("%w: %w", bus.ErrPermanent, err)
					} else if err != nil {
						return err
					}
					return nil
				})
		})
	}

	if cfg.has(RoleWorker) && cfg.Concurrency > 0 {
		workDir, err := workers.PrepareWorkDir(cfg.WorkDir, log)
		if err != nil {
			return err
		}
		defer os.RemoveAll(workDir)
		srvMux := asynq.NewServeMux()
		srvMux.Use(tasks.CancelMiddleware(canceler))
		workers.New(workers.Config{
			FFmpeg: runner, Objects: objects, Events: b, Queue: client, Jobs: canceler,
			OutputsBucket: cfg.OutputsBucket, WorkDir: workDir, Threads: cfg.FFmpegThreads,
			Presets: presets, Limits: cfg.Limits, X264Preset: cfg.X264Preset, Logger: log.Named("worker"),
		}).Register(srvMux)
		packager.New(packager.Config{
			FFmpeg: runner, Objects: objects, Events: b, OutputsBucket: cfg.OutputsBucket, Jobs: canceler,
			WorkDir: workDir, Logger: log.Named("packager"),
		}).Register(srvMux)
		webhooks.NewDeliverer(webhooks.DelivererConfig{
			AllowLoopback: cfg.WebhookAllowLoopback, Logger: log.Named("webhooks"),
		}).Register(srvMux)
		srv := asynq.NewServer(redisOpt, asynq.Config{
			Concurrency:     cfg.Concurrency,
			Queues:          tasks.QueueWeights(),
			RetryDelayFunc:  tasks.RetryDelay,
			ErrorHandler:    &tasks.FailureHandler{Events: b, Logger: log.Named("worker")},
			ShutdownTimeout: cfg.ShutdownTimeout,
			Logger:          asynqLogger{log.Named("asynq").Sugar()},
			BaseContext:     func() context.Context { return ctx },
		})
		if err := srv.Start(srvMux); err != nil {
			return fmt.Errorf("asynq server: %w", err)
		}
		g.Go(func() error {
			<-ctx.Done()
			srv.Shutdown()
			return nil
		})
	}

	mux.Handle("GET /metrics", metrics.Handler(inspector, slices.Collect(maps.Keys(tasks.QueueWeights()))))
	mux.Handle(webui.Prefix, webui.Handler()) // browser UI; the page sends the key the user types
	mux.Handle("GET /{$}", http.RedirectHandler(webui.Prefix, http.StatusFound))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		status, code := map[string]string{}, http.StatusOK
		for name, check := range checks {
			cctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			if err := check(cctx); err != nil {
				status[name], code = err.Error(), http.StatusServiceUnavailable
			} else {
				status[name] = "ok"
			}
			cancel()
		}
		httpapi.WriteJSON(w, code, status)
	})
	server := &http.Server{
		Addr:              cfg.HTTPAddr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	log.Info("kiln listening", zap.String("addr", ln.Addr().String()), zap.String("public_url", cfg.PublicURL),
		zap.String("roles", roleNames(cfg.Roles)))
	g.Go(func() error {
		if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return server.Shutdown(sctx)
	})
	return g.Wait()
}

// setupStorage creates the buckets and the bucket notification, retrying
// until the object store answers or ctx ends.
func setupStorage(ctx context.Context, objects *objstore.Client, cfg Config, log *zap.Logger) error {
	delay := 250 * time.Millisecond
	for {
		err := objects.EnsureBuckets(ctx, cfg.SourcesBucket, cfg.OutputsBucket)
		if err == nil && cfg.NotifyARN != "" && cfg.has(RoleIngest) {
			err = objects.NotifyObjectCreated(ctx, cfg.SourcesBucket, cfg.NotifyARN)
		}
		if err == nil {
			log.Info("storage ready", zap.String("sources", cfg.SourcesBucket), zap.String("outputs", cfg.OutputsBucket))
			return nil
		}
		log.Info("waiting for object storage", zap.Error(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func roleNames(roles []Role) string {
	var s []string
	for _, r := range roles {
		s = append(s, string(r))
	}
	return strings.Join(s, "+")
}

// asynqLogger adapts zap to asynq's logger interface.
type asynqLogger struct{ s *zap.SugaredLogger }

func (l asynqLogger) Debug(args ...any) { l.s.Debug(args...) }
func (l asynqLogger) Info(args ...any)  { l.s.Info(args...) }
func (l asynqLogger) Warn(args ...any)  { l.s.Warn(args...) }
func (l asynqLogger) Error(args ...any) { l.s.Error(args...) }
func (l asynqLogger) Fatal(args ...any) { l.s.Error(args...) }
