package app

import (
	"context"

	"github.com/kilnvideo/kiln/ingest"
	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/metrics"
	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/workers"
)

// ingest runs the upload API and the intake that turns landed objects into
// jobs.
func (p *process) ingest(ctx context.Context) error {
	presets, err := workers.LoadPresets(p.cfg.PresetsFile)
	if err != nil {
		return err
	}
	refusals, err := metrics.NewQuotaRefusals(p.metrics)
	if err != nil {
		return err
	}
	in := ingest.New(ingest.Config{
		Objects: p.objectIO.For(string(RoleIngest), p.objects), Events: p.bus, Queue: p.work,
		SourcesBucket: p.cfg.SourcesBucket, PublicURL: p.cfg.PublicURL,
		MaxUploadBytes: p.cfg.MaxUploadBytes, Presets: workers.PresetNames(presets), Logger: p.log.Named("ingest"),
		Idempotency: &ingest.RedisIdempotency{Redis: p.redis}, Remover: p.objects, Presigner: p.objects,
		DirectUploadTTL: p.cfg.DirectUploadTTL, UploadProgressTimeout: p.cfg.UploadProgressTimeout,
		WebhookSecret: p.cfg.WebhookSecret, Quotas: &quota.Store{Redis: p.redis}, QuotaRefusals: refusals,
		Rejections: p.rejections, TracerProvider: p.cfg.TracerProvider,
		// Multipart upload ids are signed with a key every ingest replica
		// derives from the S3 secret it shares.
		Multipart: p.objects, UploadIDKey: ingest.UploadIDKey(p.cfg.S3.SecretKey), UploadAbortAfter: p.cfg.UploadAbortAfter,
	})
	p.rejections.Register(ingest.RejectConsumer, ingest.RejectReasons...)
	httpapi.Mount(p.mux, p.keys, in.Routes())
	p.g.Go(func() error { return in.SweepUploads(ctx) })
	p.g.Go(func() error {
		return p.bus.Consume(ctx, bus.ConsumerConfig{
			Durable:  "ingest",
			Subjects: []string{bus.SubjectObjectLanded, bus.SubjectS3Events},
		}, in.HandleMessage)
	})
	return nil
}
