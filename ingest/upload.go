package ingest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Upload error codes.
const (
	CodeEmptyUpload   = "empty_upload"
	CodeTooLarge      = "too_large"
	CodeInvalidPreset = "invalid_preset"
	CodeBadMultipart  = "bad_multipart"
	CodeInvalidPolicy = "invalid_playback_policy"
	CodeInvalidHook   = "invalid_webhook_url"
)

// UploadResponse is the body of a successful POST /v1/uploads.
type UploadResponse struct {
	JobID     string `json:"job_id"`
	AssetID   string `json:"asset_id"`
	StatusURL string `json:"status_url"`
	AssetURL  string `json:"asset_url"`
}

// Handler returns the upload API routes (authentication is the caller's).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/uploads", s.upload)
	return mux
}

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
	policy := r.URL.Query().Get("playback_policy")
	if policy == "" {
		policy = PolicyPublic
	}
	if policy != PolicyPublic && policy != PolicySigned {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidPolicy, `playback_policy must be "public" or "signed"`)
		return
	}
	webhook := r.URL.Query().Get("webhook_url")
	if webhook != "" && !ValidWebhookURL(webhook) {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidHook, "webhook_url must be an absolute http(s) URL without credentials, at most 2048 bytes")
		return
	}
	if r.ContentLength > s.cfg.MaxUploadBytes {
		httpapi.WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "upload exceeds "+strconv.FormatInt(s.cfg.MaxUploadBytes, 10)+" bytes")
		return
	}
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

	key := "uploads/" + randomID() + "/" + cleanName(filename)
	info, err := s.cfg.Objects.Put(ctx, s.cfg.SourcesBucket, key, src, size, contentType,
		uploadMeta(preset, policy, webhook))
	if err != nil {
		if tooLarge(err) {
			httpapi.WriteError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "upload exceeds "+strconv.FormatInt(s.cfg.MaxUploadBytes, 10)+" bytes")
			return
		}
		s.log.Error("upload failed", zap.String("key", key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "storing the upload failed; retry")
		return
	}
	jobID, assetID := jobid.FromObject(info.Bucket, info.Key, info.ETag)
	landed := &kilnv1.ObjectLanded{
		Object: &kilnv1.ObjectRef{Bucket: info.Bucket, Key: info.Key, Etag: info.ETag, Size: info.Size, ContentType: contentType},
		Origin: "api", Preset: preset, PlaybackPolicy: policy, WebhookUrl: webhook, Time: timestamppb.Now(),
	}
	if err := s.cfg.Events.PublishObjectLanded(ctx, landed); err != nil {
		// The object is stored: the bucket notification or the reconciler
		// will still start the job, so the upload is accepted.
		s.log.Warn("publish object landed; relying on the bucket notification",
			zap.String("job_id", jobID), zap.Error(err))
	}
	s.log.Info("upload stored", zap.String("job_id", jobID), zap.String("key", key), zap.Int64("bytes", info.Size))
	httpapi.WriteJSON(w, http.StatusAccepted, UploadResponse{
		JobID: jobID, AssetID: assetID,
		StatusURL: s.cfg.PublicURL + "/v1/jobs/" + jobID,
		AssetURL:  s.cfg.PublicURL + "/v1/assets/" + assetID,
	})
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

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// cleanName keeps a readable, safe file name for the object key.
func cleanName(name string) string {
	name = unsafeName.ReplaceAllString(path.Base(strings.ReplaceAll(name, `\`, "/")), "_")
	if len(name) > 100 {
		name = name[len(name)-100:]
	}
	name = strings.TrimLeft(name, ".")
	if name == "" || name == "_" {
		return "source"
	}
	return name
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// uploadMeta is the S3 user metadata that lets the bucket notification
// start the same job as the API's own event.
func uploadMeta(preset, policy, webhook string) map[string]string {
	m := map[string]string{PresetMetaKey: preset, PolicyMetaKey: policy}
	if webhook != "" {
		m[WebhookMetaKey] = webhook
	}
	return m
}
