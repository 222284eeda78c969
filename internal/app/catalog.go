package app

import (
	"context"
	"database/sql"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/postgres"
	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/catalog/sqlstore"
	"github.com/kilnvideo/kiln/catalog/tenants"
	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/apikeys"
	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/deadletter"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/metrics"
	"github.com/kilnvideo/kiln/internal/operations"
	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/sqldialect"
	"go.uber.org/zap"
)

// sqlStore is a catalog store on a SQL database, whose tables the webhook
// outbox shares: sqlite.Store and postgres.Store.
type sqlStore interface {
	catalog.Store
	DB() *sql.DB
	Dialect() sqldialect.Dialect
	OnApply(sqlstore.ApplyHook)
	OnDelete(sqlstore.DeleteHook)
}

var (
	_ sqlStore = (*sqlite.Store)(nil)
	_ sqlStore = (*postgres.Store)(nil)
)

// openStore opens the catalog store KILN_DATABASE names: PostgreSQL for a
// postgres:// or postgresql:// URL, else the SQLite file at that path.
func openStore(ctx context.Context, database string) (sqlStore, error) {
	if postgres.IsURL(database) {
		return postgres.Open(ctx, database)
	}
	return sqlite.Open(ctx, database)
}

// catalog runs the state store, the job/asset API, playback and the webhook
// outbox, fed by the job events on the bus.
func (p *process) catalog(ctx context.Context) error {
	cfg := p.cfg
	store, err := openStore(ctx, cfg.Database)
	if err != nil {
		return err
	}
	p.onClose(func() { _ = store.Close() })
	retrier := &catalog.Retrier{Queue: p.work, Attempts: p.cancel, Events: p.bus}
	cat, err := catalog.New(catalog.Config{
		Store: store, Objects: p.objectIO.For(string(RoleCatalog), p.objects), PublicURL: cfg.PublicURL, APIKeys: p.keys, Logger: p.log.Named("catalog"),
		SigningKey: cfg.PlaybackSigningKey, TokenTTL: cfg.PlaybackTokenTTL, Delivery: cfg.PlaybackDelivery,
		CDNURL:   cfg.CDNURL,
		Canceler: p.cancel, Retrier: retrier, RenditionRetrier: retrier,
		Remover: p.objects, OutputsBucket: cfg.OutputsBucket, SourcesBucket: cfg.SourcesBucket, Rejections: p.rejections,
		MaxStreamsPerKey: cfg.SSEMaxStreamsPerKey, PlaybackRateLimit: cfg.PlaybackRateLimit,
		PlaybackRateBurst: cfg.PlaybackRateBurst, Proxies: cfg.TrustedProxies, Changes: p.bus,
		TracerProvider: cfg.TracerProvider, Quotas: &quota.Store{Redis: p.redis},
	})
	if err != nil {
		return err
	}
	wh, err := webhooks.New(ctx, webhooks.Config{
		DB: store.DB(), Dialect: store.Dialect(), Queue: p.queue, Tasks: p.inspector, APIKeys: p.keys, PublicURL: cfg.PublicURL,
		DefaultSecret: cfg.WebhookSecret, RetrySchedule: cfg.WebhookRetrySchedule, Logger: p.log.Named("webhooks"),
		Metrics: p.metrics,
	})
	if err != nil {
		return err
	}
	p.rejections.Register(catalog.RejectConsumer, catalog.RejectReasons...)
	if err := p.metrics.AddScraper(metrics.JobScraper(func(ctx context.Context) (map[string]int, error) {
		counts, err := store.CountJobs(ctx)
		byName := make(map[string]int, len(counts))
		for st, n := range counts {
			byName[string(st)] = n
		}
		return byName, err
	}, stateNames())); err != nil {
		return err
	}
	ten, err := tenants.New(ctx, tenants.Config{DB: store.DB(), Dialect: store.Dialect(),
		Directory: &apikeys.Directory{Redis: p.redis}, Usage: store, Quotas: &quota.Store{Redis: p.redis},
		Logger: p.log.Named("tenants")})
	if err != nil {
		return err
	}
	if err := p.metrics.Register(ten); err != nil { // kiln_tenant_usage, kiln_tenant_quota_limit
		return err
	}
	store.OnApply(wh.OnApply) // the outbox: before any event is applied
	store.OnDelete(wh.AssetDeleted)
	httpapi.Mount(p.mux, p.keys, cat.Routes())
	httpapi.Mount(p.mux, p.keys, wh.Routes())
	httpapi.Mount(p.mux, p.keys, ten.Routes())
	// A tenant's own keys, for its read and write keys (the web console's keys page).
	httpapi.Mount(p.mux, p.keys, ten.SelfServiceRoutes())
	p.g.Go(func() error { return ten.Run(ctx) }) // the key directory, mirrored from the database
	// Limits and usage, where ingest checks them: before the catalog
	// serves, and then every 2 s.
	if err := ten.PublishUsage(ctx); err != nil {
		p.log.Warn("publish usage (repeated every 2 s)", zap.Error(err))
	}
	p.g.Go(func() error { return ten.RunUsage(ctx) })
	httpapi.Mount(p.mux, p.keys, deadletter.New(deadletter.Config{Store: p.bus, Logger: p.log.Named("deadletter")}).Routes())
	httpapi.Mount(p.mux, p.keys, operations.New(operations.Config{Metrics: p.metrics, Servers: p.inspector, Jobs: store,
		Logger: p.log.Named("operations")}).Routes())
	p.g.Go(func() error { return wh.Run(ctx) })
	if cfg.ReconcileInterval > 0 {
		rec, err := catalog.NewReconciler(catalog.ReconcilerConfig{
			Store: store, Objects: p.objects, SourcesBucket: cfg.SourcesBucket, Events: p.bus,
			Queue: p.work, Tasks: p.work.Tasks(ctx, p.inspector), Attempts: p.cancel, Jobs: p.cancel, Renditions: retrier,
			Interval: cfg.ReconcileInterval, Grace: cfg.ReconcileGrace, Logger: p.log.Named("reconciler"),
		})
		if err != nil {
			return err
		}
		if err := p.metrics.Register(rec); err != nil { // its counters on /metrics
			return err
		}
		p.g.Go(func() error { return rec.Run(ctx) })
	}
	// Every replica's event streams follow every job: each announces the
	// jobs it changed, and hears its own and the others' announcements.
	p.g.Go(func() error { return p.bus.JobChanges(ctx, cat.JobChanged) })
	// The replicas share the durable consumer: each event goes to one of them.
	p.g.Go(func() error {
		return p.bus.Consume(ctx, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}}, cat.HandleMessage)
	})
	return nil
}

// stateNames are the names of every job state (kiln_jobs{state}).
func stateNames() []string {
	var names []string
	for _, st := range catalog.States() {
		names = append(names, string(st))
	}
	return names
}
