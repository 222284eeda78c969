package ingest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Upload error codes.
const (
	CodeEmptyUpload   = "empty_upload"
	CodeTooLarge      = httpapi.CodeTooLarge
	CodeInvalidPreset = failure.InvalidPreset
	CodeBadMultipart  = "bad_multipart"
	CodeInvalidPolicy = "invalid_playback_policy"
	// CodeInvalidPriority: priority is not high, normal or low.
	CodeInvalidPriority = "invalid_priority"
	CodeInvalidHook     = "invalid_webhook_url"
	// CodeUploadStalled (408): the body sent nothing for
	// Config.UploadProgressTimeout.
	CodeUploadStalled = "upload_stalled"
)

// UploadResponse is the body of a successful POST /v1/uploads.
type UploadResponse struct {
	JobID     string `json:"job_id"`
	AssetID   string `json:"asset_id"`
	StatusURL string `json:"status_url"`
	AssetURL  string `json:"asset_url"`
	// WebhookSecret signs the deliveries to this upload's webhook_url
	// (webhooks.UploadSecret): only in the first answer of an upload with a
	// webhook_url; never stored, never shown again (an idempotent replay
	// answers without it).
	WebhookSecret string `json:"webhook_secret,omitempty"`
}

// Routes lists the upload API (every route needs an API key):
//
//	POST   /v1/uploads                           stream a file into the sources bucket
//	POST   /v1/direct-uploads                    presign a PUT straight to the sources bucket, or start a multipart upload
//	POST   /v1/direct-uploads/{id}/parts         presigned part URLs of a multipart upload
//	GET    /v1/direct-uploads/{id}               the parts stored so far
//	POST   /v1/direct-uploads/{id}/complete      make the object and start its job
//	DELETE /v1/direct-uploads/{id}               abort it
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		httpapi.Authed("POST /v1/uploads", s.upload),
		httpapi.Authed("POST /v1/direct-uploads", s.directUpload),
		httpapi.Authed("POST /v1/direct-uploads/{id}/parts", s.uploadParts),
		httpapi.Authed("GET /v1/direct-uploads/{id}", s.uploadStatus),
		httpapi.Authed("POST /v1/direct-uploads/{id}/complete", s.completeUpload),
		httpapi.Authed("DELETE /v1/direct-uploads/{id}", s.abortUpload),
	}
}

// Handler serves Routes without checking API keys (the process mounts
// Routes behind its keys; unit tests use this).
func (s *Service) Handler() http.Handler { return httpapi.Handler(nil, s.Routes()) }

// upload streams the request body — raw, or the first file part of a
// multipart/form-data body — into the sources bucket, then publishes the
// "object landed" fact and answers with the job id.
func (s *Service) upload(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	preset := r.URL.Query().Get("preset")
	if preset == "" {
		preset = "default"
	}
	if !slices.Contains(s.cfg.Presets, preset) {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidPreset, "unknown preset "+strconv.Quote(preset))
		return
	}
	playback := cmp.Or(r.URL.Query().Get("playback_policy"), policy.Public)
	if !policy.Valid(playback) {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidPolicy, `playback_policy must be "public" or "signed"`)
		return
	}
	priority := cmp.Or(r.URL.Query().Get("priority"), tasks.PriorityNormal)
	if !tasks.ValidPriority(priority) {
		writePriorityError(w)
		return
	}
	webhook := r.URL.Query().Get("webhook_url")
	if webhook != "" && !ValidWebhookURL(webhook) {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidHook, "webhook_url must be an absolute http(s) URL without credentials, at most 2048 bytes")
		return
	}
	idemKey, idemSet := r.Header.Get(IdempotencyHeader), len(r.Header.Values(IdempotencyHeader)) > 0
	if idemSet && !validIdempotencyKey(idemKey) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest,
			fmt.Sprintf("%s must be 1 to %d printable ASCII characters", IdempotencyHeader, MaxIdempotencyKey))
		return
	}
	if idemSet && s.cfg.Idempotency == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, IdempotencyHeader+" is not supported by this server")
		return
	}
	if r.ContentLength > s.cfg.MaxUploadBytes {
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "upload exceeds "+strconv.FormatInt(s.cfg.MaxUploadBytes, 10)+" bytes")
		return
	}
	// The server's read timeout would cut any large upload: the body gets a
	// progress deadline instead, pushed back as bytes arrive.
	progress := newProgressBody(w, r.Body, cmp.Or(s.cfg.UploadProgressTimeout, DefaultUploadProgressTimeout))
	r.Body = progress
	// Replace r.Body so that the multipart reader is bounded too.
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	var (
		src         io.Reader = r.Body
		size                  = r.ContentLength
		filename              = r.URL.Query().Get("filename")
		contentType           = r.Header.Get("Content-Type")
	)
	mediaType, _, _ := mime.ParseMediaType(contentType)
	if mediaType == "multipart/form-data" {
		part, err := firstFilePart(r)
		if tooLarge(err) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "upload exceeds "+strconv.FormatInt(s.cfg.MaxUploadBytes, 10)+" bytes")
			return
		}
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, CodeBadMultipart, err.Error())
			return
		}
		defer part.Close()
		src, size = part, -1
		if filename == "" {
			filename = part.FileName()
		}
		contentType = part.Header.Get("Content-Type")
	}
	if contentType == "" || strings.HasPrefix(contentType, "multipart/") {
		contentType = "application/octet-stream"
	}
	// Refuse an empty body before creating anything.
	peek := make([]byte, 1)
	n, err := io.ReadFull(src, peek)
	if n == 0 {
		if tooLarge(err) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "upload too large")
			return
		}
		httpapi.WriteError(w, http.StatusBadRequest, CodeEmptyUpload, "the upload has no content")
		return
	}
	src = io.MultiReader(strings.NewReader(string(peek[:n])), src)

	// With an Idempotency-Key, the request is hashed as it streams: its
	// parameters, then every byte of the file.
	var idem *idemClaim
	if idemSet {
		h := sha256.New()
		fmt.Fprintf(h, "kiln-upload-v1\x00%s\x00%s\x00%s\x00%s\x00", preset, playback, webhook, filename)
		if priority != tasks.PriorityNormal { // requests that predate priorities hash as they did
			fmt.Fprintf(h, "priority\x00%s\x00", priority)
		}
		src = io.TeeReader(src, h)
		idem = &idemClaim{key: scopedIdempotencyKey(r.Header.Get("Authorization"), idemKey), token: newToken(), hash: h}
		rec, reserved, err := s.cfg.Idempotency.Reserve(ctx, idem.key, idem.token, reservationTTL)
		if err != nil {
			s.log.Error("idempotency reserve", zap.Error(err))
			httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "idempotency store unavailable; retry")
			return
		}
		if !reserved {
			s.repeat(w, rec, src, h)
			return
		}
		stop := keepReserved(ctx, s.cfg.Idempotency, idem.key, idem.token)
		defer stop()
	}

	key := layout.NewSourceKey(filename)
	// Quotas before any byte is stored: a repeat of an idempotent upload
	// replayed above, and counts nothing.
	rsv, ok := s.admit(w, r, key, size, streamHold)
	if !ok {
		s.releaseIdempotency(ctx, idem)
		return
	}
	jobOnItsWay := false
	defer func() {
		if jobOnItsWay {
			rsv.landed(ctx, landHold)
		} else {
			rsv.release(ctx)
		}
	}()
	stopHold := rsv.keepWhileStreaming(ctx)
	info, err := s.cfg.Objects.Put(ctx, s.cfg.SourcesBucket, key, rsv.limit(src, s.cfg.MaxUploadBytes), size, contentType,
		uploadMeta(ctx, preset, playback, webhook, priority))
	stopHold()
	if err != nil {
		s.releaseIdempotency(ctx, idem)
		if errors.Is(err, errOverQuota) {
			httpapi.WriteError(w, http.StatusForbidden, quota.CodeQuotaExceeded, "stored_bytes quota: the upload passes the bytes the quota has left")
			return
		}
		if tooLarge(err) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "upload exceeds "+strconv.FormatInt(s.cfg.MaxUploadBytes, 10)+" bytes")
			return
		}
		if progress.stalled {
			s.log.Warn("upload stalled: cut", zap.String("key", key), zap.Error(err))
			httpapi.WriteError(w, http.StatusRequestTimeout, CodeUploadStalled,
				"the upload sent nothing for "+cmp.Or(s.cfg.UploadProgressTimeout, DefaultUploadProgressTimeout).String()+"; retry")
			return
		}
		s.log.Error("upload failed", zap.String("key", key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "storing the upload failed; retry")
		return
	}
	jobID, assetID := jobid.FromObject(info.Bucket, info.Key, info.ETag)
	resp := UploadResponse{
		JobID: jobID, AssetID: assetID,
		StatusURL: s.cfg.PublicURL + "/v1/jobs/" + jobID,
		AssetURL:  s.cfg.PublicURL + "/v1/assets/" + assetID,
	}
	if webhook != "" && s.cfg.WebhookSecret != "" {
		if resp.WebhookSecret, err = webhooks.UploadSecret(s.cfg.WebhookSecret, jobID); err != nil {
			s.log.Error("per-upload webhook secret", zap.Error(err)) // KILN_WEBHOOK_SECRET is checked at startup
			resp.WebhookSecret = ""
		}
	}
	// Before the job starts, make sure this request still holds its key:
	// one that lost it answers as the request that took it.
	if idem != nil && !s.stillReserved(r.Context(), idem) {
		s.lost(w, r, idem, info)
		return
	}
	landed := &kilnv1.ObjectLanded{
		Object: &kilnv1.ObjectRef{Bucket: info.Bucket, Key: info.Key, Etag: info.ETag, Size: info.Size, ContentType: contentType},
		Origin: "api", Preset: preset, PlaybackPolicy: playback, WebhookUrl: webhook, Priority: priority, Time: timestamppb.Now(),
		TenantId: httpapi.Tenant(ctx),
	}
	// A client that disconnects now must not lose its job: the fact is
	// published with a context of its own.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PublishTimeout)
	err = s.cfg.Events.PublishObjectLanded(pctx, landed)
	cancel()
	if err != nil {
		// The upload is not recorded durably, so no 202: the client retries.
		// The object stays (its bucket notification may still start the
		// job, under the same id), and so that a retry with the same
		// Idempotency-Key uploads again rather than replaying a job id that
		// may never start, the key is released.
		s.log.Error("publish object landed", zap.String("job_id", jobID), zap.String("key", key), zap.Error(err))
		s.releaseIdempotency(ctx, idem)
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the upload could not be recorded; retry")
		return
	}
	jobOnItsWay = true
	if idem != nil && !s.complete(w, r, idem, info, resp) {
		return
	}
	s.log.Info("upload stored", zap.String("job_id", jobID), zap.String("key", key), zap.Int64("bytes", info.Size))
	httpapi.WriteJSON(w, http.StatusAccepted, resp)
}

// releaseIdempotency gives up idem's reservation (nil: none), so that a
// retry with the same key uploads again.
func (s *Service) releaseIdempotency(ctx context.Context, idem *idemClaim) {
	if idem == nil {
		return
	}
	if err := s.cfg.Idempotency.Release(context.WithoutCancel(ctx), idem.key, idem.token); err != nil {
		s.log.Warn("idempotency release", zap.Error(err))
	}
}

// RetryAfterSeconds is the Retry-After of an upload answered 503 because
// its "object landed" fact could not be published.
const RetryAfterSeconds = 5

// stillReserved reports whether idem's reservation is still this request's,
// extending it; when the store cannot tell, it assumes so (Complete checks
// again).
func (s *Service) stillReserved(ctx context.Context, idem *idemClaim) bool {
	ok, err := s.cfg.Idempotency.Extend(context.WithoutCancel(ctx), idem.key, idem.token, reservationTTL)
	if err != nil {
		s.log.Warn("idempotency extend", zap.Error(err))
		return true
	}
	return ok
}

// idemClaim is an upload's reservation of its Idempotency-Key.
type idemClaim struct {
	key, token string
	hash       hash.Hash
}

// repeat answers a request whose Idempotency-Key is taken: 409 while the
// first request runs; otherwise its body is hashed (read, never stored) and
// compared with the first request's: the same gets the first answer again
// (200, Idempotent-Replayed: true), another a 409.
func (s *Service) repeat(w http.ResponseWriter, rec IdempotencyRecord, src io.Reader, h hash.Hash) {
	if !rec.Done() {
		httpapi.WriteError(w, http.StatusConflict, CodeIdempotencyConflict, "a request with this "+IdempotencyHeader+" is still in progress")
		return
	}
	if _, err := io.Copy(io.Discard, src); err != nil {
		if tooLarge(err) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "upload exceeds "+strconv.FormatInt(s.cfg.MaxUploadBytes, 10)+" bytes")
			return
		}
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, "reading the upload failed")
		return
	}
	replay(w, rec, hex.EncodeToString(h.Sum(nil)))
}

// replay answers with rec's answer when hash is rec's, else a 409.
func replay(w http.ResponseWriter, rec IdempotencyRecord, hash string) {
	if rec.Hash != hash {
		httpapi.WriteError(w, http.StatusConflict, CodeIdempotencyConflict,
			"this "+IdempotencyHeader+" was used with a different request")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Idempotent-Replayed", "true")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(rec.Response)
}

// complete records the upload's answer under its Idempotency-Key. If the
// reservation was lost meanwhile, lost answers and complete returns false.
func (s *Service) complete(w http.ResponseWriter, r *http.Request, idem *idemClaim, info objstore.Info, resp UploadResponse) bool {
	ctx := context.WithoutCancel(r.Context())
	resp.WebhookSecret = "" // a secret is not kept, and not replayed
	body, _ := json.Marshal(resp)
	sum := hex.EncodeToString(idem.hash.Sum(nil))
	ok, err := s.cfg.Idempotency.Complete(ctx, idem.key, idem.token,
		IdempotencyRecord{Hash: sum, Status: http.StatusAccepted, Response: body}, IdempotencyTTL)
	if err != nil {
		// The upload is stored and its job will run: answer it; only a
		// retry of this request would not be recognised.
		s.log.Warn("idempotency complete", zap.String("job_id", resp.JobID), zap.Error(err))
		return true
	}
	if ok {
		return true
	}
	s.lost(w, r, idem, info)
	return false
}

// lost answers an upload whose reservation was lost meanwhile (it outlived
// reservationTTL without being extended) and taken by another request: the
// object just stored is removed and that request's answer decides (replay
// or 409).
func (s *Service) lost(w http.ResponseWriter, r *http.Request, idem *idemClaim, info objstore.Info) {
	ctx := context.WithoutCancel(r.Context())
	sum := hex.EncodeToString(idem.hash.Sum(nil))
	rec, found, err := s.cfg.Idempotency.Get(ctx, idem.key)
	if err == nil && found && !rec.Done() {
		err = errors.New("another request holds the key")
	}
	if rerr := s.removeObject(ctx, info); rerr != nil {
		s.log.Error("remove duplicate upload", zap.String("key", info.Key), zap.Error(rerr))
	}
	switch {
	case err != nil:
		httpapi.WriteError(w, http.StatusConflict, CodeIdempotencyConflict, "a request with this "+IdempotencyHeader+" is still in progress")
	case !found: // expired in between: nothing to compare with
		httpapi.WriteError(w, http.StatusConflict, CodeIdempotencyConflict, "the "+IdempotencyHeader+" reservation expired; retry")
	default:
		replay(w, rec, sum)
	}
}

// removeObject deletes an object ingest stored, when it must not stay.
func (s *Service) removeObject(ctx context.Context, info objstore.Info) error {
	if s.cfg.Remover == nil {
		return errors.New("no remover configured")
	}
	return s.cfg.Remover.Remove(ctx, info.Bucket, info.Key)
}

// firstFilePart returns the first part of a multipart body that is a file.
func firstFilePart(r *http.Request) (*multipart.Part, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, err
	}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("multipart body has no file part")
		}
		if err != nil {
			return nil, err
		}
		if p.FileName() != "" {
			return p, nil
		}
		_ = p.Close()
	}
}

// DefaultUploadProgressTimeout is Config.UploadProgressTimeout's default.
const DefaultUploadProgressTimeout = time.Minute

// progressBody is a request body whose read deadline is idle from the last
// byte received: a client that keeps sending may take as long as it needs,
// one that stops is cut idle later (its Read fails with a timeout). The
// deadline moves at most once a second (idle/4 for short ones).
type progressBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	idle     time.Duration
	step     time.Duration
	extended time.Time
	ok       bool // the writer supports read deadlines
	stalled  bool // a read failed on the deadline
}

func newProgressBody(w http.ResponseWriter, body io.ReadCloser, idle time.Duration) *progressBody {
	b := &progressBody{ReadCloser: body, rc: http.NewResponseController(w), idle: idle, step: min(time.Second, idle/4)}
	b.extended = time.Now()
	b.ok = b.rc.SetReadDeadline(b.extended.Add(idle)) == nil
	return b
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.stalled = true
	}
	if n > 0 && b.ok {
		if now := time.Now(); now.Sub(b.extended) >= b.step {
			b.extended = now
			_ = b.rc.SetReadDeadline(now.Add(b.idle))
		}
	}
	return n, err
}

func tooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// uploadMeta is the S3 user metadata that lets the bucket notification
// start the same job as the API's own event (in the same trace, for the
// same tenant: the request's).
func uploadMeta(ctx context.Context, preset, playback, webhook, priority string) map[string]string {
	m := map[string]string{layout.MetaPreset: preset, layout.MetaPolicy: playback, layout.MetaTenant: httpapi.Tenant(ctx)}
	if webhook != "" {
		m[layout.MetaWebhook] = webhook
	}
	if priority != "" && priority != tasks.PriorityNormal {
		m[layout.MetaPriority] = priority
	}
	if tp := traceParentOf(ctx); tp != "" {
		m[metaTraceParent] = tp
	}
	return m
}

// traceParentOf is the W3C traceparent of ctx's span ("" without one).
func traceParentOf(ctx context.Context) string {
	tc := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, tc)
	return tc.Get(traceParent)
}

func writePriorityError(w http.ResponseWriter) {
	httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidPriority, `priority must be "high", "normal" or "low"`)
}
