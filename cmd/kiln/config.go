package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/ingest"
	"github.com/kilnvideo/kiln/internal/app"
	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/lease"
)

// roleFlags are the flags of one role. Every flag is bound to a field of cfg,
// which starts as app.Defaults(): the default -help shows is that field's, and
// no default is written here.
type roleFlags struct {
	role     string
	fs       *flag.FlagSet
	settings []setting
	cfg      app.Config
	// Flags that parse converts into cfg once they are known.
	apiKeys, signingKey, webhookSchedule, trustedProxies, workerQueues, tenantWeights string
}

// setting is one flag and its KILN_* variable.
type setting struct {
	name, env string
	// fromEnv parses, checks and stores a (non-empty) value of env.
	fromEnv func(raw string) error
	// check validates the value a command-line flag stored.
	check func() error
}

// parseFlags returns the configuration of role from args and the KILN_*
// variables: a flag on the command line wins over its variable, an empty
// variable counts as unset, and a value that does not parse or is out of range
// is an error naming the flag or variable and the value (secrets excepted).
func parseFlags(role string, args []string, stderr io.Writer) (app.Config, error) {
	return newRoleFlags(role, stderr).parse(args)
}

// newRoleFlags defines the flags of role ("serve", "ingest", "worker" or
// "catalog").
func newRoleFlags(role string, stderr io.Writer) *roleFlags {
	f := &roleFlags{role: role, fs: flag.NewFlagSet("kiln "+role, flag.ContinueOnError), cfg: app.Defaults()}
	f.fs.SetOutput(stderr)
	c := &f.cfg
	serve := role == "serve"
	f.webhookSchedule = formatSchedule(c.WebhookRetrySchedule)

	f.strFlag(&c.HTTPAddr, "http-addr", "KILN_HTTP_ADDR", "HTTP listen address (API, playback, health)", nonEmpty)
	f.strFlag(&c.PublicURL, "public-url", "KILN_PUBLIC_URL", "externally visible base URL (default http://<http-addr>)", validPublicURL)
	f.secretFlag(&f.apiKeys, "api-keys", "KILN_API_KEYS", "comma-separated bearer API keys: key (write), key:read, key:write or name=key:scope", validAPIKeys)
	f.floatFlag(&c.APIRateLimit, "api-rate-limit", "KILN_API_RATE_LIMIT", "requests/second each API key may make (0 = unlimited)", atLeast(0.0))
	f.intFlag(&c.APIRateBurst, "api-rate-burst", "KILN_API_RATE_BURST", "requests an API key may make at once above its rate", atLeast(1))
	f.intFlag(&c.AuthFailures, "auth-failures", "KILN_AUTH_FAILURES", "failed authentications a client address may make a minute before it gets 429 (0 = no throttling)", atLeast(0))
	f.strFlag(&f.trustedProxies, "trusted-proxies", "KILN_TRUSTED_PROXIES", "comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For names the client", validProxies)
	f.floatFlag(&c.PlaybackRateLimit, "playback-rate-limit", "KILN_PLAYBACK_RATE_LIMIT", "requests/second each client address may make to playback routes (catalog; 0 = unlimited)", atLeast(0.0))
	f.intFlag(&c.PlaybackRateBurst, "playback-rate-burst", "KILN_PLAYBACK_RATE_BURST", "playback requests a client address may make at once above its rate (catalog)", atLeast(1))
	f.durFlag(&c.HTTPReadTimeout, "http-read-timeout", "KILN_HTTP_READ_TIMEOUT", "time to read a whole request, body included (uploads excepted)", within(time.Second, time.Hour))
	f.durFlag(&c.HTTPIdleTimeout, "http-idle-timeout", "KILN_HTTP_IDLE_TIMEOUT", "how long an idle keep-alive connection stays open", within(time.Second, time.Hour))
	f.durFlag(&c.UploadProgressTimeout, "upload-progress-timeout", "KILN_UPLOAD_PROGRESS_TIMEOUT", "an upload body that sends nothing for this long is cut (ingest)", within(time.Second, time.Hour))
	f.intFlag(&c.SSEMaxStreamsPerKey, "sse-max-streams-per-key", "KILN_SSE_MAX_STREAMS_PER_KEY", "open job event streams one API key may hold (catalog)", atLeast(1))
	f.strFlag(&c.NATSURL, "nats-url", "KILN_NATS_URL", "NATS server URL (ingest/worker/catalog roles)", when(!serve, nonEmpty))
	f.strFlag(&c.NATSListen, "nats-listen", "KILN_NATS_LISTEN", "embedded NATS listen address (serve)", when(serve, nonEmpty))
	f.strFlag(&c.NATSStoreDir, "nats-store-dir", "KILN_NATS_STORE_DIR", "embedded NATS JetStream store (serve)", when(serve, nonEmpty))
	f.strFlag(&c.NATSUser, "nats-user", "KILN_NATS_USER", "NATS user (ingest/worker/catalog roles; with -nats-password)")
	f.secretFlag(&c.NATSPassword, "nats-password", "KILN_NATS_PASSWORD", "NATS password of -nats-user")
	f.secretFlag(&c.NATSToken, "nats-token", "KILN_NATS_TOKEN", "NATS token, instead of a user (one identity for every role: no per-role permissions)")
	f.strFlag(&c.NATSCredsFile, "nats-creds", "KILN_NATS_CREDS", "NATS creds file (JWT and NKey seed), instead of a user")
	f.intFlag(&c.NATSStreamReplicas, "nats-stream-replicas", "KILN_NATS_STREAM_REPLICAS", "copies a NATS cluster keeps of the streams KILN and KILN_DLQ (set on every start of ingest or the catalog)", between(1, 5))
	f.strFlag(&c.NATSCAFile, "nats-ca", "KILN_NATS_CA", "CA certificates (PEM) verifying the NATS server; requires TLS")
	f.strFlag(&c.NATSCertFile, "nats-cert", "KILN_NATS_CERT", "client certificate (PEM) for NATS, with -nats-key; requires TLS")
	f.strFlag(&c.NATSKeyFile, "nats-key", "KILN_NATS_KEY", "client key (PEM) of -nats-cert")
	f.secretFlag(&c.NATSUserPasswords.Notify, "nats-notify-password", "KILN_NATS_NOTIFY_PASSWORD", "embedded NATS: password of the user notify, which may only publish bucket notifications (the object store's; serve)", when(serve, serverPassword))
	f.secretFlag(&c.NATSUserPasswords.Ingest, "nats-ingest-password", "KILN_NATS_INGEST_PASSWORD", "embedded NATS: password of the user ingest, for separate kiln ingest processes (serve)", when(serve, serverPassword))
	f.secretFlag(&c.NATSUserPasswords.Worker, "nats-worker-password", "KILN_NATS_WORKER_PASSWORD", "embedded NATS: password of the user worker, for separate kiln worker processes (serve)", when(serve, serverPassword))
	f.secretFlag(&c.NATSUserPasswords.Catalog, "nats-catalog-password", "KILN_NATS_CATALOG_PASSWORD", "embedded NATS: password of the user catalog, for a separate kiln catalog process (serve)", when(serve, serverPassword))
	f.strFlag(&c.RedisAddr, "redis-addr", "KILN_REDIS_ADDR", "Redis address for asynq", nonEmpty)
	f.strFlag(&c.RedisUsername, "redis-username", "KILN_REDIS_USERNAME", "Redis ACL user (default: the default user)")
	f.secretFlag(&c.RedisPassword, "redis-password", "KILN_REDIS_PASSWORD", "Redis password")
	f.intFlag(&c.RedisDB, "redis-db", "KILN_REDIS_DB", "Redis database number", atLeast(0))
	f.boolFlag(&c.RedisTLS, "redis-tls", "KILN_REDIS_TLS", "connect to Redis over TLS")
	f.strFlag(&c.RedisCAFile, "redis-ca", "KILN_REDIS_CA", "CA certificates (PEM) verifying Redis (with -redis-tls; default: the system's)")
	f.strFlag(&c.S3.Endpoint, "s3-endpoint", "KILN_S3_ENDPOINT", "S3 endpoint host:port", nonEmpty)
	f.strFlag(&c.S3.AccessKey, "s3-access-key", "KILN_S3_ACCESS_KEY", "S3 access key")
	f.secretFlag(&c.S3.SecretKey, "s3-secret-key", "KILN_S3_SECRET_KEY", "S3 secret key")
	f.strFlag(&c.S3.Region, "s3-region", "KILN_S3_REGION", "S3 region")
	f.boolFlag(&c.S3.Secure, "s3-secure", "KILN_S3_SECURE", "use https for S3")
	f.strFlag(&c.SourcesBucket, "sources-bucket", "KILN_SOURCES_BUCKET", "bucket of uploaded sources", nonEmpty)
	f.strFlag(&c.OutputsBucket, "outputs-bucket", "KILN_OUTPUTS_BUCKET", "bucket of renditions, playlists, thumbnails", nonEmpty)
	f.strFlag(&c.NotifyARN, "s3-notify-arn", "KILN_S3_NOTIFY_ARN", "notification target for object-created events on the sources bucket, e.g. arn:minio:sqs::KILN:nats")
	f.strFlag(&c.Database, "database", "KILN_DATABASE", "catalog database: a SQLite file path, or a postgres:// (postgresql://) URL for PostgreSQL", when(serve || role == "catalog", nonEmpty))
	f.secretFlag(&f.signingKey, "playback-signing-key", "KILN_PLAYBACK_SIGNING_KEY", "secret (16+ bytes) signing playback tokens of assets uploaded with playback_policy=signed (catalog)")
	f.durFlag(&c.PlaybackTokenTTL, "playback-token-ttl", "KILN_PLAYBACK_TOKEN_TTL", "lifetime of the token in a signed asset's playback URLs (catalog)", within(time.Second, catalog.MaxTokenTTL))
	f.strFlag(&c.PlaybackDelivery, "playback-delivery", "KILN_PLAYBACK_DELIVERY", "segments, MP4 and poster: direct (playlists list presigned S3 or CDN URLs; redirect is the same) or proxy (streamed by the catalog)", oneOf(catalog.DeliveryDirect, catalog.DeliveryRedirect, catalog.DeliveryProxy))
	f.strFlag(&c.CDNURL, "cdn-url", "KILN_CDN_URL", "base URL of a CDN in front of the outputs bucket: public assets' playlists list segments at <url>/<object key> (catalog)", catalog.CheckCDNURL)
	f.secretFlag(&c.WebhookSecret, "webhook-secret", "KILN_WEBHOOK_SECRET", "whsec_… secret signing per-upload webhooks (catalog); without it they are not delivered", validWebhookSecret)
	f.strFlag(&f.webhookSchedule, "webhook-retry-schedule", "KILN_WEBHOOK_RETRY_SCHEDULE", "comma-separated delays before each webhook retry", validRetrySchedule)
	f.boolFlag(&c.WebhookAllowLoopback, "webhook-allow-loopback", "KILN_WEBHOOK_ALLOW_LOOPBACK", "let webhook deliveries reach loopback addresses (development, tests)")
	f.durFlag(&c.ReconcileInterval, "reconcile-interval", "KILN_RECONCILE_INTERVAL", "time between two passes of the reconciler, which repairs lost jobs and tasks (catalog; 0 disables it)", offOrWithin(time.Second, 24*time.Hour))
	f.durFlag(&c.ReconcileGrace, "reconcile-grace", "KILN_RECONCILE_GRACE", "how long a source or a running job may go without news before the reconciler acts (catalog)", within(10*time.Second, 24*time.Hour))
	f.strFlag(&c.WorkDir, "work-dir", "KILN_WORK_DIR", "worker temp folder")
	f.strFlag(&c.PresetsFile, "presets-file", "KILN_PRESETS_FILE", "JSON file with extra encoding presets (an array; see README)")
	f.int64Flag(&c.Limits.MaxBytes, "max-source-bytes", "KILN_MAX_SOURCE_BYTES", "largest source a worker accepts", atLeast[int64](1))
	f.durFlag(&c.Limits.MaxDuration, "max-duration", "KILN_MAX_DURATION", "longest source a worker accepts", moreThan[time.Duration](0))
	f.intFlag(&c.Limits.MaxWidth, "max-width", "KILN_MAX_WIDTH", "widest source picture a worker accepts", atLeast(1))
	f.intFlag(&c.Limits.MaxHeight, "max-height", "KILN_MAX_HEIGHT", "tallest source picture a worker accepts", atLeast(1))
	f.intFlag(&c.Concurrency, "concurrency", "KILN_CONCURRENCY", "transcode tasks run at once by one worker, and as many short-stage tasks (probe, package, webhook) beside them; 0 runs serve without workers", concurrency(role))
	f.strFlag(&f.workerQueues, "worker-queues", "KILN_WORKER_QUEUES", "comma-separated queues this worker takes tasks from: probe, transcode, package, webhook (default: all)", validWorkerQueues)
	f.durFlag(&c.TaskLease, "task-lease", "KILN_TASK_LEASE", "a running stage task whose worker stops renewing its lease for this long runs again on another worker (worker)", within(lease.MinTTL, 10*time.Minute))
	f.strFlag(&c.FFmpegPath, "ffmpeg", "KILN_FFMPEG", "ffmpeg binary")
	f.strFlag(&c.FFprobePath, "ffprobe", "KILN_FFPROBE", "ffprobe binary")
	f.intFlag(&c.FFmpegThreads, "ffmpeg-threads", "KILN_FFMPEG_THREADS", "threads per ffmpeg encode (0 = ffmpeg decides)", atLeast(0))
	f.int64Flag(&c.FFmpegMaxMemory, "ffmpeg-max-memory", "KILN_FFMPEG_MAX_MEMORY", "address space (bytes, RLIMIT_AS) each ffmpeg/ffprobe child may use; past it the run fails (resources_exhausted after one retry); 0 = unbounded", offOrAtLeast[int64](256<<20))
	f.durFlag(&c.DirectUploadTTL, "direct-upload-ttl", "KILN_DIRECT_UPLOAD_TTL", "lifetime of direct-upload URLs (ingest)", within(time.Minute, ingest.MaxDirectUploadTTL))
	f.durFlag(&c.UploadAbortAfter, "upload-abort-after", "KILN_UPLOAD_ABORT_AFTER", "a multipart direct upload not completed within this is aborted, its parts deleted (ingest)", within(time.Hour, ingest.MaxUploadAbortAfter))
	f.strFlag(&c.X264Preset, "x264-preset", "KILN_X264_PRESET", "x264 speed preset",
		oneOf("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"))
	f.int64Flag(&c.MaxUploadBytes, "max-upload-bytes", "KILN_MAX_UPLOAD_BYTES", "largest accepted upload", atLeast[int64](1))
	f.durFlag(&c.ShutdownTimeout, "shutdown-timeout", "KILN_SHUTDOWN_TIMEOUT", "time for running tasks to finish on SIGTERM", atLeast[time.Duration](0))
	f.durFlag(&c.Chunks.Threshold, "chunk-threshold", "KILN_CHUNK_THRESHOLD", "sources longer than this are encoded in chunks, in parallel across the fleet (0 = never)", atLeast[time.Duration](0))
	f.durFlag(&c.Chunks.Length, "chunk-length", "KILN_CHUNK_LENGTH", "length of a chunk (whole segments; the first is shorter)", atLeast(6*time.Second))
	f.floatFlag(&c.Chunks.Share, "chunk-share", "KILN_CHUNK_SHARE", "part of the fleet's transcode slots one chunked job may hold at once", fraction)
	f.strFlag(&f.tenantWeights, "tenant-weights", "KILN_TENANT_WEIGHTS", "comma-separated tenant=weight shares of the transcode fleet, e.g. ten_abc=3 (a tenant not named has 1; the default tenant is \"default\") (worker)", validTenantWeights)
	f.intFlag(&c.TenantMaxRunning, "tenant-max-running", "KILN_TENANT_MAX_RUNNING", "transcode tasks one tenant may have admitted to the fleet at once; 0 = only the fleet's slots bound them (worker)", atLeast(0))
	f.durFlag(&c.TaskCheckInterval, "task-check-interval", "KILN_TASK_CHECK_INTERVAL", "how often an idle worker looks at its queues", atLeast(10*time.Millisecond))
	f.strFlag(&c.LogLevel, "log-level", "KILN_LOG_LEVEL", "debug, info, warn or error", validLogLevel)
	f.strFlag(&c.LogFormat, "log-format", "KILN_LOG_FORMAT", "json or console", oneOf("json", "console"))
	f.strFlag(&c.PyroscopeURL, "pyroscope-url", "KILN_PYROSCOPE_URL", "send continuous profiles to this Pyroscope server (off when empty)", validPyroscopeURL)
	f.strFlag(&c.PyroscopeUser, "pyroscope-user", "KILN_PYROSCOPE_USER", "basic auth user of -pyroscope-url")
	f.secretFlag(&c.PyroscopePassword, "pyroscope-password", "KILN_PYROSCOPE_PASSWORD", "basic auth password of -pyroscope-url")
	return f
}

// parse parses args, then the variables of the flags args did not set, and
// finishes the configuration.
func (f *roleFlags) parse(args []string) (app.Config, error) {
	if err := f.fs.Parse(args); err != nil {
		return app.Config{}, err
	}
	if f.fs.NArg() > 0 {
		return app.Config{}, fmt.Errorf("unexpected arguments: %v", f.fs.Args())
	}
	onCommandLine := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { onCommandLine[fl.Name] = true })
	var errs []error
	for _, s := range f.settings {
		if onCommandLine[s.name] {
			errs = append(errs, s.check())
		} else if raw := os.Getenv(s.env); raw != "" {
			errs = append(errs, s.fromEnv(raw))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return app.Config{}, err
	}

	// The values below were checked above; only their conversion is left.
	cfg := f.cfg
	keys, err := httpapi.ParseKeys(f.apiKeys)
	if err != nil {
		return app.Config{}, fmt.Errorf("api keys: %w", err)
	}
	cfg.APIKeys = keys
	if cfg.TrustedProxies, err = httpapi.ParseProxies(f.trustedProxies); err != nil {
		return app.Config{}, err
	}
	if cfg.WebhookRetrySchedule, err = webhooks.ParseSchedule(f.webhookSchedule); err != nil {
		return app.Config{}, err
	}
	cfg.WorkerQueues = splitList(f.workerQueues)
	cfg.TenantWeights, _ = parseTenantWeights(f.tenantWeights)
	cfg.WebhookSecret = strings.TrimSpace(cfg.WebhookSecret)
	if key := strings.TrimSpace(f.signingKey); key != "" {
		cfg.PlaybackSigningKey = []byte(key)
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + cfg.HTTPAddr
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if len(cfg.APIKeys) == 0 && f.role != "worker" {
		return app.Config{}, errors.New("no API key configured: set -api-keys or KILN_API_KEYS")
	}
	if err := checkCredentials(f.role, &cfg); err != nil {
		return app.Config{}, err
	}
	return cfg, nil
}

// checkCredentials checks the settings that only make sense together: NATS
// credentials of one kind, a client certificate with its key, a Redis CA
// with TLS, and two distinct buckets (a source must never pass for an
// output, nor the other way round).
func checkCredentials(role string, cfg *app.Config) error {
	var errs []error
	if role != "serve" {
		kinds := 0
		for _, set := range []bool{cfg.NATSUser != "" || cfg.NATSPassword != "", cfg.NATSToken != "", cfg.NATSCredsFile != ""} {
			if set {
				kinds++
			}
		}
		if kinds > 1 {
			errs = append(errs, errors.New("NATS credentials: set one of KILN_NATS_USER and KILN_NATS_PASSWORD, KILN_NATS_TOKEN or KILN_NATS_CREDS"))
		}
		if (cfg.NATSUser == "") != (cfg.NATSPassword == "") {
			errs = append(errs, errors.New("NATS credentials: KILN_NATS_USER and KILN_NATS_PASSWORD go together"))
		}
		if (cfg.NATSCertFile == "") != (cfg.NATSKeyFile == "") {
			errs = append(errs, errors.New("NATS TLS: KILN_NATS_CERT and KILN_NATS_KEY go together"))
		}
	}
	if (cfg.PyroscopeUser == "") != (cfg.PyroscopePassword == "") {
		errs = append(errs, errors.New("Pyroscope credentials: KILN_PYROSCOPE_USER and KILN_PYROSCOPE_PASSWORD go together"))
	}
	if cfg.RedisCAFile != "" && !cfg.RedisTLS {
		errs = append(errs, errors.New("KILN_REDIS_CA needs KILN_REDIS_TLS=true"))
	}
	if cfg.SourcesBucket == cfg.OutputsBucket {
		errs = append(errs, fmt.Errorf("the sources and outputs buckets must differ (both %q)", cfg.SourcesBucket))
	}
	return errors.Join(errs...)
}

// serverPassword accepts an empty password (no such user) or one long
// enough for the embedded NATS server.
func serverPassword(s string) error {
	if s != "" && len(s) < bus.MinPasswordLength {
		return fmt.Errorf("must be at least %d characters", bus.MinPasswordLength)
	}
	return nil
}

// kind is how a flag of type T is defined, parsed from a variable and shown.
type kind[T any] struct {
	define func(fs *flag.FlagSet, p *T, name string, value T, usage string)
	parse  func(string) (T, error)
	show   func(T) string
}

// add defines the flag name, bound to p with *p as its default, and records
// its variable env. A secret's value is never put in an error.
func add[T any](f *roleFlags, k kind[T], p *T, name, env, help string, secret bool, checks []func(T) error) {
	k.define(f.fs, p, name, *p, help+" ($"+env+")")
	label := func(who string, v string) string {
		if secret {
			return who
		}
		return who + "=" + v
	}
	check := func(v T) error {
		for _, c := range checks {
			if err := c(v); err != nil {
				return err
			}
		}
		return nil
	}
	f.settings = append(f.settings, setting{
		name: name,
		env:  env,
		fromEnv: func(raw string) error {
			v, err := k.parse(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", label(env, strconv.Quote(raw)), err)
			}
			if err := check(v); err != nil {
				return fmt.Errorf("%s: %w", label(env, k.show(v)), err)
			}
			*p = v
			return nil
		},
		check: func() error {
			if err := check(*p); err != nil {
				return fmt.Errorf("%s: %w", label("-"+name, k.show(*p)), err)
			}
			return nil
		},
	})
}

func (f *roleFlags) strFlag(p *string, name, env, help string, checks ...func(string) error) {
	add(f, stringKind(), p, name, env, help, false, checks)
}

// secretFlag is a string flag whose value errors never show.
func (f *roleFlags) secretFlag(p *string, name, env, help string, checks ...func(string) error) {
	add(f, stringKind(), p, name, env, help, true, checks)
}

func (f *roleFlags) intFlag(p *int, name, env, help string, checks ...func(int) error) {
	add(f, kind[int]{(*flag.FlagSet).IntVar, parseInt, strconv.Itoa}, p, name, env, help, false, checks)
}

func (f *roleFlags) int64Flag(p *int64, name, env, help string, checks ...func(int64) error) {
	show := func(n int64) string { return strconv.FormatInt(n, 10) }
	add(f, kind[int64]{(*flag.FlagSet).Int64Var, parseInt64, show}, p, name, env, help, false, checks)
}

func (f *roleFlags) floatFlag(p *float64, name, env, help string, checks ...func(float64) error) {
	show := func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
	add(f, kind[float64]{(*flag.FlagSet).Float64Var, parseFloat, show}, p, name, env, help, false, checks)
}

func (f *roleFlags) boolFlag(p *bool, name, env, help string) {
	add(f, kind[bool]{(*flag.FlagSet).BoolVar, parseBool, strconv.FormatBool}, p, name, env, help, false, nil)
}

func (f *roleFlags) durFlag(p *time.Duration, name, env, help string, checks ...func(time.Duration) error) {
	add(f, kind[time.Duration]{(*flag.FlagSet).DurationVar, parseDuration, shortDuration}, p, name, env, help, false, checks)
}

func stringKind() kind[string] {
	return kind[string]{(*flag.FlagSet).StringVar, func(s string) (string, error) { return s, nil }, strconv.Quote}
}

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	return n, numError(err, "not an integer")
}

func parseInt64(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return n, numError(err, "not an integer")
}

func parseFloat(s string) (float64, error) {
	x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err == nil && (math.IsNaN(x) || math.IsInf(x, 0)) {
		return 0, errors.New("not a finite number")
	}
	return x, numError(err, "not a number")
}

// numError is what a strconv error means to the reader of an error message.
func numError(err error, bad string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, strconv.ErrRange):
		return errors.New("out of range")
	default:
		return errors.New(bad)
	}
}

func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return false, errors.New("not a boolean (want true or false)")
	}
	return b, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, errors.New("not a duration (e.g. 90s, 5m, 2h)")
	}
	return d, nil
}

// number is what the range checks compare.
type number interface {
	~int | ~int64 | ~float64
}

func atLeast[T number](lo T) func(T) error {
	return func(v T) error {
		if v < lo {
			return fmt.Errorf("must be at least %v", lo)
		}
		return nil
	}
}

// offOrAtLeast is atLeast, except that 0 (off) is allowed too.
func offOrAtLeast[T number](lo T) func(T) error {
	return func(v T) error {
		if v != 0 && v < lo {
			return fmt.Errorf("must be 0 (off) or at least %v", lo)
		}
		return nil
	}
}

func between[T number](lo, hi T) func(T) error {
	return func(v T) error {
		if v < lo || v > hi {
			return fmt.Errorf("must be %v to %v", lo, hi)
		}
		return nil
	}
}

func moreThan[T number](lo T) func(T) error {
	return func(v T) error {
		if v <= lo {
			return fmt.Errorf("must be more than %v", lo)
		}
		return nil
	}
}

// offOrWithin is within, except that 0 (off) is allowed too.
func offOrWithin(lo, hi time.Duration) func(time.Duration) error {
	return func(d time.Duration) error {
		if d != 0 && (d < lo || d > hi) {
			return fmt.Errorf("must be 0s (off) or from %s to %s", shortDuration(lo), shortDuration(hi))
		}
		return nil
	}
}

func within(lo, hi time.Duration) func(time.Duration) error {
	return func(d time.Duration) error {
		if d < lo || d > hi {
			return fmt.Errorf("must be from %s to %s", shortDuration(lo), shortDuration(hi))
		}
		return nil
	}
}

func oneOf(values ...string) func(string) error {
	return func(s string) error {
		if slices.Contains(values, s) {
			return nil
		}
		return fmt.Errorf("want %s or %s", strings.Join(values[:len(values)-1], ", "), values[len(values)-1])
	}
}

// when applies check only if cond holds (a setting only some roles need).
func when(cond bool, check func(string) error) func(string) error {
	if !cond {
		return func(string) error { return nil }
	}
	return check
}

func nonEmpty(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// concurrency allows 0 (no workers in serve) except for the worker role.
func concurrency(role string) func(int) error {
	return func(n int) error {
		switch {
		case n < 0:
			return errors.New("must be at least 0")
		case n == 0 && role == "worker":
			return errors.New("a worker needs at least 1")
		}
		return nil
	}
}

// validPublicURL accepts an empty value (the default) or what catalog accepts
// as its public URL: an absolute http(s) URL without query or fragment.
func validPublicURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("want an absolute http(s) URL without query or fragment")
	}
	return nil
}

func validLogLevel(s string) error {
	if _, err := zapcore.ParseLevel(s); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	return nil
}

func validAPIKeys(s string) error {
	_, err := httpapi.ParseKeys(s)
	return err
}

func validProxies(s string) error {
	_, err := httpapi.ParseProxies(s)
	return err
}

func validWebhookSecret(s string) error {
	if s = strings.TrimSpace(s); s == "" {
		return nil
	}
	_, err := webhooks.ParseSecret(s)
	return err
}

func validWorkerQueues(s string) error {
	_, err := app.WorkerQueueWeights(splitList(s))
	return err
}

func validTenantWeights(s string) error {
	_, err := parseTenantWeights(s)
	return err
}

// parseTenantWeights parses KILN_TENANT_WEIGHTS: tenant=weight entries,
// each weight a whole number from 1 to 1000; nil for none.
func parseTenantWeights(s string) (map[string]int, error) {
	var out map[string]int
	for _, item := range splitList(s) {
		tenant, w, ok := strings.Cut(item, "=")
		tenant = strings.TrimSpace(tenant)
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if !ok || tenant == "" || err != nil || n < 1 || n > 1000 {
			return nil, fmt.Errorf("entry %q: want tenant=weight, a weight from 1 to 1000", item)
		}
		if _, dup := out[tenant]; dup {
			return nil, fmt.Errorf("tenant %q: named twice", tenant)
		}
		if out == nil {
			out = map[string]int{}
		}
		out[tenant] = n
	}
	return out, nil
}

// splitList is the non-empty, space-trimmed items of a comma-separated
// list; nil for none.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// validPyroscopeURL accepts an empty value (profiling off) or an absolute
// http(s) URL.
func validPyroscopeURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an absolute http(s) URL")
	}
	return nil
}

func validRetrySchedule(s string) error {
	_, err := webhooks.ParseSchedule(s)
	return err
}

// formatSchedule is the -webhook-retry-schedule form of a schedule.
func formatSchedule(schedule []time.Duration) string {
	parts := make([]string, len(schedule))
	for i, d := range schedule {
		parts[i] = shortDuration(d)
	}
	return strings.Join(parts, ",")
}

// shortDuration is d without zero trailing units: 5m, 2h, 1h30m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// fraction accepts a share in (0, 1].
func fraction(v float64) error {
	if v <= 0 || v > 1 {
		return errors.New("must be more than 0 and at most 1")
	}
	return nil
}
