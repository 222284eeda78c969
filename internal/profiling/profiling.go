// Package profiling sends kiln's continuous profiles to a Pyroscope server
// (grafana/pyroscope-go): CPU, allocations, heap and goroutines, tagged with the process's role, and — through Middleware — the
// CPU samples of each asynq task labelled with its task type.
package profiling

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/grafana/pyroscope-go"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"
)

// DefaultApplicationName is Config.ApplicationName's default.
const DefaultApplicationName = "kiln"

// Config configures the profiler of one process.
type Config struct {
	// ServerURL is the Pyroscope server (e.g. http://pyroscope:4040);
	// profiles go to its /ingest.
	ServerURL string
	// BasicAuthUser and BasicAuthPassword authenticate to the server
	// (both or neither).
	BasicAuthUser, BasicAuthPassword string
	// ApplicationName names the profiles; default DefaultApplicationName.
	ApplicationName string
	// Role tags every profile role=<Role> (serve, ingest, worker or
	// catalog).
	Role string
	// UploadRate is how often profiles are sent; 0: the library's default
	// (15 s).
	UploadRate time.Duration
	// Logger receives the profiler's messages (debug; upload failures as
	// warnings).
	Logger *zap.Logger
}

// Start starts profiling. It runs until ctx ends or stop is called,
// whichever comes first; stop sends what was profiled since the last
// upload and may be called more than once.
func Start(ctx context.Context, cfg Config) (stop func(), err error) {
	if cfg.ServerURL == "" {
		return nil, errors.New("profiling: no server URL")
	}
	if (cfg.BasicAuthUser == "") != (cfg.BasicAuthPassword == "") {
		return nil, errors.New("profiling: basic auth user and password go together")
	}
	tags := map[string]string{}
	if cfg.Role != "" {
		tags["role"] = cfg.Role
	}
	log := cmp.Or(cfg.Logger, zap.NewNop())
	prof, err := pyroscope.Start(pyroscope.Config{
		ApplicationName:   cmp.Or(cfg.ApplicationName, DefaultApplicationName),
		ServerAddress:     cfg.ServerURL,
		BasicAuthUser:     cfg.BasicAuthUser,
		BasicAuthPassword: cfg.BasicAuthPassword,
		Tags:              tags,
		UploadRate:        cfg.UploadRate,
		Logger:            logger{log.Sugar()},
		// CPU, allocations and heap (the library's default), and
		// goroutines; mutex and block profiles need process-wide runtime
		// rates kiln does not set.
		ProfileTypes: append(slices.Clone(pyroscope.DefaultProfileTypes), pyroscope.ProfileGoroutines),
	})
	if err != nil {
		return nil, fmt.Errorf("profiling: start: %w", err)
	}
	var once sync.Once
	stopped := make(chan struct{})
	stop = func() {
		once.Do(func() {
			close(stopped)
			_ = prof.Stop() // always nil
		})
	}
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-stopped:
		}
	}()
	return stop, nil
}

// Middleware runs every task's handler under the pprof labels task_type
// (the asynq task type) and queue, which Pyroscope turns into the labels
// of the CPU samples taken while it runs (goroutines the handler starts
// inherit them).
func Middleware() asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			queue, _ := asynq.GetQueueName(ctx)
			var err error
			pyroscope.TagWrapper(ctx, pyroscope.Labels("task_type", t.Type(), "queue", queue), func(ctx context.Context) {
				err = next.ProcessTask(ctx, t)
			})
			return err
		})
	}
}

// logger adapts zap to pyroscope's Logger: its chatter at debug level,
// its errors (failed uploads) as warnings, since profiling never stops
// kiln.
type logger struct{ s *zap.SugaredLogger }

func (l logger) Infof(format string, args ...any)  { l.s.Debugf(format, args...) }
func (l logger) Debugf(format string, args ...any) { l.s.Debugf(format, args...) }
func (l logger) Errorf(format string, args ...any) { l.s.Warnf(format, args...) }
