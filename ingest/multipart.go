package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/tenant"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Multipart direct uploads: a large file (or any file, asked for with
// "multipart": true) is uploaded straight to the sources bucket as an S3
// multipart upload whose parts the client PUTs through presigned URLs, in
// any order, in parallel, and again after a drop: the parts already stored
// stay, and GET /v1/direct-uploads/{id} lists them, so a client resumes
// with the missing ones only. Completing the upload makes the object, whose
// bucket notification (s3:ObjectCreated:CompleteMultipartUpload, ETag
// "<hex>-<parts>") starts the job as for any object; the complete route
// also publishes the "object landed" fact itself and answers the job id.
//
// The server keeps nothing: the upload id it answers is the S3 upload id,
// the object key, the declared size, the part size and the creation time,
// signed with an HMAC (Config.UploadIDKey). Any ingest replica verifies it,
// across restarts and without Redis, and the S3 upload itself holds the
// parts; the signature stops a client from naming another key or upload,
// or changing the size, the part size or the age of its own. Uploads not
// completed within Config.UploadAbortAfter are aborted by SweepUploads.
const (
	// DefaultUploadAbortAfter is Config.UploadAbortAfter's default.
	DefaultUploadAbortAfter = 24 * time.Hour
	// MaxUploadAbortAfter bounds Config.UploadAbortAfter.
	MaxUploadAbortAfter = 30 * 24 * time.Hour
	// DefaultMultipartThreshold is Config.MultipartThreshold's default:
	// S3's largest single PUT.
	DefaultMultipartThreshold = objstore.MaxPartSize
	// DefaultPartSize is the part size of a multipart upload that asks
	// for none (larger when the file needs it to fit 10,000 parts).
	DefaultPartSize = 16 << 20
	// DefaultPartBatch and MaxPartBatch: part URLs per answer.
	DefaultPartBatch = 100
	MaxPartBatch     = 1000
	// maxUploadID bounds an upload id in a request path.
	maxUploadID = 4096
	// uploadIDPrefix starts every multipart upload id.
	uploadIDPrefix = "mpu_"
)

// Multipart upload error codes.
const (
	// CodeUploadNotFound (404): the id names no upload in progress: never
	// made here, completed long ago, or aborted.
	CodeUploadNotFound = "upload_not_found"
	// CodeUploadExpired (410): older than Config.UploadAbortAfter; it is
	// (or will be) aborted. Start a new one.
	CodeUploadExpired = "upload_expired"
	// CodeInvalidParts (400): the part list of a complete request does
	// not describe the upload (numbers out of range, repeated, unordered,
	// missing ETags).
	CodeInvalidParts = "invalid_parts"
	// CodePartsIncomplete (409): parts are not stored yet.
	CodePartsIncomplete = "parts_incomplete"
	// CodePartsMismatch (409): a part's ETag is not the stored part's, or
	// a stored part has another size than the upload's plan.
	CodePartsMismatch = "parts_mismatch"
)

// Multipart is the object storage of multipart direct uploads
// (objstore.Client).
type Multipart interface {
	NewMultipartUpload(ctx context.Context, bucket, key, contentType string, meta map[string]string) (string, error)
	PresignUploadPart(ctx context.Context, bucket, key, uploadID string, part int, size int64, ttl time.Duration) (*url.URL, error)
	ListParts(ctx context.Context, bucket, key, uploadID string) ([]objstore.Part, error)
	CompleteMultipartUpload(ctx context.Context, bucket, key, uploadID string, parts []objstore.Part) (string, error)
	AbortMultipartUpload(ctx context.Context, bucket, key, uploadID string) error
	ListMultipartUploads(ctx context.Context, bucket, prefix string) ([]objstore.Upload, error)
	Stat(ctx context.Context, bucket, key string) (objstore.Info, error)
}

var _ Multipart = (*objstore.Client)(nil)

// UploadIDKey derives the key that signs multipart upload ids from a
// secret every ingest replica shares (the S3 secret key): nil for none,
// which leaves multipart uploads off.
func UploadIDKey(secret string) []byte {
	if secret == "" {
		return nil
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("kiln multipart upload ids v1"))
	return m.Sum(nil)
}

// uploadToken is what a multipart upload id carries.
type uploadToken struct {
	Key      string `json:"k"`
	UploadID string `json:"u"`
	Size     int64  `json:"s"`
	PartSize int64  `json:"p"`
	Created  int64  `json:"t"` // Unix seconds
	// Tenant is the tenant of the key that started the upload: only its
	// keys may act on it ("" in ids signed before tenants: the default).
	Tenant string `json:"n,omitempty"`
}

func (t uploadToken) partCount() int { return int((t.Size + t.PartSize - 1) / t.PartSize) }

// partSize is the size of part n (1-based): PartSize, the last one the rest.
func (t uploadToken) partSize(n int) int64 {
	if n == t.partCount() {
		return t.Size - int64(n-1)*t.PartSize
	}
	return t.PartSize
}

func (s *Service) expiresAt(t uploadToken) time.Time {
	return time.Unix(t.Created, 0).Add(s.cfg.UploadAbortAfter).UTC()
}

func (s *Service) signToken(t uploadToken) string {
	body, _ := json.Marshal(t)
	payload := base64.RawURLEncoding.EncodeToString(body)
	return uploadIDPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

func (s *Service) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.cfg.UploadIDKey)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// errTokenForged: a well-formed id whose signature is not ours.
var errTokenForged = errors.New("forged")

// parseToken reads and verifies an upload id.
func (s *Service) parseToken(id string) (uploadToken, error) {
	var t uploadToken
	rest, ok := strings.CutPrefix(id, uploadIDPrefix)
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || len(id) > maxUploadID {
		return t, errors.New("malformed")
	}
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return t, errors.New("malformed")
	}
	if !hmac.Equal(mac, s.mac(payload)) {
		return t, errTokenForged
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || json.Unmarshal(body, &t) != nil || !strings.HasPrefix(t.Key, layout.SourcePrefix) ||
		!layout.IsSourceKey(t.Key) || t.UploadID == "" || t.Size < 1 || t.PartSize < 1 || t.partCount() > objstore.MaxParts {
		return uploadToken{}, errTokenForged // signed by us, so never: refuse it all the same
	}
	return t, nil
}

// uploadOf reads the {id} of a request; when it fails it has answered.
// expired also accepts an upload older than UploadAbortAfter.
func (s *Service) uploadOf(w http.ResponseWriter, r *http.Request, expired bool) (uploadToken, bool) {
	if !s.multipartOn() {
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "multipart uploads are not supported by this server")
		return uploadToken{}, false
	}
	t, err := s.parseToken(r.PathValue("id"))
	switch {
	case errors.Is(err, errTokenForged):
		httpapi.WriteError(w, http.StatusNotFound, CodeUploadNotFound, "no such upload")
		return t, false
	case err != nil:
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "not an upload id")
		return t, false
	case tenant.OfEvent(t.Tenant) != httpapi.Tenant(r.Context()): // another tenant's: as if it did not exist
		httpapi.WriteError(w, http.StatusNotFound, CodeUploadNotFound, "no such upload")
		return uploadToken{}, false
	case !expired && !time.Now().Before(s.expiresAt(t)):
		httpapi.WriteError(w, http.StatusGone, CodeUploadExpired,
			"the upload was not completed within "+s.cfg.UploadAbortAfter.String()+" and is aborted; start a new one")
		return t, false
	}
	return t, true
}

func (s *Service) multipartOn() bool { return s.cfg.Multipart != nil && len(s.cfg.UploadIDKey) > 0 }

// choosePartSize is the part size of a multipart upload of size bytes
// (asked: the client's, 0 for none), or a message why asked cannot be.
func choosePartSize(size, asked int64) (int64, string) {
	least := (size + objstore.MaxParts - 1) / objstore.MaxParts
	if asked == 0 {
		return max(DefaultPartSize, int64(objstore.PartSizeFor(size))), ""
	}
	switch {
	case asked < objstore.MinPartSize || asked > objstore.MaxPartSize:
		return 0, fmt.Sprintf("part_size must be %d to %d bytes", objstore.MinPartSize, int64(objstore.MaxPartSize))
	case asked < least:
		return 0, fmt.Sprintf("part_size must be at least %d bytes for %d bytes in %d parts", least, size, objstore.MaxParts)
	}
	return asked, ""
}

// PartURL is one presigned part PUT.
type PartURL struct {
	PartNumber int    `json:"part_number"`
	Size       int64  `json:"size"`
	URL        string `json:"url"`
	Method     string `json:"method"`
	// Headers must be sent exactly: the Content-Length is signed.
	Headers map[string]string `json:"headers"`
}

// MultipartUploadResponse is the answer to POST /v1/direct-uploads for a
// multipart upload.
type MultipartUploadResponse struct {
	Multipart bool      `json:"multipart"`
	UploadID  string    `json:"upload_id"`
	Key       string    `json:"key"`
	Size      int64     `json:"size"`
	PartSize  int64     `json:"part_size"`
	PartCount int       `json:"part_count"`
	ExpiresAt time.Time `json:"expires_at"`
	PartBatch
	UploadURL    string `json:"upload_url"`
	PartsURL     string `json:"parts_url"`
	CompleteURL  string `json:"complete_url"`
	JobLookupURL string `json:"job_lookup_url"`
}

// PartBatch is a batch of part URLs: the answer to POST
// /v1/direct-uploads/{id}/parts.
type PartBatch struct {
	Parts []PartURL `json:"parts"`
	// PartsExpireAt is when these URLs stop working (ask again then).
	PartsExpireAt time.Time `json:"parts_expire_at"`
}

// ReceivedPart is a stored part.
type ReceivedPart struct {
	PartNumber   int       `json:"part_number"`
	Size         int64     `json:"size"`
	ETag         string    `json:"etag"`
	LastModified time.Time `json:"last_modified"`
}

// MultipartStatus is the answer to GET /v1/direct-uploads/{id}.
type MultipartStatus struct {
	UploadID      string         `json:"upload_id"`
	Key           string         `json:"key"`
	Size          int64          `json:"size"`
	PartSize      int64          `json:"part_size"`
	PartCount     int            `json:"part_count"`
	ExpiresAt     time.Time      `json:"expires_at"`
	Parts         []ReceivedPart `json:"parts"`
	ReceivedBytes int64          `json:"received_bytes"`
}

// CompleteRequest is the optional body of POST
// /v1/direct-uploads/{id}/complete: the parts the client sent, checked
// against the stored ones. Without it the server lists them itself.
type CompleteRequest struct {
	Parts []CompletePart `json:"parts"`
}

// CompletePart is a part number and the ETag its PUT answered.
type CompletePart struct {
	PartNumber int    `json:"part_number"`
	ETag       string `json:"etag"`
}

// CompleteResponse is the answer to a completed upload: the job, as POST
// /v1/uploads answers it, and the object.
type CompleteResponse struct {
	UploadResponse
	Key  string `json:"key"`
	ETag string `json:"etag"`
}

// startMultipart starts the multipart upload of a validated request.
func (s *Service) startMultipart(w http.ResponseWriter, r *http.Request, req DirectUploadRequest) {
	if !s.multipartOn() {
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "multipart uploads are not supported by this server")
		return
	}
	var asked int64
	if req.PartSize != nil {
		asked = *req.PartSize
	}
	partSize, msg := choosePartSize(*req.Size, asked)
	if msg != "" {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, msg)
		return
	}
	key := layout.NewSourceKey(req.Filename)
	ctype := mime.TypeByExtension(strings.ToLower(path.Ext(key)))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	// Reserved until the upload is swept as abandoned, and then as long as
	// a completed one takes to become a job.
	rsv, ok := s.admit(w, r, key, *req.Size, s.cfg.UploadAbortAfter+landHold)
	if !ok {
		return
	}
	created := time.Now()
	uploadID, err := s.cfg.Multipart.NewMultipartUpload(r.Context(), s.cfg.SourcesBucket, key, ctype,
		uploadMeta(r.Context(), req.Preset, req.PlaybackPolicy, req.WebhookURL, req.Priority))
	if err != nil {
		rsv.release(r.Context())
		if errors.Is(err, r.Context().Err()) {
			return
		}
		s.log.Error("start multipart upload", zap.String("key", key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "starting the upload failed; retry")
		return
	}
	t := uploadToken{Key: key, UploadID: uploadID, Size: *req.Size, PartSize: partSize, Created: created.Unix(),
		Tenant: httpapi.Tenant(r.Context())}
	id := s.signToken(t)
	batch, err := s.partURLs(r.Context(), t, 1, DefaultPartBatch)
	if err != nil {
		s.log.Error("presign parts", zap.String("key", key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "presigning the upload failed; retry")
		return
	}
	s.log.Info("multipart upload started", zap.String("key", key), zap.Int64("bytes", t.Size), zap.Int("parts", t.partCount()))
	base := s.cfg.PublicURL + "/v1/direct-uploads/" + id
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusCreated, MultipartUploadResponse{
		Multipart: true, UploadID: id, Key: key, Size: t.Size, PartSize: partSize, PartCount: t.partCount(),
		ExpiresAt: s.expiresAt(t), PartBatch: batch,
		UploadURL: base, PartsURL: base + "/parts", CompleteURL: base + "/complete",
		JobLookupURL: s.cfg.PublicURL + "/v1/jobs?source_key=" + url.QueryEscape(key),
	})
}

// partURLs presigns parts from, from+1… (at most count, at most the last):
// each URL lives DirectUploadTTL, and never past the upload's expiry.
func (s *Service) partURLs(ctx context.Context, t uploadToken, from, count int) (PartBatch, error) {
	now := time.Now()
	ttl := min(s.cfg.DirectUploadTTL, s.expiresAt(t).Sub(now))
	last := min(t.partCount(), from+count-1)
	b := PartBatch{Parts: make([]PartURL, 0, last-from+1), PartsExpireAt: now.Add(ttl).UTC().Truncate(time.Second)}
	for n := from; n <= last; n++ {
		size := t.partSize(n)
		u, err := s.cfg.Multipart.PresignUploadPart(ctx, s.cfg.SourcesBucket, t.Key, t.UploadID, n, size, ttl)
		if err != nil {
			return PartBatch{}, err
		}
		b.Parts = append(b.Parts, PartURL{PartNumber: n, Size: size, URL: u.String(), Method: http.MethodPut,
			Headers: map[string]string{"Content-Length": strconv.FormatInt(size, 10)}})
	}
	return b, nil
}

// uploadParts answers POST /v1/direct-uploads/{id}/parts?from=N&count=M:
// presigned URLs of parts N to N+M-1 (default 1 and DefaultPartBatch).
func (s *Service) uploadParts(w http.ResponseWriter, r *http.Request) {
	t, ok := s.uploadOf(w, r, false)
	if !ok {
		return
	}
	intParam := func(name string, def, lo, hi int) (int, bool) {
		v := r.URL.Query().Get(name)
		if v == "" {
			return def, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, fmt.Sprintf("%s must be an integer from %d to %d", name, lo, hi))
			return 0, false
		}
		return n, true
	}
	from, ok := intParam("from", 1, 1, t.partCount())
	if !ok {
		return
	}
	count, ok := intParam("count", DefaultPartBatch, 1, MaxPartBatch)
	if !ok {
		return
	}
	batch, err := s.partURLs(r.Context(), t, from, count)
	if err != nil {
		s.log.Error("presign parts", zap.String("key", t.Key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "presigning the parts failed; retry")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, batch)
}

// uploadStatus answers GET /v1/direct-uploads/{id}: the parts stored.
func (s *Service) uploadStatus(w http.ResponseWriter, r *http.Request) {
	t, ok := s.uploadOf(w, r, false)
	if !ok {
		return
	}
	parts, err := s.cfg.Multipart.ListParts(r.Context(), s.cfg.SourcesBucket, t.Key, t.UploadID)
	if err != nil {
		s.storageError(w, r, t, "list parts", err)
		return
	}
	st := MultipartStatus{UploadID: r.PathValue("id"), Key: t.Key, Size: t.Size, PartSize: t.PartSize,
		PartCount: t.partCount(), ExpiresAt: s.expiresAt(t), Parts: make([]ReceivedPart, 0, len(parts))}
	for _, p := range parts {
		st.Parts = append(st.Parts, ReceivedPart{PartNumber: p.Number, Size: p.Size, ETag: p.ETag, LastModified: p.LastModified.UTC()})
		st.ReceivedBytes += p.Size
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, st)
}

// abortUpload answers DELETE /v1/direct-uploads/{id}: the upload and its
// parts are discarded (an expired one too).
func (s *Service) abortUpload(w http.ResponseWriter, r *http.Request) {
	t, ok := s.uploadOf(w, r, true)
	if !ok {
		return
	}
	// MinIO answers an abort of an unknown upload with success: whether it
	// exists is asked first.
	if _, err := s.cfg.Multipart.ListParts(r.Context(), s.cfg.SourcesBucket, t.Key, t.UploadID); err != nil {
		s.storageError(w, r, t, "abort", err)
		return
	}
	if err := s.cfg.Multipart.AbortMultipartUpload(r.Context(), s.cfg.SourcesBucket, t.Key, t.UploadID); err != nil {
		s.storageError(w, r, t, "abort", err)
		return
	}
	s.reservationOf(tenant.OfEvent(t.Tenant), t.Key).release(r.Context())
	s.log.Info("multipart upload aborted", zap.String("key", t.Key), zap.String("by", "client"))
	w.WriteHeader(http.StatusNoContent)
}

// storageError answers a failed S3 call on upload t.
func (s *Service) storageError(w http.ResponseWriter, r *http.Request, t uploadToken, what string, err error) {
	switch {
	case errors.Is(err, objstore.ErrNoUpload):
		httpapi.WriteError(w, http.StatusNotFound, CodeUploadNotFound, "no such upload: it was completed or aborted")
	case errors.Is(err, r.Context().Err()):
	default:
		s.log.Error("multipart upload: "+what, zap.String("key", t.Key), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, what+" failed; retry")
	}
}

// completeUpload answers POST /v1/direct-uploads/{id}/complete: once every
// part of the plan is stored with its size (and, when the body lists them,
// the ETags given), the object is made and its job started (202, as POST
// /v1/uploads answers). Completing again is harmless: an upload already
// completed answers the same job.
func (s *Service) completeUpload(w http.ResponseWriter, r *http.Request) {
	t, ok := s.uploadOf(w, r, false)
	if !ok {
		return
	}
	var req CompleteRequest
	if !httpapi.DecodeJSON(w, r, &req, maxJSONBody, false) {
		return
	}
	if msg := checkCompleteParts(req.Parts, t.partCount()); msg != "" {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidParts, msg)
		return
	}
	ctx := r.Context()
	parts, err := s.cfg.Multipart.ListParts(ctx, s.cfg.SourcesBucket, t.Key, t.UploadID)
	if errors.Is(err, objstore.ErrNoUpload) {
		s.completed(w, r, t)
		return
	}
	if err != nil {
		s.storageError(w, r, t, "list parts", err)
		return
	}
	code, msg := checkStoredParts(t, parts, req.Parts)
	if code != "" {
		httpapi.WriteError(w, http.StatusConflict, code, msg)
		return
	}
	if _, err := s.cfg.Multipart.CompleteMultipartUpload(ctx, s.cfg.SourcesBucket, t.Key, t.UploadID, parts); err != nil {
		switch {
		case errors.Is(err, objstore.ErrNoUpload): // completed meanwhile by another request
			s.completed(w, r, t)
		case errors.Is(err, objstore.ErrBadParts):
			httpapi.WriteError(w, http.StatusConflict, CodePartsMismatch, "the storage refused the parts; list them and send the missing ones again")
		default:
			s.storageError(w, r, t, "complete", err)
		}
		return
	}
	s.completed(w, r, t)
}

// checkCompleteParts reports what is wrong with a complete request's part
// list ("" when nothing; an empty list is the server listing them).
func checkCompleteParts(given []CompletePart, count int) string {
	if len(given) == 0 {
		return ""
	}
	if len(given) != count {
		return fmt.Sprintf("the upload has %d parts; %d given", count, len(given))
	}
	for i, p := range given {
		switch etag := strings.Trim(p.ETag, `"`); {
		case p.PartNumber != i+1:
			return fmt.Sprintf("parts must be listed by part number from 1 to %d, each once; #%d is %d", count, i+1, p.PartNumber)
		case etag == "" || len(etag) > maxETag || !printableASCII(etag):
			return fmt.Sprintf("part %d: bad etag", p.PartNumber)
		}
	}
	return ""
}

// checkStoredParts compares the stored parts with the upload's plan (every
// part, each of its size) and the ETags given, if any: a code and a
// message when they differ.
func checkStoredParts(t uploadToken, stored []objstore.Part, given []CompletePart) (string, string) {
	byNumber := make(map[int]objstore.Part, len(stored))
	for _, p := range stored {
		byNumber[p.Number] = p
	}
	var missing []string
	for n := 1; n <= t.partCount(); n++ {
		p, ok := byNumber[n]
		switch {
		case !ok:
			if len(missing) < 10 {
				missing = append(missing, strconv.Itoa(n))
			}
		case p.Size != t.partSize(n):
			return CodePartsMismatch, fmt.Sprintf("part %d has %d bytes, want %d", n, p.Size, t.partSize(n))
		case len(given) > 0 && strings.Trim(given[n-1].ETag, `"`) != p.ETag:
			return CodePartsMismatch, fmt.Sprintf("part %d: etag %q is not the stored part's", n, given[n-1].ETag)
		}
	}
	if len(missing) > 0 {
		return CodePartsIncomplete, fmt.Sprintf("%d of %d parts stored; missing %s", len(stored), t.partCount(), strings.Join(missing, ", "))
	}
	if len(stored) != t.partCount() {
		return CodePartsMismatch, fmt.Sprintf("%d parts stored; the upload has %d", len(stored), t.partCount())
	}
	return "", ""
}

// completed answers for an upload that is no longer in progress: when its
// object exists with the declared size it was completed, and its job is
// started (again: the same job id, deduplicated); otherwise it is gone.
func (s *Service) completed(w http.ResponseWriter, r *http.Request, t uploadToken) {
	ctx := r.Context()
	info, err := s.cfg.Multipart.Stat(ctx, s.cfg.SourcesBucket, t.Key)
	switch {
	case errors.Is(err, objstore.ErrNotFound) || (err == nil && info.Size != t.Size):
		httpapi.WriteError(w, http.StatusNotFound, CodeUploadNotFound, "no such upload: it was aborted")
		return
	case err != nil:
		s.storageError(w, r, t, "stat", err)
		return
	}
	landed := &kilnv1.ObjectLanded{
		Object: &kilnv1.ObjectRef{Bucket: s.cfg.SourcesBucket, Key: t.Key, Etag: info.ETag, Size: info.Size, ContentType: info.ContentType},
		Origin: "api", Preset: layout.SourceMeta(info.Metadata, layout.MetaPreset),
		PlaybackPolicy: layout.SourceMeta(info.Metadata, layout.MetaPolicy), Priority: layout.SourceMeta(info.Metadata, layout.MetaPriority),
		Time:       timestamppb.Now(),
		WebhookUrl: layout.SourceMeta(info.Metadata, layout.MetaWebhook),
		TenantId:   layout.SourceMeta(info.Metadata, layout.MetaTenant),
	}
	jobID, assetID := jobid.FromObject(s.cfg.SourcesBucket, t.Key, info.ETag)
	resp := CompleteResponse{
		UploadResponse: UploadResponse{JobID: jobID, AssetID: assetID,
			StatusURL: s.cfg.PublicURL + "/v1/jobs/" + jobID, AssetURL: s.cfg.PublicURL + "/v1/assets/" + assetID},
		Key: t.Key, ETag: info.ETag,
	}
	if landed.WebhookUrl != "" && s.cfg.WebhookSecret != "" {
		if resp.WebhookSecret, err = webhooks.UploadSecret(s.cfg.WebhookSecret, jobID); err != nil {
			s.log.Error("per-upload webhook secret", zap.Error(err)) // KILN_WEBHOOK_SECRET is checked at startup
			resp.WebhookSecret = ""
		}
	}
	// As for a streamed upload: published even when the client has gone,
	// and no 202 unless it was (the bucket notification may start the job
	// all the same; a retry of complete publishes again).
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PublishTimeout)
	err = s.cfg.Events.PublishObjectLanded(pctx, landed)
	cancel()
	if err != nil {
		s.log.Error("publish object landed", zap.String("job_id", jobID), zap.String("key", t.Key), zap.Error(err))
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the upload is complete but could not be recorded; complete it again")
		return
	}
	s.reservationOf(tenant.OfEvent(t.Tenant), t.Key).landed(ctx, landHold)
	s.log.Info("multipart upload completed", zap.String("job_id", jobID), zap.String("key", t.Key), zap.Int64("bytes", info.Size))
	httpapi.WriteJSON(w, http.StatusAccepted, resp)
}

// AbortStaleUploads aborts the multipart uploads of the sources bucket
// (under layout.SourcePrefix) started before before, and returns how many
// it aborted. One already gone (another replica's sweep) is no error.
func (s *Service) AbortStaleUploads(ctx context.Context, before time.Time) (int, error) {
	ups, err := s.cfg.Multipart.ListMultipartUploads(ctx, s.cfg.SourcesBucket, layout.SourcePrefix)
	if err != nil {
		return 0, fmt.Errorf("ingest: sweep uploads: %w", err)
	}
	n := 0
	var first error
	for _, u := range ups {
		if !u.Initiated.Before(before) {
			continue
		}
		err := s.cfg.Multipart.AbortMultipartUpload(ctx, s.cfg.SourcesBucket, u.Key, u.UploadID)
		switch {
		case err == nil:
			n++
			s.log.Info("multipart upload aborted", zap.String("key", u.Key), zap.String("by", "sweep"),
				zap.Time("initiated", u.Initiated))
		case errors.Is(err, objstore.ErrNoUpload):
		case first == nil:
			first = fmt.Errorf("ingest: sweep uploads: %w", err)
		}
	}
	return n, first
}

// SweepUploads aborts, until ctx ends, every multipart upload older than
// Config.UploadAbortAfter (not completed in time: its parts would be
// stored for ever), at once and then every sweepInterval. Every ingest
// replica sweeps; an upload aborted twice is no harm.
func (s *Service) SweepUploads(ctx context.Context) error {
	if s.cfg.Multipart == nil {
		return nil
	}
	every := min(max(s.cfg.UploadAbortAfter/24, time.Minute), time.Hour)
	for {
		if _, err := s.AbortStaleUploads(ctx, time.Now().Add(-s.cfg.UploadAbortAfter)); err != nil && ctx.Err() == nil {
			s.log.Warn("sweep multipart uploads", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}
