// Package ingest is kiln's front door: the upload API that streams sources
// into the sources bucket, and the intake that turns "object landed" facts
// (from the API or from S3 bucket notifications) into jobs.
package ingest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/tenant"
	"github.com/kilnvideo/kiln/internal/tracing"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Objects is the object storage ingest uses.
type Objects interface {
	Put(ctx context.Context, bucket, key string, r io.Reader, size int64, contentType string, meta map[string]string) (objstore.Info, error)
}

// Events publishes ingest's facts.
type Events interface {
	PublishObjectLanded(ctx context.Context, ev *kilnv1.ObjectLanded) error
	tasks.Publisher
}

// Config holds ingest's dependencies and settings.
type Config struct {
	Objects Objects
	Events  Events
	Queue   tasks.Enqueuer
	// SourcesBucket receives uploads; only its notifications start jobs.
	SourcesBucket string
	// PublicURL is the externally visible base URL of the API.
	PublicURL string
	// MaxUploadBytes caps one upload; default 10 GiB.
	MaxUploadBytes int64
	// Presets are the valid preset names; empty allows only "default".
	Presets []string
	Logger  *zap.Logger

	// Idempotency remembers Idempotency-Keys of uploads; without it a
	// request carrying one answers 503.
	Idempotency IdempotencyStore
	// Remover deletes an upload that must not stay (a lost idempotency
	// race).
	Remover Remover
	// Presigner presigns direct-upload URLs; without it POST
	// /v1/direct-uploads answers 503.
	Presigner Presigner
	// PublishTimeout bounds the upload API's publish of "object landed",
	// which runs even after the client has gone; default 10s.
	PublishTimeout time.Duration
	// DirectUploadTTL is the lifetime of a direct-upload URL (and of each
	// part URL of a multipart one); default DefaultDirectUploadTTL.
	DirectUploadTTL time.Duration
	// Multipart makes multipart direct uploads (multipart.go), with ids
	// signed by UploadIDKey; without either they answer 503.
	Multipart   Multipart
	UploadIDKey []byte
	// MultipartThreshold: a direct upload of more bytes is multipart;
	// default DefaultMultipartThreshold.
	MultipartThreshold int64
	// UploadAbortAfter is how long a multipart upload may stay incomplete
	// before SweepUploads aborts it; default DefaultUploadAbortAfter.
	UploadAbortAfter time.Duration
	// UploadProgressTimeout cuts an upload whose body sends nothing for
	// that long (the server's read timeout does not apply to uploads);
	// default DefaultUploadProgressTimeout.
	UploadProgressTimeout time.Duration
	// WebhookSecret is KILN_WEBHOOK_SECRET: an upload with a webhook_url
	// gets that webhook's own secret, derived from it (webhooks.UploadSecret).
	WebhookSecret string
	// Quotas checks every upload against its tenant's quotas before a
	// byte is stored (quota.go); nil checks none. QuotaRefusals counts the
	// uploads they refuse; nil counts none.
	Quotas        Quotas
	QuotaRefusals QuotaRefusals
	// Rejections counts the landed objects the intake refuses, by reason
	// (metrics.Rejections); nil counts nothing.
	Rejections Rejections
	// TracerProvider traces the intake of each landed object; nil traces
	// nothing.
	TracerProvider trace.TracerProvider
}

// Rejections counts refused bus messages (metrics.Rejections).
type Rejections interface {
	Inc(consumer, reason string)
}

// RejectConsumer is the consumer label of the intake's rejections: its
// durable on the bus.
const RejectConsumer = "ingest"

// Reasons the intake rejects a landed object (an "object landed" fact or a
// bucket notification record) for: the reason label of
// kiln_events_rejected_total{consumer="ingest"}.
const (
	// RejectInvalid: an undecodable payload, or an object without bucket,
	// key or ETag (which its job id is derived from).
	RejectInvalid = "invalid"
	// RejectWrongBucket: an object outside the sources bucket.
	RejectWrongBucket = "wrong_bucket"
	// RejectBadKey: a key layout.IsSourceKey refuses (a traversal, a
	// control character, more than 1024 bytes…).
	RejectBadKey = "bad_key"
)

// RejectReasons lists every reason the intake gives.
var RejectReasons = []string{RejectInvalid, RejectWrongBucket, RejectBadKey}

// maxETag bounds an ETag: S3's are 32 hex digits, with "-<parts>" for a
// multipart upload.
const maxETag = 128

// RejectedError is a landed object the intake refused; Reason is one of
// the Reject constants. It wraps bus.ErrPermanent: the message is
// dead-lettered, never retried into success.
type RejectedError struct {
	Reason string
	Err    error
}

func (e *RejectedError) Error() string { return e.Err.Error() }

func (e *RejectedError) Unwrap() error { return e.Err }

func rejected(reason, format string, args ...any) *RejectedError {
	return &RejectedError{Reason: reason, Err: fmt.Errorf("ingest: %s: %w", fmt.Sprintf(format, args...), bus.ErrPermanent)}
}

// Remover deletes objects (objstore.Client).
type Remover interface {
	Remove(ctx context.Context, bucket, key string) error
}

// Presigner presigns uploads (objstore.Client): a PUT of bucket/key that
// must carry exactly headers.
type Presigner interface {
	PresignPut(ctx context.Context, bucket, key string, ttl time.Duration, headers http.Header) (*url.URL, error)
}

var (
	_ Remover   = (*objstore.Client)(nil)
	_ Presigner = (*objstore.Client)(nil)
)

// Service is the upload API and the intake.
type Service struct {
	cfg    Config
	log    *zap.Logger
	tracer trace.Tracer
}

// DefaultMaxUploadBytes is Config.MaxUploadBytes's default: 10 GiB.
const DefaultMaxUploadBytes = 10 << 30

// DefaultPublishTimeout is Config.PublishTimeout's default.
const DefaultPublishTimeout = 10 * time.Second

// New returns the ingest service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MaxUploadBytes == 0 {
		cfg.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if len(cfg.Presets) == 0 {
		cfg.Presets = []string{"default"}
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.DirectUploadTTL <= 0 {
		cfg.DirectUploadTTL = DefaultDirectUploadTTL
	}
	if cfg.MultipartThreshold <= 0 {
		cfg.MultipartThreshold = DefaultMultipartThreshold
	}
	if cfg.UploadAbortAfter <= 0 {
		cfg.UploadAbortAfter = DefaultUploadAbortAfter
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	return &Service{cfg: cfg, log: cfg.Logger, tracer: tracing.Provider(cfg.TracerProvider).Tracer("github.com/kilnvideo/kiln/ingest")}
}

// HandleMessage is the intake's bus handler: it accepts kilnv1.ObjectLanded
// on bus.SubjectObjectLanded and S3 event JSON on bus.SubjectS3Events. An
// object outside the sources bucket, or whose key is no source key
// (CheckObject), is rejected: logged, counted (Config.Rejections) and
// returned as a *RejectedError (permanent: dead-lettered). A bucket
// notification's other records are started all the same.
func (s *Service) HandleMessage(ctx context.Context, subject string, data []byte) error {
	switch subject {
	case bus.SubjectObjectLanded:
		var ev kilnv1.ObjectLanded
		if err := proto.Unmarshal(data, &ev); err != nil {
			return s.reject(subject, nil, &RejectedError{Reason: RejectInvalid, Err: fmt.Errorf("ingest: object landed: %w: %w", bus.ErrPermanent, err)})
		}
		return s.StartJob(ctx, &ev)
	case bus.SubjectS3Events:
		landed, traces, err := parseS3Event(data)
		if err != nil {
			return s.reject(subject, nil, &RejectedError{Reason: RejectInvalid, Err: fmt.Errorf("ingest: s3 event: %w: %w", bus.ErrPermanent, err)})
		}
		var refused error
		for i, ev := range landed {
			if err := s.CheckObject(ev.GetObject()); err != nil {
				refused = cmp.Or(refused, s.reject(subject, ev, err))
				continue
			}
			// An upload through the API left its trace context in the
			// object's metadata: whichever of its two facts starts the
			// job, the job continues the upload's trace (the bucket
			// notification's own span is linked).
			jctx, links := ctx, []trace.Link(nil)
			if tc := traces[i]; tc != "" {
				links = []trace.Link{trace.LinkFromContext(ctx)}
				jctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{traceParent: tc})
			}
			if err := s.startJob(jctx, ev, links...); err != nil {
				return err
			}
		}
		return refused
	}
	return fmt.Errorf("ingest: unexpected subject %q: %w", subject, bus.ErrPermanent)
}

// CheckObject reports whether o may be a source: in the sources bucket,
// under a key layout.IsSourceKey accepts, with an ETag. Its error is a
// *RejectedError.
func (s *Service) CheckObject(o *kilnv1.ObjectRef) error {
	switch etag := strings.Trim(o.GetEtag(), `"`); {
	case o.GetBucket() == "" || o.GetKey() == "":
		return rejected(RejectInvalid, "object without bucket or key")
	case o.GetBucket() != s.cfg.SourcesBucket:
		return rejected(RejectWrongBucket, "object %s/%s is not in the sources bucket", o.GetBucket(), o.GetKey())
	case !layout.IsSourceKey(o.GetKey()):
		return rejected(RejectBadKey, "object key %q in %s is not a source key", o.GetKey(), o.GetBucket())
	case etag == "" || len(etag) > maxETag || !printableASCII(etag):
		return rejected(RejectInvalid, "object %s/%s: bad ETag %q", o.GetBucket(), o.GetKey(), o.GetEtag())
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// reject logs and counts a refused message (ev is its landed object, when
// it decoded) and returns err.
func (s *Service) reject(subject string, ev *kilnv1.ObjectLanded, err error) error {
	var rej *RejectedError
	reason := RejectInvalid
	if errors.As(err, &rej) {
		reason = rej.Reason
	}
	if s.cfg.Rejections != nil {
		s.cfg.Rejections.Inc(RejectConsumer, reason)
	}
	o := ev.GetObject()
	s.log.Warn("landed object rejected", zap.String("reason", reason), zap.String("subject", subject),
		zap.String("bucket", o.GetBucket()), zap.String("key", o.GetKey()), zap.String("etag", o.GetEtag()),
		zap.String("origin", ev.GetOrigin()), zap.Error(err))
	return err
}

// StartJob creates the job of a landed object, idempotently: the job id is
// derived from bucket/key/etag, the probe task is deduplicated by its
// TaskID and the queued event, published after it, by its id. An object
// CheckObject refuses is rejected (a *RejectedError, permanent).
func (s *Service) StartJob(ctx context.Context, ev *kilnv1.ObjectLanded) error {
	return s.startJob(ctx, ev)
}

// startJob is StartJob in a span of its own ("intake"), linked to links.
func (s *Service) startJob(ctx context.Context, ev *kilnv1.ObjectLanded, links ...trace.Link) (err error) {
	o := ev.GetObject()
	ctx, span := s.tracer.Start(ctx, "intake", trace.WithLinks(links...), trace.WithAttributes(
		attribute.String("kiln.origin", ev.GetOrigin()), attribute.String("kiln.source.bucket", o.GetBucket()),
		attribute.String("kiln.source.key", o.GetKey())))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	if err := s.CheckObject(o); err != nil {
		return s.reject(bus.SubjectObjectLanded, ev, err)
	}
	if t := ev.GetTenantId(); t != "" && !tenant.Valid(t) {
		return s.reject(bus.SubjectObjectLanded, ev, rejected(RejectInvalid, "object %s/%s: malformed %s metadata", o.Bucket, o.Key, layout.MetaTenant))
	}
	jobID, assetID := jobid.FromObject(o.Bucket, o.Key, o.Etag)
	span.SetAttributes(tracing.AttrJobID.String(jobID), tracing.AttrAssetID.String(assetID))
	preset := ev.GetPreset()
	if preset == "" {
		preset = "default"
	}
	log := s.log.With(zap.String("job_id", jobID), zap.String("bucket", o.Bucket), zap.String("key", o.Key), zap.String("origin", ev.Origin))
	queued := jobevent.New(jobID, assetID, 1, kilnv1.JobState_JOB_STATE_QUEUED, "queued")
	queued.Source, queued.Preset, queued.PlaybackPolicy = o, preset, policy.OfEvent(ev.GetPlaybackPolicy())
	queued.TenantId = tenant.OfEvent(ev.GetTenantId())
	if u := ev.GetWebhookUrl(); ValidWebhookURL(u) {
		queued.WebhookUrl = u
	}
	// An object stored behind kiln's back may carry any metadata: a
	// priority that is none is normal.
	queued.Priority = tasks.NormPriority(ev.GetPriority())
	if !tasks.ValidPriority(queued.Priority) {
		log.Warn("unknown priority: normal", zap.String("priority", ev.GetPriority()))
		queued.Priority = tasks.PriorityNormal
	}
	// The command before the fact: a QUEUED without its probe (Redis down)
	// would leave the job queued forever, while a QUEUED after an enqueued
	// probe is harmless (the catalog backfills a late QUEUED). Either
	// failure is returned, so the message is redelivered and both are
	// retried (the probe deduplicated by its TaskID, the event by its id).
	probe := &kilnv1.ProbeTask{JobId: jobID, AssetId: assetID, Source: o, Preset: preset, Priority: queued.Priority,
		TenantId: queued.TenantId} // the admission to the transcode queue shares the fleet per tenant
	t, err := tasks.NewProbeTask(ctx, probe)
	if err != nil {
		return err
	}
	if err := tasks.Enqueue(ctx, s.cfg.Queue, t); err != nil {
		return fmt.Errorf("ingest: job %s: enqueue probe: %w", jobID, err)
	}
	if err := s.cfg.Events.PublishJobEvent(ctx, queued); err != nil {
		return fmt.Errorf("ingest: job %s: publish queued: %w", jobID, err)
	}
	log.Info("job queued")
	return nil
}

// s3Event is the part of the S3 event notification format kiln reads.
type s3Event struct {
	Records []struct {
		EventName string `json:"eventName"`
		S3        struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object struct {
				Key          string            `json:"key"`
				Size         int64             `json:"size"`
				ETag         string            `json:"eTag"`
				ContentType  string            `json:"contentType"`
				UserMetadata map[string]string `json:"userMetadata"`
			} `json:"object"`
		} `json:"s3"`
		EventTime time.Time `json:"eventTime"`
	} `json:"Records"`
}

// ParseS3Event extracts created objects from an S3 event notification.
// Other event kinds and folder markers are skipped.
func ParseS3Event(data []byte) ([]*kilnv1.ObjectLanded, error) {
	out, _, err := parseS3Event(data)
	return out, err
}

// traceParent is the W3C trace context field an upload leaves in its
// object's metadata (metaTraceParent), so that its bucket notification
// continues its trace. Only traceparent: tracestate and baggage could grow
// the metadata past S3's 2 KiB.
const (
	traceParent     = "traceparent"
	metaTraceParent = "Kiln-Traceparent"
)

// parseS3Event is ParseS3Event, with the traceparent of each object's
// metadata ("" when it has none).
func parseS3Event(data []byte) ([]*kilnv1.ObjectLanded, []string, error) {
	var ev s3Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	var out []*kilnv1.ObjectLanded
	var traces []string
	for _, r := range ev.Records {
		if !strings.HasPrefix(r.EventName, "s3:ObjectCreated:") && !strings.HasPrefix(r.EventName, "ObjectCreated:") {
			continue
		}
		key, err := url.QueryUnescape(r.S3.Object.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("parse: object key %q: %w", r.S3.Object.Key, err)
		}
		if !utf8.ValidString(key) { // S3 keys are UTF-8; the job's protobufs could not carry it
			return nil, nil, fmt.Errorf("parse: object key %q is not UTF-8", r.S3.Object.Key)
		}
		if r.S3.Bucket.Name == "" || key == "" || strings.HasSuffix(key, "/") {
			continue
		}
		md := r.S3.Object.UserMetadata
		preset, policy, webhook := layout.SourceMeta(md, layout.MetaPreset), layout.SourceMeta(md, layout.MetaPolicy),
			layout.SourceMeta(md, layout.MetaWebhook)
		priority := layout.SourceMeta(md, layout.MetaPriority)
		out = append(out, &kilnv1.ObjectLanded{
			Object: &kilnv1.ObjectRef{
				Bucket: r.S3.Bucket.Name, Key: key, Etag: strings.Trim(r.S3.Object.ETag, `"`),
				Size: r.S3.Object.Size, ContentType: r.S3.Object.ContentType,
			},
			Origin:         "s3",
			Preset:         preset,
			PlaybackPolicy: policy,
			WebhookUrl:     webhook,
			TenantId:       layout.SourceMeta(md, layout.MetaTenant),
			Priority:       priority,
			Time:           timestamppb.New(r.EventTime),
		})
		traces = append(traces, layout.SourceMeta(md, metaTraceParent))
	}
	if len(ev.Records) == 0 {
		return nil, nil, errors.New("parse: no records")
	}
	return out, traces, nil
}

// ValidWebhookURL reports whether u is an absolute http(s) URL without
// credentials, short enough to carry in object metadata. Where it may be
// dialled is decided at delivery time (SSRF guard).
func ValidWebhookURL(u string) bool {
	if u == "" || len(u) > 2048 {
		return false
	}
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != "" && p.User == nil
}
