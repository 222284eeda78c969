// Package app wires kiln's roles — ingest, worker, catalog, or all of them
// with an embedded NATS server ("serve") — from one Config and runs them
// until the context ends. Each role has one function (ingest.go, worker.go,
// catalog.go); this file holds what they share: the bus, object storage,
// the queue, the HTTP server and the health checks.
package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/admission"
	"github.com/kilnvideo/kiln/internal/apikeys"
	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/metrics"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/tracing"
	"github.com/kilnvideo/kiln/internal/webui"
)

// Role is a part of kiln a process runs.
type Role string

// Roles.
const (
	RoleIngest  Role = "ingest"
	RoleWorker  Role = "worker"
	RoleCatalog Role = "catalog"
)

// process is what the roles of one kiln process share. Roles add their
// routes to mux, their readiness checks to checks and their long-running
// loops to g; cleanups run in reverse order when Run returns.
type process struct {
	cfg       Config
	log       *zap.Logger
	bus       *bus.Bus
	objects   *objstore.Client
	queue     *asynq.Client
	inspector *asynq.Inspector
	// work is what producers enqueue to: transcode work waits in it for
	// admission to the fleet (internal/admission), the rest goes to queue.
	work   *admission.Queue
	redis  redis.UniversalClient
	cancel *cancel.Service
	keys   *httpapi.Keys
	mux    *http.ServeMux
	checks map[string]func(context.Context) error
	// metrics is the process's registry, served on /metrics: roles
	// register what they count with it.
	metrics *metrics.Registry
	// objectIO counts each role's object storage transfers.
	objectIO *metrics.ObjectBytes
	// rejections counts the bus messages the consumers refuse.
	rejections *metrics.Rejections
	redisTLS   *tls.Config
	g          *errgroup.Group
	cleanups   []func()
}

// onClose registers f to run when Run returns, after what was registered
// later (like defer).
func (p *process) onClose(f func()) { p.cleanups = append(p.cleanups, f) }

// Run runs the configured roles until ctx ends or one of them fails.
func Run(ctx context.Context, cfg Config) (err error) {
	p := &process{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), checks: map[string]func(context.Context) error{}}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	defer func() {
		for _, f := range slices.Backward(p.cleanups) {
			f()
		}
	}()
	var g *errgroup.Group
	g, ctx = errgroup.WithContext(ctx)
	p.g = g
	if err := p.connect(ctx); err != nil {
		return err
	}
	roles := map[Role]func(context.Context) error{RoleIngest: p.ingest, RoleWorker: p.worker, RoleCatalog: p.catalog}
	for _, r := range []Role{RoleIngest, RoleCatalog, RoleWorker} {
		if cfg.has(r) {
			if err := roles[r](ctx); err != nil {
				return err
			}
		}
	}
	if err := p.serveHTTP(ctx); err != nil {
		return err
	}
	return g.Wait()
}

// connect starts the embedded NATS server of `kiln serve` and connects to
// NATS, object storage and Redis.
func (p *process) connect(ctx context.Context) error {
	cfg := p.cfg
	if cfg.WorkDir != "" {
		if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
	}
	natsCfg, err := p.startNATS()
	if err != nil {
		return err
	}
	b, err := bus.Connect(ctx, natsCfg)
	if err != nil {
		return err
	}
	p.bus = b
	p.onClose(b.Close)
	p.checks["nats"] = b.Ping
	p.metrics = metrics.NewRegistry()
	if p.rejections, err = metrics.NewRejections(p.metrics); err != nil {
		return err
	}
	if p.objectIO, err = metrics.NewObjectBytes(p.metrics); err != nil {
		return err
	}

	s3 := cfg.S3
	if s3.PartSize == 0 {
		// An upload streams through one part's buffer: as small as the
		// largest object this process writes allows.
		s3.PartSize = objstore.PartSizeFor(max(cfg.MaxUploadBytes, cfg.Limits.MaxBytes))
	}
	if p.objects, err = objstore.New(s3); err != nil {
		return err
	}
	if cfg.RedisTLS {
		if p.redisTLS, err = redisTLSConfig(cfg.RedisAddr, cfg.RedisCAFile); err != nil {
			return err
		}
	} else if cfg.RedisCAFile != "" {
		return errors.New("redis: a CA file without TLS: enable TLS too")
	}
	if cfg.RedisPassword == "" {
		p.log.Warn("Redis without a password: whoever reaches it can read and write kiln's queues")
	}
	redisOpt := p.redisOpt()
	p.queue = asynq.NewClient(redisOpt)
	p.onClose(func() { _ = p.queue.Close() })
	p.inspector = asynq.NewInspector(redisOpt)
	p.onClose(func() { _ = p.inspector.Close() })
	p.checks["redis"] = func(context.Context) error { _, err := p.inspector.Queues(); return err }
	p.redis = cancel.NewRedisClient(redisOpt)
	p.onClose(func() { _ = p.redis.Close() })
	if p.work, err = admission.New(admission.Config{Redis: p.redis, Next: p.queue, Tasks: p.inspector, Slots: fleet{p.inspector},
		MaxPerTenant: cfg.TenantMaxRunning, Weights: cfg.TenantWeights, Logger: p.log.Named("admission")}); err != nil {
		return err
	}
	p.cancel = &cancel.Service{Redis: p.redis, Inspector: p.inspector, Events: b, Logger: p.log.Named("cancel")}
	if p.keys, err = httpapi.NewKeySet(httpapi.KeysConfig{Keys: cfg.APIKeys, RateLimit: cfg.APIRateLimit, Burst: cfg.APIRateBurst,
		AuthFailures: cfg.AuthFailures, Proxies: cfg.TrustedProxies, Logger: p.log.Named("auth"),
		// Keys made through the tenant API, which the catalog mirrors here.
		Directory: &apikeys.Directory{Redis: p.redis}}); err != nil {
		return err
	}
	if err := p.metrics.Register(p.keys); err != nil { // authentication failures on /metrics
		return err
	}

	// Storage setup waits for the object store, which may start after kiln
	// (or restart): kiln is ready once the buckets and notification are set.
	var storageReady atomic.Bool
	p.checks["storage"] = func(ctx context.Context) error {
		if !storageReady.Load() {
			return errors.New("buckets not set up yet")
		}
		return p.objects.Ping(ctx, cfg.SourcesBucket, cfg.OutputsBucket)
	}
	p.g.Go(func() error {
		if err := p.setupStorage(ctx); err != nil {
			return err
		}
		storageReady.Store(true)
		return nil
	})
	return nil
}

// startNATS starts the embedded NATS server of `kiln serve` and returns
// how this process connects to NATS: to its embedded server as
// bus.UserServe with a password made now (known to this process only),
// else with the configured credentials, under its role's inbox prefix.
func (p *process) startNATS() (bus.Config, error) {
	cfg := p.cfg
	nc := bus.Config{
		URL: cfg.NATSURL, Name: "kiln-" + roleNames(cfg.Roles), Logger: p.log, TracerProvider: cfg.TracerProvider,
		User: cfg.NATSUser, Password: cfg.NATSPassword, Token: cfg.NATSToken, CredsFile: cfg.NATSCredsFile,
		CAFile: cfg.NATSCAFile, CertFile: cfg.NATSCertFile, KeyFile: cfg.NATSKeyFile, StreamReplicas: cfg.NATSStreamReplicas,
	}
	if len(cfg.Roles) == 1 {
		nc.InboxPrefix = bus.InboxPrefix(string(cfg.Roles[0])) // the role's user (bus.Users)
		// A worker's user may not create the streams: ingest or the
		// catalog does.
		nc.WaitForStreams = cfg.Roles[0] == RoleWorker
	}
	if !cfg.EmbedNATS {
		if nc.User == "" && nc.Token == "" && nc.CredsFile == "" {
			p.log.Warn("NATS without credentials: whoever reaches it can publish kiln's facts (see the README, Security)")
		}
		return nc, nil
	}
	password := rand.Text()
	serve, _ := bus.Permissions(bus.UserServe)
	users := []bus.User{{Name: bus.UserServe, Password: password, Permission: &serve}}
	byName := cfg.NATSUserPasswords.users()
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		perm, _ := bus.Permissions(name)
		users = append(users, bus.User{Name: name, Password: byName[name], Permission: &perm})
	}
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: cfg.NATSListen, StoreDir: cfg.NATSStoreDir, Users: users, Logger: p.log})
	if err != nil {
		return bus.Config{}, err
	}
	p.onClose(ns.Shutdown)
	p.log.Info("embedded NATS listening", zap.String("url", ns.ClientURL()),
		zap.Strings("users", slices.Sorted(maps.Keys(byName))))
	return bus.Config{URL: ns.ClientURL(), Name: nc.Name, Logger: p.log, User: bus.UserServe, Password: password,
		InboxPrefix: bus.InboxPrefix(bus.UserServe), TracerProvider: cfg.TracerProvider}, nil
}

func (p *process) redisOpt() asynq.RedisClientOpt {
	return asynq.RedisClientOpt{Addr: p.cfg.RedisAddr, Username: p.cfg.RedisUsername, Password: p.cfg.RedisPassword,
		DB: p.cfg.RedisDB, TLSConfig: p.redisTLS}
}

// redisTLSConfig verifies Redis's certificate for the host of addr with the
// CA certificates of caFile, or the system's roots when it is empty.
func redisTLSConfig(addr, caFile string) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("redis address %q: %w", addr, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("redis CA: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis CA %s: no PEM certificate in it", caFile)
		}
	}
	return c, nil
}

// serveHTTP mounts what every process serves (metrics, web UI, health) and
// runs the HTTP server until ctx ends.
func (p *process) serveHTTP(ctx context.Context) error {
	cfg, mux := p.cfg, p.mux
	if cfg.has(RoleIngest) || cfg.has(RoleCatalog) {
		// The bus's consumers: their dead letters (a worker consumes
		// nothing, and its NATS user may not look).
		if err := p.metrics.AddScraper(metrics.DeadLetterScraper(p.bus)); err != nil {
			return err
		}
	}
	if err := p.metrics.AddScraper(metrics.QueueScraper(p.inspector, slices.Collect(maps.Keys(tasks.QueueWeights())))); err != nil {
		return err
	}
	if err := p.metrics.AddScraper(p.work.Scraper()); err != nil {
		return err
	}
	httpMetrics, err := metrics.NewHTTP(p.metrics)
	if err != nil {
		return err
	}
	mux.Handle("GET /metrics", p.metrics.Handler())
	mux.Handle(webui.Prefix, webui.Handler()) // browser UI; the page sends the key the user types
	mux.Handle("GET /{$}", http.RedirectHandler(webui.Prefix, http.StatusFound))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", p.ready)
	server := newHTTPServer(ctx, cfg, traceHTTP(cfg.TracerProvider, httpMetrics.Middleware(mux)))
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	p.log.Info("kiln listening", zap.String("addr", ln.Addr().String()), zap.String("public_url", cfg.PublicURL),
		zap.String("roles", roleNames(cfg.Roles)))
	p.g.Go(func() error {
		if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	p.g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return server.Shutdown(sctx)
	})
	return nil
}

// traceHTTP gives every request of the API (/v1/…) a server span named by
// its route pattern ("POST /v1/uploads"), continuing the client's trace
// context; health, metrics and the web UI are not traced. Without tracing,
// h as is.
func traceHTTP(tp trace.TracerProvider, h http.Handler) http.Handler {
	if !tracing.Enabled(tp) {
		return h
	}
	return otelhttp.NewHandler(h, "kiln", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(tracing.Propagator()),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), // metrics are /metrics'
		otelhttp.WithFilter(func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/v1/") }))
}

// newHTTPServer is the process's HTTP server: every request has
// httpReadHeaderTimeout for its headers and cfg.HTTPReadTimeout to be read
// whole (the upload route extends its own deadline as its body arrives,
// ingest.Config.UploadProgressTimeout), and a keep-alive connection waits
// cfg.HTTPIdleTimeout for its next request. There is no write timeout:
// event streams and proxied downloads run long; event streams bound each
// write themselves.
func newHTTPServer(ctx context.Context, cfg Config, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              cfg.HTTPAddr,
		Handler:           h,
		ReadHeaderTimeout: min(httpReadHeaderTimeout, cfg.HTTPReadTimeout),
		ReadTimeout:       cfg.HTTPReadTimeout,
		IdleTimeout:       cfg.HTTPIdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
}

// ready answers /readyz: 200 when every dependency answers, 503 otherwise,
// with "ok" or "unavailable" per dependency. The errors, which name
// internal addresses, go to the log only: /readyz needs no key.
func (p *process) ready(w http.ResponseWriter, r *http.Request) {
	status, code := map[string]string{}, http.StatusOK
	for name, check := range p.checks {
		cctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		if err := check(cctx); err != nil {
			status[name], code = "unavailable", http.StatusServiceUnavailable
			p.log.Warn("readiness check failed", zap.String("check", name), zap.Error(err))
		} else {
			status[name] = "ok"
		}
		cancel()
	}
	httpapi.WriteJSON(w, code, status)
}

// setupStorage creates the buckets and the bucket notification, retrying
// until the object store answers or ctx ends.
func (p *process) setupStorage(ctx context.Context) error {
	cfg := p.cfg
	delay := 250 * time.Millisecond
	for {
		err := p.objects.EnsureBuckets(ctx, cfg.SourcesBucket, cfg.OutputsBucket)
		if err == nil && cfg.NotifyARN != "" && cfg.has(RoleIngest) {
			err = p.objects.NotifyObjectCreated(ctx, cfg.SourcesBucket, cfg.NotifyARN)
		}
		if err == nil && cfg.has(RoleCatalog) && cfg.PlaybackDelivery != catalog.DeliveryProxy {
			// Browsers fetch segments from the outputs bucket. A store that
			// refuses (no permission) is the operator's to set: not fatal.
			if state, cerr := p.objects.EnsurePlaybackCORS(ctx, cfg.OutputsBucket); cerr != nil {
				p.log.Warn("outputs bucket CORS not set: browsers on other origins may not play (see README, Playback)", zap.Error(cerr))
			} else {
				p.log.Info("outputs bucket CORS", zap.String("bucket", cfg.OutputsBucket), zap.String("cors", state))
			}
		}
		if err == nil {
			p.log.Info("storage ready", zap.String("sources", cfg.SourcesBucket), zap.String("outputs", cfg.OutputsBucket))
			return nil
		}
		p.log.Info("waiting for object storage", zap.Error(err))
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
