package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/tracing"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Objects is the object storage the catalog reads outputs from.
type Objects interface {
	// PresignGetWith returns a URL granting GET on bucket/key for ttl, whose
	// response carries the headers opts override.
	PresignGetWith(ctx context.Context, bucket, key string, ttl time.Duration, opts objstore.PresignOptions) (*url.URL, error)
	// Get returns a small object (playlists); it fails when the object is
	// larger than maxBytes.
	Get(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, error)
	// Open returns a seekable reader of bucket/key and its metadata (ETag,
	// size, modification time), or an error wrapping objstore.ErrNotFound.
	Open(ctx context.Context, bucket, key string) (io.ReadSeekCloser, objstore.Info, error)
}

var _ Objects = (*objstore.Client)(nil)

// Delivery modes of segments, MP4 downloads and posters.
const (
	// DeliveryDirect sends players straight to the objects: media
	// playlists list presigned object URLs (or Config.CDNURL + the object
	// key for public assets), and the segment, MP4 and poster routes answer
	// 302 to a short-lived presigned URL. The object store serves the bytes
	// (and range requests) itself.
	DeliveryDirect = "direct"
	// DeliveryRedirect is DeliveryDirect's former name, still accepted.
	DeliveryRedirect = "redirect"
	// DeliveryProxy streams objects through the catalog (with range
	// requests and ETags), so the object store never faces clients.
	DeliveryProxy = "proxy"
)

// Playback token lifetimes.
const (
	// DefaultTokenTTL is Config.TokenTTL's default.
	DefaultTokenTTL = 24 * time.Hour
	// MaxTokenTTL bounds Config.TokenTTL and minted tokens' ttl_seconds.
	MaxTokenTTL = 30 * 24 * time.Hour
	// minSigningKey is the shortest accepted signing key, in bytes.
	minSigningKey = 16
)

// Config configures a Service.
type Config struct {
	// Store holds catalog state. Required.
	Store Store
	// Objects reads and presigns output objects. Required.
	Objects Objects
	// PublicURL is the absolute base URL clients reach the catalog at, e.g.
	// "https://kiln.example.com"; links and playback URLs are built from it.
	// Required.
	PublicURL string
	// APIKeys guards the JSON API (playback routes are open). Required.
	APIKeys *httpapi.Keys
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// PresignTTL is the lifetime of presigned playback URLs; default 1h.
	PresignTTL time.Duration
	// SigningKey signs and checks the playback tokens of assets whose
	// playback policy is signed; at least 16 bytes. When empty, such assets
	// answer 503 signing_not_configured (public assets are unaffected).
	SigningKey []byte
	// TokenTTL is the lifetime of the token put in a signed asset's playback
	// URLs, and of minted tokens without a ttl; default DefaultTokenTTL, at
	// most MaxTokenTTL.
	TokenTTL time.Duration
	// Delivery is DeliveryDirect (default; DeliveryRedirect is the same) or
	// DeliveryProxy.
	Delivery string
	// CDNURL, when set, is the absolute http(s) base URL of a CDN in front
	// of the outputs bucket: public assets' media playlists (direct
	// delivery) reference segments at CDNURL + "/" + the object key.
	CDNURL string

	// Canceler cancels jobs (POST /v1/jobs/{id}/cancel); without it that
	// route answers 503 not_configured.
	Canceler JobCanceler
	// Retrier starts new attempts of jobs (POST /v1/jobs/{id}/retry);
	// without it that route answers 503 not_configured.
	Retrier JobRetrier
	// Quotas checks a job retry against its tenant's concurrency and
	// monthly minutes (quota.Store); nil checks none.
	Quotas QuotaAdmitter
	// RenditionRetrier enqueues the packaging of one failed rendition
	// (POST /v1/assets/{id}/renditions/{name}/retry); without it that route
	// answers 503 not_configured.
	RenditionRetrier RenditionRetrier
	// Remover deletes objects (DELETE /v1/assets/{id}); without it that
	// route answers 503 not_configured.
	Remover ObjectRemover
	// OutputsBucket is where workers write outputs (assets/<id>/…): DELETE
	// empties the asset's prefix there even when the job never got ready,
	// and READY events naming another bucket are rejected (every READY when
	// it is empty).
	OutputsBucket string
	// SourcesBucket holds the sources: events naming a source in another
	// bucket are rejected (every such event when it is empty).
	SourcesBucket string
	// Rejections counts the events CheckEvent refuses, by reason
	// (metrics.Rejections); nil counts nothing.
	Rejections Rejections
	// Changes tells the other catalog replicas which jobs this one changed,
	// so that their event streams follow every job (JobChanged is its other
	// end); nil: a replica alone, whose streams hear only its own changes
	// (and look again at every heartbeat).
	Changes ChangeAnnouncer
	// Heartbeat is the interval of comments on event streams; default 15s.
	Heartbeat time.Duration
	// StreamWriteTimeout bounds each write to an event stream: a client that
	// stops reading has its stream closed after it; default 10s.
	StreamWriteTimeout time.Duration
	// MaxStreamsPerKey bounds the event streams one API key holds open at
	// once (429 too_many_streams beyond); default DefaultMaxStreamsPerKey.
	MaxStreamsPerKey int

	// PlaybackRateLimit is the sustained requests/second each client
	// address may make to the open playback routes, PlaybackRateBurst how
	// many at once (429 rate_limited beyond); 0 turns the limit off.
	PlaybackRateLimit float64
	PlaybackRateBurst int
	// Proxies tells the client address of requests through a trusted
	// reverse proxy.
	Proxies httpapi.Proxies
	// TracerProvider traces the apply of each job event (in the trace of
	// the stage that published it); nil traces nothing.
	TracerProvider trace.TracerProvider
}

// Defaults of Config's stream and playback limits.
const (
	DefaultMaxStreamsPerKey   = 100
	DefaultStreamWriteTimeout = 10 * time.Second
	DefaultPlaybackRateLimit  = 50
	DefaultPlaybackRateBurst  = 200
)

// Rejections counts refused bus messages (metrics.Rejections).
type Rejections interface {
	Inc(consumer, reason string)
}

// ChangeAnnouncer tells every catalog replica that a job changed
// (bus.Bus).
type ChangeAnnouncer interface {
	AnnounceJobChange(jobID string) error
}

// RejectConsumer is the consumer label of the catalog's rejections: its
// durable on the bus.
const RejectConsumer = "catalog"

// Service applies job events and serves the catalog's HTTP API.
type Service struct {
	store   Store
	objects Objects
	public  string // PublicURL without trailing slash
	keys    *httpapi.Keys
	log     *zap.Logger
	ttl     time.Duration

	signingKey []byte
	tokenTTL   time.Duration
	delivery   string
	cdn        string // Config.CDNURL without trailing slash
	playlists  *playlistCache
	assets     *assetCache
	masters    *masterCache
	gzips      sync.Pool // *gzip.Writer, reused by Service.gzip
	now        func() time.Time

	canceler      JobCanceler
	retrier       JobRetrier
	quotas        QuotaAdmitter
	rendRetrier   RenditionRetrier
	remover       ObjectRemover
	outputsBucket string
	buckets       Buckets
	rejections    Rejections
	changes       ChangeAnnouncer
	hub           *hub
	heartbeat     time.Duration
	streamWrite   time.Duration

	playLimit *httpapi.ClientLimiter // nil: unlimited
	proxies   httpapi.Proxies
	tracer    trace.Tracer
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("catalog: Config.Store is required")
	case cfg.Objects == nil:
		return nil, errors.New("catalog: Config.Objects is required")
	case cfg.APIKeys == nil:
		return nil, errors.New("catalog: Config.APIKeys is required")
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("catalog: Config.PublicURL %q must be an absolute http(s) URL", cfg.PublicURL)
	}
	switch cfg.Delivery {
	case "", DeliveryRedirect:
		cfg.Delivery = DeliveryDirect
	case DeliveryDirect, DeliveryProxy:
	default:
		return nil, fmt.Errorf("catalog: Config.Delivery %q: want %q, %q or %q", cfg.Delivery, DeliveryDirect, DeliveryRedirect, DeliveryProxy)
	}
	if err := CheckCDNURL(cfg.CDNURL); err != nil {
		return nil, fmt.Errorf("catalog: Config.CDNURL: %w", err)
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.TokenTTL < time.Second || cfg.TokenTTL > MaxTokenTTL {
		return nil, fmt.Errorf("catalog: Config.TokenTTL %v: want 1s to %v", cfg.TokenTTL, MaxTokenTTL)
	}
	if n := len(cfg.SigningKey); n > 0 && n < minSigningKey {
		return nil, fmt.Errorf("catalog: Config.SigningKey has %d bytes, want at least %d", n, minSigningKey)
	}
	if cfg.MaxStreamsPerKey == 0 {
		cfg.MaxStreamsPerKey = DefaultMaxStreamsPerKey
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = DefaultStreamWriteTimeout
	}
	playLimit, err := httpapi.NewClientLimiter(cfg.PlaybackRateLimit, cfg.PlaybackRateBurst, nil)
	if err != nil {
		return nil, fmt.Errorf("catalog: playback %w", err)
	}
	s := &Service{
		store:      cfg.Store,
		objects:    cfg.Objects,
		public:     strings.TrimRight(cfg.PublicURL, "/"),
		keys:       cfg.APIKeys,
		log:        cfg.Logger,
		ttl:        cfg.PresignTTL,
		signingKey: bytes.Clone(cfg.SigningKey),
		tokenTTL:   cfg.TokenTTL,
		delivery:   cfg.Delivery,
		cdn:        strings.TrimRight(cfg.CDNURL, "/"),
		now:        time.Now,

		canceler:      cfg.Canceler,
		retrier:       cfg.Retrier,
		quotas:        cfg.Quotas,
		rendRetrier:   cfg.RenditionRetrier,
		remover:       cfg.Remover,
		outputsBucket: cfg.OutputsBucket,
		buckets:       Buckets{Sources: cfg.SourcesBucket, Outputs: cfg.OutputsBucket},
		rejections:    cfg.Rejections,
		changes:       cfg.Changes,
		hub:           newHub(cfg.MaxStreamsPerKey),
		heartbeat:     cfg.Heartbeat,
		streamWrite:   cfg.StreamWriteTimeout,
		playLimit:     playLimit,
		proxies:       cfg.Proxies,
		tracer:        tracing.Provider(cfg.TracerProvider).Tracer("github.com/kilnvideo/kiln/catalog"),
	}
	if s.heartbeat <= 0 {
		s.heartbeat = 15 * time.Second
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.ttl <= 0 {
		s.ttl = time.Hour
	}
	s.playlists = newPlaylistCache(func() time.Time { return s.now() })
	s.assets = newPerAssetCache[*Asset](func() time.Time { return s.now() })
	s.masters = newPerAssetCache[*renderedMaster](func() time.Time { return s.now() })
	return s, nil
}

// HandleMessage is the catalog's bus handler: it applies the kilnv1.JobEvent
// of a message on bus.SubjectJobs. A malformed payload or an event that can
// never be applied (ErrInvalidEvent) is permanent (bus.ErrPermanent: the bus
// drops it); other errors (database) are returned as is, for a redelivery.
func (s *Service) HandleMessage(ctx context.Context, _ string, data []byte) error {
	var ev kilnv1.JobEvent
	if err := proto.Unmarshal(data, &ev); err != nil {
		if s.rejections != nil {
			s.rejections.Inc(RejectConsumer, RejectInvalid)
		}
		s.log.Warn("job event rejected", zap.String("reason", RejectInvalid), zap.Int("bytes", len(data)), zap.Error(err))
		return fmt.Errorf("catalog: job event: %w: %w", bus.ErrPermanent, err)
	}
	if err := s.HandleEvent(ctx, &ev); errors.Is(err, ErrInvalidEvent) {
		return fmt.Errorf("%w: %w", bus.ErrPermanent, err)
	} else if err != nil {
		return err
	}
	return nil
}

// HandleEvent applies one job event. Errors wrapping ErrInvalidEvent are
// permanent; others (database) are worth a redelivery. An event that
// claims what its sender may not (CheckEvent) is refused before the store
// sees it: logged, counted (Config.Rejections) and returned as a
// *RejectedError.
func (s *Service) HandleEvent(ctx context.Context, ev *kilnv1.JobEvent) (err error) {
	ctx, span := s.tracer.Start(ctx, "apply job event", trace.WithAttributes(
		tracing.AttrJobID.String(ev.GetJobId()), tracing.AttrAssetID.String(ev.GetAssetId()),
		tracing.AttrAttempt.Int(int(ev.GetAttempt())), attribute.String("kiln.job.state", ev.GetState().String()),
		attribute.String("kiln.event_id", ev.GetEventId())))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	log := s.log.With(zap.String("job_id", ev.GetJobId()), zap.String("event_id", ev.GetEventId()),
		zap.Stringer("state", ev.GetState()))
	if _, err := CheckEvent(ev, s.buckets, s.now()); err != nil {
		var rej *RejectedError
		reason := RejectInvalid
		if errors.As(err, &rej) {
			reason = rej.Reason
		}
		if s.rejections != nil {
			s.rejections.Inc(RejectConsumer, reason)
		}
		log.Warn("job event rejected", zap.String("reason", reason), zap.String("asset_id", ev.GetAssetId()),
			zap.String("source_bucket", ev.GetSource().GetBucket()), zap.String("source_key", ev.GetSource().GetKey()),
			zap.String("outputs_bucket", ev.GetOutputs().GetBucket()), zap.String("outputs_prefix", ev.GetOutputs().GetPrefix()),
			zap.Error(err))
		return err
	}
	changed, err := s.store.Apply(ctx, ev)
	if err != nil {
		log.Error("apply job event", zap.Error(err))
		return err
	}
	span.SetAttributes(attribute.Bool("kiln.job.changed", changed))
	if changed {
		log.Info("job updated", zap.Float64("progress", ev.GetProgress()), zap.Int32("attempt", ev.GetAttempt()))
		s.changed(ev.GetJobId())
		if s.changes != nil {
			if err := s.changes.AnnounceJobChange(ev.GetJobId()); err != nil {
				// The other replicas' streams catch up at their next heartbeat.
				log.Warn("announce job change", zap.Error(err))
			}
		}
	} else {
		log.Debug("job event ignored (stale or repeated)")
	}
	return nil
}

// JobChanged wakes this replica's event streams of job jobID and drops its
// asset from the playback cache: another replica (or this one) changed it
// (Config.Changes).
func (s *Service) JobChanged(jobID string) { s.changed(jobID) }

// Routes lists every route Handler serves:
//
//	GET    /v1/openapi.json                        the OpenAPI document (no key)
//	GET    /v1/jobs                                jobs, newest first, paginated (API key)
//	GET    /v1/jobs/{id}                           job (API key)
//	GET    /v1/jobs/{id}/events                    job changes as server-sent events (API key)
//	GET    /v1/events                              changes of every job of the key's tenant, as server-sent events (API key)
//	POST   /v1/jobs/{id}/cancel                    cancel a running job (API key)
//	POST   /v1/jobs/{id}/retry                     new attempt of a failed/canceled job (API key)
//	GET    /v1/assets/{id}                         asset (API key)
//	DELETE /v1/assets/{id}                         delete an ended job's asset and source (API key)
//	POST   /v1/assets/{id}/playback-token          mint a playback token (API key)
//	POST   /v1/assets/{id}/renditions/{name}/retry package one failed rendition again (API key)
//	GET    /v1/play/{id}/master.m3u8               master playlist, generated
//	GET    /v1/play/{id}/{rendition}/index.m3u8    media playlist, from storage
//	GET    /v1/play/{id}/{rendition}/{file}        segment (init.mp4, *.m4s)
//	GET    /v1/play/{id}/download.mp4              MP4 download
//	GET    /v1/play/{id}/poster.jpg                poster
//	GET    /v1/play/{id}/thumbnails/{file}         thumbnails, sprite, storyboard.vtt (via the route above)
//	OPTIONS /v1/play/                              CORS preflight
//
// Playback routes need no API key (players cannot send bearer headers) and
// allow any origin; a signed asset's need a ?token= instead. Segments, MP4,
// poster and thumbnails are redirects to presigned URLs or proxied
// (Config.Delivery).
func (s *Service) Routes() []httpapi.Route {
	api := httpapi.Authed
	routes := []httpapi.Route{
		httpapi.Open("GET /v1/openapi.json", http.HandlerFunc(serveOpenAPI)),
		api("GET /v1/jobs", s.listJobs),
		api("GET /v1/jobs/{id}", s.getJob),
		api("GET /v1/jobs/{id}/events", s.jobEvents),
		api("GET /v1/events", s.tenantEvents),
		api("POST /v1/jobs/{id}/cancel", s.cancelJob),
		api("POST /v1/jobs/{id}/retry", s.retryJob),
		api("GET /v1/assets/{id}", s.getAsset),
		api("DELETE /v1/assets/{id}", s.deleteAsset),
		api("POST /v1/assets/{id}/playback-token", s.mintToken),
		api("POST /v1/assets/{id}/renditions/{name}/retry", s.retryRendition),
	}
	return append(routes, s.playbackRoutes()...)
}

// Handler returns the HTTP API (see Routes), API routes behind the keys.
func (s *Service) Handler() http.Handler { return httpapi.Handler(s.keys, s.Routes()) }

// JSON shapes of the API.
type (
	jobJSON struct {
		ID         string               `json:"id"`
		AssetID    string               `json:"asset_id"`
		State      State                `json:"state"`
		Progress   float64              `json:"progress"`
		Preset     string               `json:"preset"`
		Policy     string               `json:"playback_policy"`
		Priority   string               `json:"priority"`
		Attempt    int32                `json:"attempt"`
		Source     sourceJSON           `json:"source"`
		Error      *httpapi.ErrorDetail `json:"error,omitempty"`
		Media      json.RawMessage      `json:"media,omitempty"`
		Plan       json.RawMessage      `json:"plan,omitempty"`
		Renditions []renditionStateJSON `json:"renditions"`
		CreatedAt  time.Time            `json:"created_at"`
		UpdatedAt  time.Time            `json:"updated_at"`
		Timestamps map[State]time.Time  `json:"timestamps"`
		// PlayableAt is when the attempt's outputs started to play (its
		// playable event), before READY; absent until then.
		PlayableAt *time.Time `json:"playable_at,omitempty"`
		// Chunks is a chunked transcode's progress; absent for a job that
		// is not chunked.
		Chunks *chunksJSON       `json:"chunks,omitempty"`
		Links  map[string]string `json:"links"`
	}
	chunksJSON struct {
		Done  int32 `json:"done"`
		Total int32 `json:"total"`
	}
	// renditionStateJSON is one rung of a job's plan and how far it is.
	renditionStateJSON struct {
		Name   string `json:"name"`
		Width  int32  `json:"width"`
		Height int32  `json:"height"`
		State  string `json:"state"`
	}
	sourceJSON struct {
		Bucket string `json:"bucket"`
		Key    string `json:"key"`
		ETag   string `json:"etag"`
		Size   int64  `json:"size"`
	}
	assetJSON struct {
		ID              string          `json:"id"`
		JobID           string          `json:"job_id"`
		State           State           `json:"state"`
		Policy          string          `json:"playback_policy"`
		DurationSeconds float64         `json:"duration_seconds"`
		Renditions      []renditionJSON `json:"renditions"`
		Playback        *playbackJSON   `json:"playback"`
		Thumbnails      *thumbnailsJSON `json:"thumbnails,omitempty"`
		// PlayableAt is when the asset started to play (before READY for
		// a transcode that encodes straight to segments).
		PlayableAt *time.Time `json:"playable_at,omitempty"`
		// TokenExpiresAt is when the token in a signed asset's playback
		// URLs expires.
		TokenExpiresAt *time.Time        `json:"playback_token_expires_at,omitempty"`
		Links          map[string]string `json:"links"`
	}
	// renditionJSON is a ready rendition (state "ready") or one whose
	// packaging failed (state "failed", with error; only name, width and
	// height are known).
	renditionJSON struct {
		Name             string               `json:"name"`
		Width            int                  `json:"width"`
		Height           int                  `json:"height"`
		FrameRate        float64              `json:"frame_rate"`
		Bandwidth        int64                `json:"bandwidth"`
		AverageBandwidth int64                `json:"average_bandwidth"`
		Codecs           string               `json:"codecs"`
		State            string               `json:"state"`
		Error            *httpapi.ErrorDetail `json:"error,omitempty"`
	}
	// thumbnailsJSON are the URLs of a ready asset's still images.
	thumbnailsJSON struct {
		Poster          string   `json:"poster,omitempty"`
		StoryboardVTT   string   `json:"storyboard_vtt,omitempty"`
		Sprite          string   `json:"sprite,omitempty"`
		IntervalSeconds float64  `json:"interval_seconds"`
		Width           int32    `json:"width"`
		Height          int32    `json:"height"`
		Images          []string `json:"images"`
	}
	playbackJSON struct {
		HLS    string `json:"hls"`
		MP4    string `json:"mp4,omitempty"`
		Poster string `json:"poster,omitempty"`
	}
)

func (s *Service) getJob(w http.ResponseWriter, r *http.Request) {
	if j, ok := s.jobOf(w, r); ok {
		s.writeJob(w, r, http.StatusOK, j)
	}
}

// jobView is the JSON of a job.
func (s *Service) jobView(j *Job) (jobJSON, error) {
	out := jobJSON{
		ID: j.ID, AssetID: j.AssetID, State: j.State, Progress: j.Progress, Preset: j.Preset, Policy: j.PlaybackPolicy,
		Priority:  tasks.NormPriority(j.Priority),
		Attempt:   max(j.Attempt, 1),
		Source:    sourceJSON{Bucket: j.Source.Bucket, Key: j.Source.Key, ETag: j.Source.ETag, Size: j.Source.Size},
		CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, Timestamps: j.Timestamps,
		Renditions: renditionStates(j),
		PlayableAt: timeOrNil(j.PlayableAt),
		Chunks:     chunksOrNil(j.Chunks),
		Links: map[string]string{
			"self":   s.public + "/v1/jobs/" + j.ID,
			"asset":  s.public + "/v1/assets/" + j.AssetID,
			"events": s.public + "/v1/jobs/" + j.ID + "/events",
		},
	}
	if j.State == StateFailed || j.State == StateCanceled {
		out.Error = &httpapi.ErrorDetail{Code: j.ErrorCode, Message: j.ErrorMessage}
	}
	var err error
	if out.Media, err = protoJSON(j.Media); err == nil {
		out.Plan, err = protoJSON(j.Plan)
	}
	if err != nil {
		return jobJSON{}, fmt.Errorf("render job %s: %w", j.ID, err)
	}
	return out, nil
}

// timeOrNil is &t, nil for the zero time.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// chunksOrNil is the JSON of c, nil for a job that is not chunked.
func chunksOrNil(c Chunks) *chunksJSON {
	if c.Total <= 0 {
		return nil
	}
	return &chunksJSON{Done: c.Done, Total: c.Total}
}

// Rendition states of the API beside the job states.
const (
	renditionReady    = "ready"
	renditionFailed   = "failed"
	renditionPlayable = "playable" // an asset's rendition that plays before READY
)

// renditionStates derives each planned rung's progress from the job's
// state: the rungs are encoded together, then packaged together; a ready
// job's rungs whose packaging failed are failed.
func renditionStates(j *Job) []renditionStateJSON {
	var st string
	switch j.State {
	case StateQueued, StateProbing:
		st = "pending"
	case StateTranscoding:
		st = "encoding"
	case StatePackaging:
		st = "packaging"
	default: // ready, failed, canceled
		st = string(j.State)
	}
	stateOf := func(name string) string {
		if j.State == StateReady && slices.Contains(j.FailedRenditions, name) {
			return renditionFailed
		}
		return st
	}
	out := []renditionStateJSON{}
	for _, r := range j.Plan.GetRungs() {
		out = append(out, renditionStateJSON{Name: r.GetName(), Width: r.GetWidth(), Height: r.GetHeight(), State: stateOf(r.GetName())})
	}
	if len(out) == 0 && j.Plan.GetAudioOnly() {
		out = append(out, renditionStateJSON{Name: layout.AudioRendition, State: stateOf(layout.AudioRendition)})
	}
	return out
}

// protoOut renders protos in the API with their proto field names.
var protoOut = protojson.MarshalOptions{UseProtoNames: true}

// protoJSON renders m with proto field names, nil when m is nil.
func protoJSON(m proto.Message) (json.RawMessage, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil, nil
	}
	return protoOut.Marshal(m)
}

func (s *Service) getAsset(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.asset(w, r); ok {
		s.writeAssetView(w, r, http.StatusOK, a)
	}
}

// writeAssetView answers with the asset's JSON. A signed asset's playback
// URLs carry a fresh token only for a write key: a token grants playback to
// whoever holds it, which is more than a read key may hand out, so a read
// key gets the URLs without one (and no playback_token_expires_at).
func (s *Service) writeAssetView(w http.ResponseWriter, r *http.Request, status int, a *Asset) {
	out := assetJSON{
		ID: a.ID, JobID: a.JobID, State: a.State, Policy: a.PlaybackPolicy, DurationSeconds: a.DurationSeconds,
		Renditions: make([]renditionJSON, 0, len(a.Renditions)+len(a.Failed)),
		Links: map[string]string{
			"self": s.public + "/v1/assets/" + a.ID,
			"job":  s.public + "/v1/jobs/" + a.JobID,
		},
	}
	st := renditionReady
	if !a.Ready() {
		st = renditionPlayable // still being encoded; bandwidths are estimates until READY
	}
	for _, r := range a.Renditions {
		out.Renditions = append(out.Renditions, renditionJSON{Name: r.Name, Width: r.Width, Height: r.Height,
			FrameRate: r.FrameRate, Bandwidth: r.Bandwidth, AverageBandwidth: r.AverageBandwidth, Codecs: r.Codecs,
			State: st})
	}
	for _, r := range a.Failed {
		out.Renditions = append(out.Renditions, renditionJSON{Name: r.Name, Width: r.Width, Height: r.Height,
			State: renditionFailed, Error: &httpapi.ErrorDetail{Code: r.ErrorCode, Message: r.ErrorMessage}})
	}
	out.PlayableAt = timeOrNil(a.PlayableAt)
	if a.Playable() {
		token := ""
		if a.PlaybackPolicy == policy.Signed && len(s.signingKey) > 0 && httpapi.KeyScope(r.Context()) == httpapi.ScopeWrite {
			exp := expiryAfter(s.now(), s.tokenTTL)
			token, out.TokenExpiresAt = MintToken(s.signingKey, a.ID, exp), &exp
			w.Header().Set("Cache-Control", "no-store")
		}
		out.Playback = s.playbackURLs(a, token)
		out.Thumbnails = s.thumbnailURLs(a, token)
	}
	httpapi.WriteJSON(w, status, out)
}

// playbackURLs are the asset's playback URLs, carrying token when not empty.
func (s *Service) playbackURLs(a *Asset, token string) *playbackJSON {
	play, q := s.public+"/v1/play/"+a.ID, ""
	if token != "" {
		q = "?token=" + url.QueryEscape(token)
	}
	p := &playbackJSON{HLS: play + "/master.m3u8" + q}
	if a.MP4Key != "" {
		p.MP4 = play + "/download.mp4" + q
	}
	if a.PosterKey != "" {
		p.Poster = play + "/poster.jpg" + q
	}
	return p
}

// expiryAfter is now+ttl rounded up to the second (tokens carry seconds).
func expiryAfter(now time.Time, ttl time.Duration) time.Time {
	exp := now.Add(ttl)
	if t := exp.Truncate(time.Second); !t.Equal(exp) {
		exp = t.Add(time.Second)
	}
	return exp.UTC()
}

// maxTokenRequest bounds the body of POST /v1/assets/{id}/playback-token.
const maxTokenRequest = 4 << 10

type tokenJSON struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	HLS       string    `json:"hls"`
	MP4       string    `json:"mp4,omitempty"`
	Poster    string    `json:"poster,omitempty"`
}

// mintToken answers POST /v1/assets/{id}/playback-token with an optional
// body {"ttl_seconds": N}, N from 1 to MaxTokenTTL; default Config.TokenTTL.
// Public assets ignore tokens, so their URLs work with or without one.
func (s *Service) mintToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TTLSeconds *int64 `json:"ttl_seconds"`
	}
	if !httpapi.DecodeJSON(w, r, &req, maxTokenRequest, false) {
		return
	}
	ttl := s.tokenTTL
	if n := req.TTLSeconds; n != nil {
		if *n < 1 || *n > int64(MaxTokenTTL/time.Second) {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest,
				fmt.Sprintf("ttl_seconds must be from 1 to %d", int64(MaxTokenTTL/time.Second)))
			return
		}
		ttl = time.Duration(*n) * time.Second
	}
	a, ok := s.asset(w, r)
	if !ok {
		return
	}
	if len(s.signingKey) == 0 {
		httpapi.WriteError(w, http.StatusServiceUnavailable, CodeSigningNotConfigured, "no playback signing key is configured")
		return
	}
	exp := expiryAfter(s.now(), ttl)
	token := MintToken(s.signingKey, a.ID, exp)
	urls := s.playbackURLs(a, token)
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, tokenJSON{Token: token, ExpiresAt: exp, HLS: urls.HLS, MP4: urls.MP4, Poster: urls.Poster})
}

// asset loads the asset named by the {id} path value, answering the request
// itself (and returning false) when it is malformed or unknown.
func (s *Service) asset(w http.ResponseWriter, r *http.Request) (*Asset, bool) {
	id := r.PathValue("id")
	if !jobid.ValidAsset(id) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed asset id")
		return nil, false
	}
	a, err := s.store.Asset(r.Context(), id)
	if err == nil && !httpapi.Owns(r.Context(), a.TenantID) {
		err = ErrNotFound // another tenant's asset is not there for this key
	}
	if err != nil {
		s.storeError(w, r, err, "asset")
		return nil, false
	}
	return a, true
}

// playableAsset is asset, read through the playback cache (assetCache),
// but answers 404 for an asset that does not play (yet, or any more):
// neither ready nor playable (Asset.Playable).
func (s *Service) playableAsset(w http.ResponseWriter, r *http.Request) (*Asset, bool) {
	id := r.PathValue("id")
	if !jobid.ValidAsset(id) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed asset id")
		return nil, false
	}
	a, err := s.cachedAsset(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "asset")
		return nil, false
	}
	if !a.Playable() {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "asset is not playable")
		return nil, false
	}
	return a, true
}

// rendition is playableAsset plus the rendition named by {rendition}.
func (s *Service) rendition(w http.ResponseWriter, r *http.Request) (*Asset, Rendition, bool) {
	a, ok := s.playableAsset(w, r)
	if !ok {
		return nil, Rendition{}, false
	}
	rend, ok := a.Rendition(r.PathValue("rendition"))
	if !ok {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such rendition")
	}
	return a, rend, ok
}

func (s *Service) storeError(w http.ResponseWriter, r *http.Request, err error, what string) {
	if errors.Is(err, ErrNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, what+" not found")
		return
	}
	s.internal(w, r, err)
}

func (s *Service) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("catalog request failed", zap.String("path", r.URL.Path), zap.Error(err))
	httpapi.WriteError(w, http.StatusInternalServerError, httpapi.CodeInternal, "internal error")
}
