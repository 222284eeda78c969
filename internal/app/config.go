package app

import (
	"os"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/ingest"
	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/lease"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/workers"
)

// Config is everything a kiln process needs; main fills it from flags and
// KILN_* environment variables.
type Config struct {
	Roles []Role
	// EmbedNATS starts an in-process NATS server on NATSListen.
	EmbedNATS    bool
	NATSListen   string
	NATSStoreDir string
	NATSURL      string
	// NATS credentials and TLS of the ingest, worker and catalog roles
	// (bus.Config): a user and password, a token or a creds file; a CA
	// file, a client certificate and key.
	NATSUser, NATSPassword string
	NATSToken              string
	NATSCredsFile          string
	// NATSStreamReplicas is the copies a NATS cluster keeps of kiln's
	// streams (bus.Config.StreamReplicas).
	NATSStreamReplicas        int
	NATSCAFile                string
	NATSCertFile, NATSKeyFile string
	// NATSUserPasswords are the passwords of the embedded server's users
	// other processes connect as (serve): the object store's notifications
	// and separate ingest, worker or catalog processes. A user without a
	// password does not exist; serve itself connects as bus.UserServe with
	// a password made at each start.
	NATSUserPasswords NATSUserPasswords

	HTTPAddr  string
	PublicURL string
	// APIKeys are the bearer keys with their scopes (httpapi.ParseKeys).
	APIKeys []httpapi.APIKey
	// APIRateLimit is each key's sustained requests/second (0: unlimited),
	// APIRateBurst the requests it may make at once.
	APIRateLimit float64
	APIRateBurst int
	// AuthFailures is how many failed authentications a client address may
	// make a minute before it is throttled (0: never).
	AuthFailures int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client (rate limits and throttling are per client address).
	TrustedProxies httpapi.Proxies
	// PlaybackRateLimit is each client address's sustained requests/second
	// on the open playback routes (0: unlimited), PlaybackRateBurst the
	// requests it may make at once (catalog).
	PlaybackRateLimit float64
	PlaybackRateBurst int

	// HTTPReadTimeout bounds reading a request, body included (uploads get
	// UploadProgressTimeout instead); HTTPIdleTimeout how long a keep-alive
	// connection may wait for its next request.
	HTTPReadTimeout time.Duration
	HTTPIdleTimeout time.Duration
	// UploadProgressTimeout is how long an upload body may send nothing
	// before it is cut (ingest).
	UploadProgressTimeout time.Duration
	// SSEMaxStreamsPerKey bounds the open event streams of one API key
	// (catalog).
	SSEMaxStreamsPerKey int

	RedisAddr     string
	RedisUsername string
	RedisPassword string
	RedisDB       int
	// RedisTLS connects to Redis over TLS, verifying its certificate with
	// RedisCAFile (default: the system's roots).
	RedisTLS    bool
	RedisCAFile string

	S3            objstore.Config
	SourcesBucket string
	OutputsBucket string
	// NotifyARN, when set, makes ingest configure the sources bucket to
	// publish object-created events to this notification target.
	NotifyARN string

	Database string
	WorkDir  string

	// PlaybackSigningKey signs playback tokens of signed assets (catalog).
	PlaybackSigningKey []byte
	// PlaybackTokenTTL is the lifetime of tokens in asset playback URLs.
	PlaybackTokenTTL time.Duration
	// PlaybackDelivery is catalog.DeliveryDirect (or its former name
	// catalog.DeliveryRedirect) or catalog.DeliveryProxy.
	PlaybackDelivery string
	// CDNURL is the base URL of a CDN in front of the outputs bucket
	// (catalog.Config.CDNURL).
	CDNURL string

	// WebhookSecret ("whsec_…") signs per-upload webhooks (catalog).
	WebhookSecret string
	// WebhookRetrySchedule is the delay before each webhook retry; nil for
	// webhooks.DefaultRetrySchedule (catalog).
	WebhookRetrySchedule []time.Duration
	// WebhookAllowLoopback lets deliveries reach loopback addresses (worker).
	WebhookAllowLoopback bool

	// ReconcileInterval is the time between two passes of the catalog's
	// reconciler (0 disables it); ReconcileGrace how long a source or a
	// running job may go without news before it acts (catalog).
	ReconcileInterval time.Duration
	ReconcileGrace    time.Duration

	// PresetsFile is a JSON array of extra presets (see workers.Preset).
	PresetsFile string
	// Limits bound the sources workers accept.
	Limits workers.Limits

	// FFmpegPath and FFprobePath name the binaries; default from $PATH.
	FFmpegPath  string
	FFprobePath string
	// FFmpegMaxMemory bounds the address space of each ffmpeg and ffprobe
	// child (RLIMIT_AS, bytes); 0: unbounded.
	FFmpegMaxMemory int64
	// DirectUploadTTL is the lifetime of direct-upload URLs (ingest).
	DirectUploadTTL time.Duration
	// UploadAbortAfter is how long a multipart direct upload may stay
	// incomplete before ingest aborts it.
	UploadAbortAfter time.Duration

	Concurrency int
	// WorkerQueues are the stage queues this worker takes tasks from, with
	// their tasks.QueueWeights; nil: every queue (worker).
	WorkerQueues []string
	// TaskLease is how long a running stage task may go without its
	// worker renewing its lease before another worker runs it (lease).
	TaskLease      time.Duration
	FFmpegThreads  int
	X264Preset     string
	MaxUploadBytes int64

	ShutdownTimeout time.Duration
	// TaskCheckInterval is how long an idle worker waits before it looks
	// at its queues again (asynq's TaskCheckInterval): the latency of each
	// hand-over from one stage to the next when the fleet is idle.
	TaskCheckInterval time.Duration
	// Chunks decides which sources are chunked (workers.ChunkConfig).
	Chunks workers.ChunkConfig
	// TenantWeights are tenants' shares of the transcode fleet (a tenant
	// not named has 1); TenantMaxRunning bounds one tenant's transcode
	// tasks admitted at once (0: only the fleet's slots do). See
	// internal/admission.
	TenantWeights    map[string]int
	TenantMaxRunning int
	Logger           *zap.Logger
	// TracerProvider traces the process (HTTP API, bus, tasks, ffmpeg
	// runs, job events); main builds it from the OTEL_* variables
	// (tracing.Setup). Nil traces nothing.
	TracerProvider trace.TracerProvider

	// LogLevel, LogFormat and the Pyroscope settings are for main, which
	// builds Logger and starts profiling (internal/profiling) from them;
	// Run reads only PyroscopeURL, to label the workers' tasks when set.
	LogLevel     string
	LogFormat    string
	PyroscopeURL string
	// PyroscopeUser and PyroscopePassword are the server's basic auth.
	PyroscopeUser, PyroscopePassword string
}

// DefaultFFmpegMaxMemory is Config.FFmpegMaxMemory's default, 8 GiB of
// address space: a 1080p source encoded into the default ladder needs about
// 1.5 GiB on two cores (threads, and with them stacks and buffers, grow
// with the cores), an 8K HEVC decode several more.
const DefaultFFmpegMaxMemory = 8 << 30

// Defaults returns the configuration of a kiln process given no flag and no
// KILN_* variable: every default value is declared here, or read here from
// the package that applies it to a zero field, and the flags of main show
// and start from these values. Roles, APIKeys, Logger and the fields left
// zero have no default (PublicURL empty means http://<HTTPAddr>).
func Defaults() Config {
	return Config{
		NATSListen:   "127.0.0.1:4700",
		NATSStoreDir: "data/nats",
		NATSURL:      "nats://127.0.0.1:4700",

		HTTPAddr:     "127.0.0.1:8700",
		APIRateLimit: httpapi.DefaultRateLimit,
		APIRateBurst: httpapi.DefaultRateBurst,
		AuthFailures: httpapi.DefaultAuthFailures,

		PlaybackRateLimit: catalog.DefaultPlaybackRateLimit,
		PlaybackRateBurst: catalog.DefaultPlaybackRateBurst,

		HTTPReadTimeout:       DefaultHTTPReadTimeout,
		HTTPIdleTimeout:       DefaultHTTPIdleTimeout,
		UploadProgressTimeout: ingest.DefaultUploadProgressTimeout,
		SSEMaxStreamsPerKey:   catalog.DefaultMaxStreamsPerKey,

		RedisAddr: "127.0.0.1:6379",

		S3:            objstore.Config{Endpoint: "127.0.0.1:9000", Region: objstore.DefaultRegion},
		SourcesBucket: "kiln-sources",
		OutputsBucket: "kiln-outputs",

		Database: "data/kiln.db",
		WorkDir:  os.TempDir(),

		PlaybackTokenTTL: catalog.DefaultTokenTTL,
		PlaybackDelivery: catalog.DeliveryDirect,

		WebhookRetrySchedule: slices.Clone(webhooks.DefaultRetrySchedule),

		ReconcileInterval: time.Minute,
		ReconcileGrace:    2 * time.Minute,

		Limits: workers.DefaultLimits(),

		FFmpegPath:      ffmpeg.DefaultFFmpegPath,
		FFprobePath:     ffmpeg.DefaultFFprobePath,
		FFmpegMaxMemory: DefaultFFmpegMaxMemory,
		DirectUploadTTL: ingest.DefaultDirectUploadTTL,

		UploadAbortAfter: ingest.DefaultUploadAbortAfter,

		Concurrency:        2,
		NATSStreamReplicas: 1,
		TaskLease:          lease.DefaultTTL,
		X264Preset:         workers.DefaultX264Preset,
		MaxUploadBytes:     ingest.DefaultMaxUploadBytes,

		ShutdownTimeout:   25 * time.Second,
		TaskCheckInterval: 25 * time.Millisecond,
		Chunks:            workers.ChunkConfig{Threshold: 5 * time.Minute, Length: workers.DefaultChunkLength, Share: workers.DefaultChunkShare},

		LogLevel:  "info",
		LogFormat: "json",
	}
}

// HTTP server limits (KILN_HTTP_READ_TIMEOUT, KILN_HTTP_IDLE_TIMEOUT); the
// request headers always have httpReadHeaderTimeout.
const (
	DefaultHTTPReadTimeout = 30 * time.Second
	DefaultHTTPIdleTimeout = 2 * time.Minute
	httpReadHeaderTimeout  = 10 * time.Second
)

func (c *Config) has(r Role) bool { return slices.Contains(c.Roles, r) }

// NATSUserPasswords are the passwords of the embedded NATS server's users
// (bus.UserIngest, bus.UserWorker, bus.UserCatalog, bus.UserNotify).
type NATSUserPasswords struct {
	Ingest, Worker, Catalog, Notify string
}

// users are the embedded server's users that have a password.
func (n NATSUserPasswords) users() map[string]string {
	m := map[string]string{}
	for user, pw := range map[string]string{bus.UserIngest: n.Ingest, bus.UserWorker: n.Worker, bus.UserCatalog: n.Catalog, bus.UserNotify: n.Notify} {
		if pw != "" {
			m[user] = pw
		}
	}
	return m
}
