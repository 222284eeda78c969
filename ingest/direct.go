package ingest

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/tasks"
)

// Direct uploads: the client PUTs the file straight to the sources bucket
// with a presigned URL; the bucket notification starts the job as for any
// object. The preset and playback policy travel as the object's user
// metadata, and the size as Content-Length: all three are signed into the
// URL, so the client must send exactly the returned headers.
//
// The URL is short-lived: whoever holds it may PUT the object again until
// it expires, and a replaced source fails its job (every read of it is
// pinned to the ETag the job was made for, workers.PinHeaders) and starts
// another. Config.DirectUploadTTL (KILN_DIRECT_UPLOAD_TTL) sets how long.
//
// A large upload (over Config.MultipartThreshold) or one asking for it is
// a multipart upload instead: multipart.go.
const (
	// DefaultDirectUploadTTL is Config.DirectUploadTTL's default.
	DefaultDirectUploadTTL = 15 * time.Minute
	// MaxDirectUploadTTL bounds Config.DirectUploadTTL (S3's limit for
	// presigned URLs is 7 days; a longer-writable source is an open door).
	MaxDirectUploadTTL = 12 * time.Hour
	// maxJSONBody bounds JSON request bodies.
	maxJSONBody = 1 << 20
)

// DirectUploadRequest is the body of POST /v1/direct-uploads.
type DirectUploadRequest struct {
	Filename       string `json:"filename"`
	Size           *int64 `json:"size"`
	Preset         string `json:"preset"`
	PlaybackPolicy string `json:"playback_policy"`
	// Priority is "high", "normal" (the default) or "low".
	Priority string `json:"priority"`
	// Multipart asks for a multipart upload whatever the size (one is
	// made anyway above Config.MultipartThreshold); PartSize chooses its
	// part size.
	Multipart bool   `json:"multipart"`
	PartSize  *int64 `json:"part_size"`
	// WebhookURL is notified of the job's events, as with POST
	// /v1/uploads: multipart uploads only (completing one answers the job
	// id, and with it the webhook's secret).
	WebhookURL string `json:"webhook_url"`
}

// DirectUploadResponse is the answer to POST /v1/direct-uploads.
type DirectUploadResponse struct {
	UploadURL string            `json:"upload_url"`
	Method    string            `json:"method"`
	Headers   map[string]string `json:"headers"`
	Key       string            `json:"key"`
	ExpiresAt time.Time         `json:"expires_at"`
	// JobLookupURL lists the object's job once it has landed (the job id
	// derives from the object's ETag, unknown until then).
	JobLookupURL string `json:"job_lookup_url"`
}

func (s *Service) directUpload(w http.ResponseWriter, r *http.Request) {
	var req DirectUploadRequest
	if !httpapi.DecodeJSON(w, r, &req, maxJSONBody, true) {
		return
	}
	switch {
	case req.Size == nil || *req.Size < 1:
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, "size (bytes, at least 1) is required")
		return
	case *req.Size > s.cfg.MaxUploadBytes:
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "size exceeds "+strconv.FormatInt(s.cfg.MaxUploadBytes, 10)+" bytes")
		return
	case len(req.Filename) > 1024:
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, "filename is too long")
		return
	}
	multipart := req.Multipart || *req.Size > s.cfg.MultipartThreshold
	switch {
	case req.PartSize != nil && !multipart:
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, `part_size needs "multipart": true`)
		return
	case req.WebhookURL != "" && !multipart:
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidHook, `webhook_url needs "multipart": true`)
		return
	case req.WebhookURL != "" && !ValidWebhookURL(req.WebhookURL):
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidHook, "webhook_url must be an absolute http(s) URL without credentials, at most 2048 bytes")
		return
	}
	if req.Preset == "" {
		req.Preset = "default"
	}
	if !slices.Contains(s.cfg.Presets, req.Preset) {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidPreset, "unknown preset "+strconv.Quote(req.Preset))
		return
	}
	if req.PlaybackPolicy == "" {
		req.PlaybackPolicy = policy.Public
	}
	if !policy.Valid(req.PlaybackPolicy) {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidPolicy, `playback_policy must be "public" or "signed"`)
		return
	}
	if req.Priority == "" {
		req.Priority = tasks.PriorityNormal
	}
	if !tasks.ValidPriority(req.Priority) {
		writePriorityError(w)
		return
	}
	if multipart {
		s.startMultipart(w, r, req)
		return
	}
	if s.cfg.Presigner == nil {
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "direct uploads are not supported by this server")
		return
	}
	key := layout.NewSourceKey(req.Filename)
	ttl := s.cfg.DirectUploadTTL
	// The reservation lasts as long as the URL can still be used, and then
	// as long as the landed object takes to become a job.
	rsv, ok := s.admit(w, r, key, *req.Size, ttl+landHold)
	if !ok {
		return
	}
	headers := map[string]string{
		"Content-Length":                  strconv.FormatInt(*req.Size, 10),
		"X-Amz-Meta-" + layout.MetaPreset: req.Preset,
		"X-Amz-Meta-" + layout.MetaPolicy: req.PlaybackPolicy,
		"X-Amz-Meta-" + layout.MetaTenant: httpapi.Tenant(r.Context()),
	}
	if req.Priority != tasks.PriorityNormal {
		headers["X-Amz-Meta-"+layout.MetaPriority] = req.Priority
	}
	if tp := traceParentOf(r.Context()); tp != "" { // the job continues this request's trace
		headers["X-Amz-Meta-"+metaTraceParent] = tp
	}
	signed := http.Header{}
	for k, v := range headers {
		signed.Set(k, v)
	}
	expires := time.Now().Add(ttl).UTC().Truncate(time.Second)
	u, err := s.cfg.Presigner.PresignPut(r.Context(), s.cfg.SourcesBucket, key, ttl, signed)
	if err != nil {
		rsv.release(r.Context())
		if errors.Is(err, r.Context().Err()) {
			return
		}
		s.log.Error("presign direct upload", zap.String("key", key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "presigning the upload failed; retry")
		return
	}
	s.log.Info("direct upload presigned", zap.String("key", key), zap.Int64("bytes", *req.Size))
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusCreated, DirectUploadResponse{
		UploadURL: u.String(), Method: http.MethodPut, Headers: headers, Key: key, ExpiresAt: expires,
		JobLookupURL: s.cfg.PublicURL + "/v1/jobs?source_key=" + url.QueryEscape(key),
	})
}
