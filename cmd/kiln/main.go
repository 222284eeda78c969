// Command kiln is the whole pipeline in one binary. Roles:
//
//	kiln serve    all-in-one: embedded NATS, ingest, workers, catalog
//	kiln ingest   upload API + event intake
//	kiln worker   asynq workers (probe, transcode with thumbnails, the MP4 download)
//	kiln catalog  state store, REST API, playback
//
// Every flag has a KILN_* environment variable fallback; see -help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kilnvideo/kiln/internal/app"
	"github.com/kilnvideo/kiln/internal/profiling"
	"github.com/kilnvideo/kiln/internal/tracing"
)

const usage = `kiln — queue-driven video transcoding

Usage:
  kiln serve     all-in-one: embedded NATS, ingest, workers, catalog (SQLite)
  kiln ingest    upload API and event intake
  kiln worker    media workers (probe, transcode with thumbnails, the MP4 download)
  kiln catalog   state store, REST API and playback
  kiln version   print the version

Run "kiln <role> -help" for the flags; each flag falls back to its KILN_* variable.
` + cliUsage

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "kiln:", err)
		os.Exit(exitCode(err))
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing role")
	}
	var roles []app.Role
	embed := false
	switch args[0] {
	case "serve":
		roles, embed = []app.Role{app.RoleIngest, app.RoleWorker, app.RoleCatalog}, true
	case "ingest", "worker", "catalog":
		roles = []app.Role{app.Role(args[0])}
	case "version":
		fmt.Fprintln(stdout, version())
		return nil
	case "upload", "jobs", "job", "delete", "dead-letters", "tenants", "keys", "usage":
		return runCLI(args[0], args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown role %q", args[0])
	}
	cfg, err := parseFlags(args[0], args[1:], stderr)
	if err != nil {
		return err
	}
	cfg.Roles, cfg.EmbedNATS = roles, embed
	logger, err := newLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	cfg.Logger = logger

	if cfg.PyroscopeURL != "" {
		// Not the signal's context: a draining worker is profiled too.
		stopProfiling, err := profiling.Start(context.Background(), profiling.Config{
			ServerURL: cfg.PyroscopeURL, BasicAuthUser: cfg.PyroscopeUser, BasicAuthPassword: cfg.PyroscopePassword,
			Role: args[0], Logger: logger.Named("pyroscope"),
		})
		if err != nil {
			return err
		}
		defer stopProfiling()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Tracing: on only when the OTEL_* variables ask for it.
	roleList := make([]string, len(roles))
	for i, r := range roles {
		roleList[i] = string(r)
	}
	tp, shutdownTracing, err := tracing.Setup(ctx, tracing.Config{Service: "kiln-" + args[0], Version: version(), Roles: roleList, Logger: logger})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(sctx); err != nil {
			logger.Warn("tracing: flushing spans", zap.Error(err))
		}
	}()
	cfg.TracerProvider = tp

	logger.Info("starting kiln", zap.String("role", args[0]), zap.String("version", version()))
	return app.Run(ctx, cfg)
}

func newLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	var zc zap.Config
	switch format {
	case "json":
		zc = zap.NewProductionConfig()
	case "console":
		zc = zap.NewDevelopmentConfig()
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.DisableStacktrace = true
	return zc.Build()
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}
