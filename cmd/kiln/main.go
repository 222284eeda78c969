// Command kiln is the whole pipeline in one binary. Roles:
//
//	kiln serve    all-in-one: embedded NATS, ingest, workers, catalog
//	kiln ingest   upload API + event intake
//	kiln worker   asynq workers (probe, transcode, thumbnails, package)
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/grafana/pyroscope-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/app"
	"github.com/kilnvideo/kiln/internal/httpapi"
)

const usage = `kiln — queue-driven video transcoding

Usage:
  kiln serve     all-in-one: embedded NATS, ingest, workers, catalog (SQLite)
  kiln ingest    upload API and event intake
  kiln worker    media workers (probe, transcode, thumbnails, package)
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
	case "upload", "jobs", "job", "delete":
		return runCLI(args[0], args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown role %q", args[0])
	}
	cfg, logOpts, err := parseFlags(args[0], args[1:], stderr)
	if err != nil {
		return err
	}
	cfg.Roles, cfg.EmbedNATS = roles, embed
	logger, err := newLogger(logOpts.level, logOpts.format)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	cfg.Logger = logger

	if logOpts.pyroscopeURL != "" {
		prof, err := pyroscope.Start(pyroscope.Config{
			ApplicationName: "kiln." + args[0],
			ServerAddress:   logOpts.pyroscopeURL,
			Tags:            map[string]string{"role": args[0]},
		})
		if err != nil {
			return fmt.Errorf("pyroscope: %w", err)
		}
		defer func() { _ = prof.Stop() }()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("starting kiln", zap.String("role", args[0]), zap.String("version", version()))
	return app.Run(ctx, cfg)
}

type logOptions struct{ level, format, pyroscopeURL string }

// parseFlags defines every flag with its KILN_* fallback.
func parseFlags(role string, args []string, stderr io.Writer) (app.Config, logOptions, error) {
	fs := flag.NewFlagSet("kiln "+role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg app.Config
	var lo logOptions
	var apiKeys, signingKey string
	str := func(p *string, name, env, def, help string) {
		fs.StringVar(p, name, envOr(env, def), help+" ($"+env+")")
	}
	str(&cfg.HTTPAddr, "http-addr", "KILN_HTTP_ADDR", "127.0.0.1:8700", "HTTP listen address (API, playback, health)")
	str(&cfg.PublicURL, "public-url", "KILN_PUBLIC_URL", "", "externally visible base URL (default http://<http-addr>)")
	// No env default for the keys: -help must not print them.
	fs.StringVar(&apiKeys, "api-keys", "", "comma-separated bearer API keys: key (write), key:read, key:write or name=key:scope ($KILN_API_KEYS)")
	floatFlag(fs, &cfg.APIRateLimit, "api-rate-limit", "KILN_API_RATE_LIMIT", httpapi.DefaultRateLimit, "requests/second each API key may make (0 = unlimited)")
	intFlag(fs, &cfg.APIRateBurst, "api-rate-burst", "KILN_API_RATE_BURST", httpapi.DefaultRateBurst, "requests an API key may make at once above its rate")
	str(&cfg.NATSURL, "nats-url", "KILN_NATS_URL", "nats://127.0.0.1:4700", "NATS server URL (ingest/worker/catalog roles)")
	str(&cfg.NATSListen, "nats-listen", "KILN_NATS_LISTEN", "127.0.0.1:4700", "embedded NATS listen address (serve)")
	str(&cfg.NATSStoreDir, "nats-store-dir", "KILN_NATS_STORE_DIR", "data/nats", "embedded NATS JetStream store (serve)")
	str(&cfg.RedisAddr, "redis-addr", "KILN_REDIS_ADDR", "127.0.0.1:6379", "Redis address for asynq")
	str(&cfg.RedisPassword, "redis-password", "KILN_REDIS_PASSWORD", "", "Redis password")
	intFlag(fs, &cfg.RedisDB, "redis-db", "KILN_REDIS_DB", 0, "Redis database number")
	str(&cfg.S3.Endpoint, "s3-endpoint", "KILN_S3_ENDPOINT", "127.0.0.1:9000", "S3 endpoint host:port")
	str(&cfg.S3.AccessKey, "s3-access-key", "KILN_S3_ACCESS_KEY", "", "S3 access key")
	str(&cfg.S3.SecretKey, "s3-secret-key", "KILN_S3_SECRET_KEY", "", "S3 secret key")
	str(&cfg.S3.Region, "s3-region", "KILN_S3_REGION", "us-east-1", "S3 region")
	boolFlag(fs, &cfg.S3.Secure, "s3-secure", "KILN_S3_SECURE", false, "use https for S3")
	str(&cfg.SourcesBucket, "sources-bucket", "KILN_SOURCES_BUCKET", "kiln-sources", "bucket of uploaded sources")
	str(&cfg.OutputsBucket, "outputs-bucket", "KILN_OUTPUTS_BUCKET", "kiln-outputs", "bucket of renditions, playlists, thumbnails")
	str(&cfg.NotifyARN, "s3-notify-arn", "KILN_S3_NOTIFY_ARN", "", "notification target for object-created events on the sources bucket, e.g. arn:minio:sqs::KILN:nats")
	str(&cfg.Database, "database", "KILN_DATABASE", "data/kiln.db", "catalog SQLite file")
	str(&signingKey, "playback-signing-key", "KILN_PLAYBACK_SIGNING_KEY", "", "secret (16+ bytes) signing playback tokens of assets uploaded with playback_policy=signed (catalog)")
	durFlag(fs, &cfg.PlaybackTokenTTL, "playback-token-ttl", "KILN_PLAYBACK_TOKEN_TTL", 24*time.Hour, "lifetime of the token in a signed asset's playback URLs (catalog)")
	str(&cfg.PlaybackDelivery, "playback-delivery", "KILN_PLAYBACK_DELIVERY", "redirect", "segments, MP4 and poster: redirect (to presigned S3 URLs) or proxy (streamed by the catalog)")
	var webhookSchedule string
	str(&cfg.WebhookSecret, "webhook-secret", "KILN_WEBHOOK_SECRET", "", "whsec_… secret signing per-upload webhooks (catalog); without it they are not delivered")
	str(&webhookSchedule, "webhook-retry-schedule", "KILN_WEBHOOK_RETRY_SCHEDULE", "", "comma-separated delays before each webhook retry (default 5s,5m,30m,2h,5h,10h,14h,20h,24h)")
	boolFlag(fs, &cfg.WebhookAllowLoopback, "webhook-allow-loopback", "KILN_WEBHOOK_ALLOW_LOOPBACK", false, "let webhook deliveries reach loopback addresses (development, tests)")
	str(&cfg.WorkDir, "work-dir", "KILN_WORK_DIR", os.TempDir(), "worker temp folder")
	str(&cfg.PresetsFile, "presets-file", "KILN_PRESETS_FILE", "", "JSON file with extra encoding presets (an array; see README)")
	int64Flag(fs, &cfg.Limits.MaxBytes, "max-source-bytes", "KILN_MAX_SOURCE_BYTES", 20<<30, "largest source a worker accepts")
	durFlag(fs, &cfg.Limits.MaxDuration, "max-duration", "KILN_MAX_DURATION", 6*time.Hour, "longest source a worker accepts")
	intFlag(fs, &cfg.Limits.MaxWidth, "max-width", "KILN_MAX_WIDTH", 8192, "widest source picture a worker accepts")
	intFlag(fs, &cfg.Limits.MaxHeight, "max-height", "KILN_MAX_HEIGHT", 8192, "tallest source picture a worker accepts")
	intFlag(fs, &cfg.Concurrency, "concurrency", "KILN_CONCURRENCY", 2, "tasks run at once by one worker; 0 runs serve without workers")
	str(&cfg.FFmpegPath, "ffmpeg", "KILN_FFMPEG", "ffmpeg", "ffmpeg binary")
	str(&cfg.FFprobePath, "ffprobe", "KILN_FFPROBE", "ffprobe", "ffprobe binary")
	intFlag(fs, &cfg.FFmpegThreads, "ffmpeg-threads", "KILN_FFMPEG_THREADS", 0, "threads per ffmpeg encode (0 = ffmpeg decides)")
	str(&cfg.X264Preset, "x264-preset", "KILN_X264_PRESET", "veryfast", "x264 speed preset")
	int64Flag(fs, &cfg.MaxUploadBytes, "max-upload-bytes", "KILN_MAX_UPLOAD_BYTES", 10<<30, "largest accepted upload")
	durFlag(fs, &cfg.ShutdownTimeout, "shutdown-timeout", "KILN_SHUTDOWN_TIMEOUT", 25*time.Second, "time for running tasks to finish on SIGTERM")
	str(&lo.level, "log-level", "KILN_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&lo.format, "log-format", "KILN_LOG_FORMAT", "json", "json or console")
	str(&lo.pyroscopeURL, "pyroscope-url", "KILN_PYROSCOPE_URL", "", "send continuous profiles to this Pyroscope server")
	if err := fs.Parse(args); err != nil {
		return cfg, lo, err
	}
	if fs.NArg() > 0 {
		return cfg, lo, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if apiKeys == "" {
		apiKeys = os.Getenv("KILN_API_KEYS")
	}
	keys, err := httpapi.ParseKeys(apiKeys)
	if err != nil {
		return cfg, lo, fmt.Errorf("-api-keys / KILN_API_KEYS: %w", err)
	}
	cfg.APIKeys = keys
	if cfg.WebhookRetrySchedule, err = webhooks.ParseSchedule(webhookSchedule); err != nil {
		return cfg, lo, err
	}
	if cfg.WebhookSecret = strings.TrimSpace(cfg.WebhookSecret); cfg.WebhookSecret != "" {
		if _, err := webhooks.ParseSecret(cfg.WebhookSecret); err != nil {
			return cfg, lo, fmt.Errorf("webhook secret: %w", err)
		}
	}
	if signingKey = strings.TrimSpace(signingKey); signingKey != "" {
		cfg.PlaybackSigningKey = []byte(signingKey)
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + cfg.HTTPAddr
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if cfg.Concurrency < 0 || (cfg.Concurrency == 0 && role == "worker") {
		return cfg, lo, fmt.Errorf("concurrency %d: a worker needs at least 1", cfg.Concurrency)
	}
	if len(cfg.APIKeys) == 0 && role != "worker" {
		return cfg, lo, errors.New("no API key configured: set -api-keys or KILN_API_KEYS")
	}
	return cfg, lo, nil
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func floatFlag(fs *flag.FlagSet, p *float64, name, env string, def float64, help string) {
	if v, err := strconv.ParseFloat(os.Getenv(env), 64); err == nil {
		def = v
	}
	fs.Float64Var(p, name, def, help+" ($"+env+")")
}

func intFlag(fs *flag.FlagSet, p *int, name, env string, def int, help string) {
	if v, err := strconv.Atoi(os.Getenv(env)); err == nil {
		def = v
	}
	fs.IntVar(p, name, def, help+" ($"+env+")")
}

func int64Flag(fs *flag.FlagSet, p *int64, name, env string, def int64, help string) {
	if v, err := strconv.ParseInt(os.Getenv(env), 10, 64); err == nil {
		def = v
	}
	fs.Int64Var(p, name, def, help+" ($"+env+")")
}

func boolFlag(fs *flag.FlagSet, p *bool, name, env string, def bool, help string) {
	if v, err := strconv.ParseBool(os.Getenv(env)); err == nil {
		def = v
	}
	fs.BoolVar(p, name, def, help+" ($"+env+")")
}

func durFlag(fs *flag.FlagSet, p *time.Duration, name, env string, def time.Duration, help string) {
	if v, err := time.ParseDuration(os.Getenv(env)); err == nil {
		def = v
	}
	fs.DurationVar(p, name, def, help+" ($"+env+")")
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
