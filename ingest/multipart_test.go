package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/testenv"
	"github.com/kilnvideo/kiln/workers"
)

// mpFixture is the upload API on the real MinIO of the test stack, in a
// bucket of its own.
type mpFixture struct {
	svc    *Service
	h      http.Handler
	store  *objstore.Client
	bucket string
	events *fakeEvents
}

func newMPFixture(t *testing.T, mutate func(*Config)) *mpFixture {
	t.Helper()
	env := testenv.S3(t)
	store, err := objstore.New(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	bucket := "kiln-ingest-mp-" + hex.EncodeToString(b)
	if err := store.EnsureBuckets(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mc, err := minio.New(env.Config.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(env.Config.AccessKey, env.Config.SecretKey, "")})
		if err != nil {
			t.Error(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		if err := mc.RemoveBucketWithOptions(ctx, bucket, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
			t.Errorf("cleanup: remove bucket %s: %v", bucket, err)
		}
	})
	events := &fakeEvents{}
	cfg := Config{Objects: store, Events: events, SourcesBucket: bucket, PublicURL: "https://kiln.test",
		Presets: []string{"default", "hd"}, Presigner: store, Multipart: store, UploadIDKey: UploadIDKey("test-secret"),
		MaxUploadBytes: 1 << 30}
	if mutate != nil {
		mutate(&cfg)
	}
	svc := New(cfg)
	return &mpFixture{svc: svc, h: svc.Handler(), store: store, bucket: bucket, events: events}
}

// do calls the API; body is JSON (a string, or marshalled).
func (f *mpFixture) do(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		r = bytes.NewReader(data)
	}
	req := httptest.NewRequestWithContext(t.Context(), method, path, r)
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// want checks a status and, for an error, its code.
func want(t *testing.T, what string, code int, body []byte, status int, errCode string) {
	t.Helper()
	if code != status {
		t.Fatalf("%s: %d %s, want %d", what, code, body, status)
	}
	if errCode != "" {
		var e httpapi.ErrorBody
		if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != errCode || e.Error.Message == "" {
			t.Fatalf("%s: error %s, want code %q and a message", what, body, errCode)
		}
	}
}

func (f *mpFixture) start(t *testing.T, req map[string]any) MultipartUploadResponse {
	t.Helper()
	code, body := f.do(t, http.MethodPost, "/v1/direct-uploads", req)
	want(t, "start", code, body, http.StatusCreated, "")
	var up MultipartUploadResponse
	if err := json.Unmarshal(body, &up); err != nil || !up.Multipart || up.UploadID == "" {
		t.Fatalf("start: %v %s", err, body)
	}
	return up
}

// putPart sends part p of data with its presigned URL and headers.
func putPart(t *testing.T, p PartURL, data []byte, partSize int64) string {
	t.Helper()
	off := int64(p.PartNumber-1) * partSize
	req, err := http.NewRequestWithContext(t.Context(), p.Method, p.URL, bytes.NewReader(data[off:off+p.Size]))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range p.Headers {
		if k != "Content-Length" {
			req.Header.Set(k, v)
		}
	}
	req.ContentLength = p.Size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT part %d: %d %s", p.PartNumber, resp.StatusCode, msg)
	}
	return strings.Trim(resp.Header.Get("ETag"), `"`)
}

func noise(n int) []byte {
	b := make([]byte, n)
	_, _ = mathrand.NewChaCha8([32]byte{7}).Read(b)
	return b
}

// TestMultipartDirectUpload is the whole route set on the real MinIO:
// start, parts out of order, the listing a client resumes from, more part
// URLs, completes refused (parts missing, a wrong ETag, a list that is not
// the upload's), the completed object and its job, a repeated complete.
func TestMultipartDirectUpload(t *testing.T) {
	f := newMPFixture(t, nil)
	const partSize = objstore.MinPartSize
	data := noise(2*partSize + 100)
	up := f.start(t, map[string]any{"filename": "big clip.mp4", "size": len(data), "multipart": true, "part_size": partSize,
		"preset": "hd", "playback_policy": "signed", "webhook_url": "https://example.com/hook"})
	if up.PartCount != 3 || up.PartSize != partSize || up.Size != int64(len(data)) || len(up.Parts) != 3 ||
		!strings.HasPrefix(up.Key, "uploads/") || !strings.HasSuffix(up.Key, "/big_clip.mp4") ||
		up.UploadURL != "https://kiln.test/v1/direct-uploads/"+up.UploadID || up.PartsURL != up.UploadURL+"/parts" ||
		up.CompleteURL != up.UploadURL+"/complete" || time.Until(up.ExpiresAt) < 23*time.Hour ||
		time.Until(up.PartsExpireAt) > DefaultDirectUploadTTL {
		t.Fatalf("start: %+v", up)
	}
	for i, p := range up.Parts {
		size := []int64{partSize, partSize, 100}[i]
		if p.PartNumber != i+1 || p.Size != size || p.Method != http.MethodPut || p.Headers["Content-Length"] != fmt.Sprint(size) {
			t.Fatalf("part %d: %+v", i+1, p)
		}
	}
	etags := map[int]string{2: putPart(t, up.Parts[1], data, partSize)}

	// What a client resumes from: the parts stored.
	code, body := f.do(t, http.MethodGet, "/v1/direct-uploads/"+up.UploadID, nil)
	want(t, "status", code, body, http.StatusOK, "")
	var st MultipartStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.UploadID != up.UploadID || st.Key != up.Key || st.PartCount != 3 || st.Size != up.Size || st.ReceivedBytes != partSize ||
		len(st.Parts) != 1 || st.Parts[0].PartNumber != 2 || st.Parts[0].Size != partSize || st.Parts[0].ETag != etags[2] {
		t.Fatalf("status after part 2: %s", body)
	}
	code, body = f.do(t, http.MethodPost, "/v1/direct-uploads/"+up.UploadID+"/complete", nil)
	want(t, "complete with parts missing", code, body, http.StatusConflict, CodePartsIncomplete)
	if !strings.Contains(string(body), "missing 1, 3") {
		t.Errorf("complete with parts missing: %s, want the missing parts named", body)
	}

	// More URLs: from part 3, at most what the upload has.
	code, body = f.do(t, http.MethodPost, "/v1/direct-uploads/"+up.UploadID+"/parts?from=3&count=5", nil)
	want(t, "parts", code, body, http.StatusOK, "")
	var batch PartBatch
	if err := json.Unmarshal(body, &batch); err != nil || len(batch.Parts) != 1 || batch.Parts[0].PartNumber != 3 || batch.Parts[0].Size != 100 {
		t.Fatalf("parts from 3: %v %s", err, body)
	}
	etags[3] = putPart(t, batch.Parts[0], data, partSize)
	etags[1] = putPart(t, up.Parts[0], data, partSize)

	given := func(e map[int]string, numbers ...int) map[string]any {
		var ps []CompletePart
		for _, n := range numbers {
			ps = append(ps, CompletePart{PartNumber: n, ETag: e[n]})
		}
		return map[string]any{"parts": ps}
	}
	wrong := map[int]string{1: etags[2], 2: etags[2], 3: etags[3]}
	code, body = f.do(t, http.MethodPost, "/v1/direct-uploads/"+up.UploadID+"/complete", given(wrong, 1, 2, 3))
	want(t, "complete with a wrong ETag", code, body, http.StatusConflict, CodePartsMismatch)
	for name, req := range map[string]map[string]any{
		"too few":   given(etags, 1, 2),
		"repeated":  given(etags, 1, 1, 3),
		"unordered": given(etags, 2, 1, 3),
		"no etag":   given(map[int]string{1: etags[1], 2: "", 3: etags[3]}, 1, 2, 3),
		"too many":  given(etags, 1, 2, 3, 4),
	} {
		code, body = f.do(t, http.MethodPost, "/v1/direct-uploads/"+up.UploadID+"/complete", req)
		want(t, "complete, "+name, code, body, http.StatusBadRequest, CodeInvalidParts)
	}
	if len(f.events.landed) != 0 {
		t.Fatalf("refused completes published %d facts", len(f.events.landed))
	}

	code, body = f.do(t, http.MethodPost, "/v1/direct-uploads/"+up.UploadID+"/complete", given(etags, 1, 2, 3))
	want(t, "complete", code, body, http.StatusAccepted, "")
	var done CompleteResponse
	if err := json.Unmarshal(body, &done); err != nil {
		t.Fatal(err)
	}
	jobID, assetID := jobid.FromObject(f.bucket, up.Key, done.ETag)
	if done.JobID != jobID || done.AssetID != assetID || done.Key != up.Key || !strings.HasSuffix(done.ETag, "-3") ||
		done.StatusURL != "https://kiln.test/v1/jobs/"+jobID || done.WebhookSecret != "" {
		t.Fatalf("complete: %s (job %s)", body, jobID)
	}
	// The object is the file, with the metadata a single PUT carries.
	got, err := f.store.Get(t.Context(), f.bucket, up.Key, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object: %d bytes of %d, %v", len(got), len(data), err)
	}
	info, _ := f.store.Stat(t.Context(), f.bucket, up.Key)
	if info.ContentType != "video/mp4" || info.Metadata["Kiln-Preset"] != "hd" || info.Metadata["Kiln-Playback-Policy"] != "signed" ||
		info.Metadata["Kiln-Webhook-Url"] != "https://example.com/hook" {
		t.Fatalf("object %+v", info)
	}
	if len(f.events.landed) != 1 {
		t.Fatalf("%d facts published, want 1", len(f.events.landed))
	}
	ev := f.events.landed[0]
	if o := ev.GetObject(); o.GetBucket() != f.bucket || o.GetKey() != up.Key || o.GetEtag() != done.ETag || o.GetSize() != int64(len(data)) ||
		ev.GetPreset() != "hd" || ev.GetPlaybackPolicy() != "signed" || ev.GetWebhookUrl() != "https://example.com/hook" || ev.GetOrigin() != "api" {
		t.Fatalf("object landed %v", ev)
	}
	// The multipart ETag is one the intake and the workers take.
	if err := f.svc.CheckObject(ev.GetObject()); err != nil || !workers.ValidETag(done.ETag) {
		t.Fatalf("multipart ETag %q: CheckObject %v, ValidETag %v", done.ETag, err, workers.ValidETag(done.ETag))
	}

	// Completing again answers the same job (a client that lost the answer).
	code, body = f.do(t, http.MethodPost, "/v1/direct-uploads/"+up.UploadID+"/complete", nil)
	want(t, "complete again", code, body, http.StatusAccepted, "")
	var again CompleteResponse
	if json.Unmarshal(body, &again); again.JobID != jobID || len(f.events.landed) != 2 {
		t.Fatalf("complete again: %s", body)
	}
	code, body = f.do(t, http.MethodGet, "/v1/direct-uploads/"+up.UploadID, nil)
	want(t, "status after complete", code, body, http.StatusNotFound, CodeUploadNotFound)
}

// TestMultipartThreshold: above Config.MultipartThreshold a direct upload
// is multipart without asking; below it stays one PUT.
func TestMultipartThreshold(t *testing.T) {
	f := newMPFixture(t, func(c *Config) { c.MultipartThreshold = 1000 })
	up := f.start(t, map[string]any{"size": 1001})
	if up.PartCount != 1 || up.Parts[0].Size != 1001 {
		t.Fatalf("over the threshold: %+v", up)
	}
	code, body := f.do(t, http.MethodPost, "/v1/direct-uploads", map[string]any{"size": 1000})
	want(t, "at the threshold", code, body, http.StatusCreated, "")
	var single DirectUploadResponse
	if json.Unmarshal(body, &single); single.Method != http.MethodPut || single.UploadURL == "" {
		t.Fatalf("at the threshold: %s", body)
	}
}

// TestMultipartAbort: an aborted upload's parts are gone and its id is
// unknown from then on.
func TestMultipartAbort(t *testing.T) {
	f := newMPFixture(t, nil)
	data := noise(1234)
	up := f.start(t, map[string]any{"size": len(data), "multipart": true})
	putPart(t, up.Parts[0], data, up.PartSize)
	code, body := f.do(t, http.MethodDelete, "/v1/direct-uploads/"+up.UploadID, nil)
	want(t, "abort", code, body, http.StatusNoContent, "")
	ups, err := f.store.ListMultipartUploads(t.Context(), f.bucket, "")
	if err != nil || len(ups) != 0 {
		t.Fatalf("uploads after abort: %v %v", ups, err)
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, ""}, {http.MethodDelete, ""}, {http.MethodPost, "/complete"},
	} {
		code, body := f.do(t, c.method, "/v1/direct-uploads/"+up.UploadID+c.path, nil)
		want(t, c.method+" after abort", code, body, http.StatusNotFound, CodeUploadNotFound)
	}
	if _, err := f.store.Stat(t.Context(), f.bucket, up.Key); err == nil {
		t.Fatal("an aborted upload left an object")
	}
}

// TestMultipartHostile: every bad input gets its status and code, and
// an id the server did not sign, or signed and then changed, names no
// upload.
func TestMultipartHostile(t *testing.T) {
	f := newMPFixture(t, func(c *Config) { c.MaxUploadBytes = 100 << 20 })
	up := f.start(t, map[string]any{"size": 20, "multipart": true})
	payload, _, _ := strings.Cut(strings.TrimPrefix(up.UploadID, uploadIDPrefix), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	var tok uploadToken
	if err := json.Unmarshal(raw, &tok); err != nil {
		t.Fatal(err)
	}
	bigger := tok
	bigger.Size = 30
	other := New(Config{UploadIDKey: UploadIDKey("another-secret"), Multipart: f.store})
	old := tok
	old.Created = time.Now().Add(-DefaultUploadAbortAfter - time.Minute).Unix()
	tampered := uploadIDPrefix + base64.RawURLEncoding.EncodeToString(mustJSON(bigger)) + "." + strings.SplitN(up.UploadID, ".", 2)[1]

	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"not an id", "GET", "/v1/direct-uploads/nope", nil, 400, httpapi.CodeInvalidID},
		{"bad signature encoding", "GET", "/v1/direct-uploads/" + up.UploadID + "!", nil, 400, httpapi.CodeInvalidID},
		{"too long", "GET", "/v1/direct-uploads/" + uploadIDPrefix + strings.Repeat("a", maxUploadID) + ".b", nil, 400, httpapi.CodeInvalidID},
		{"forged", "GET", "/v1/direct-uploads/mpu_eyJrIjoidXBsb2Fkcy94In0.AAAA", nil, 404, CodeUploadNotFound},
		{"another key's", "GET", "/v1/direct-uploads/" + other.signToken(tok), nil, 404, CodeUploadNotFound},
		{"size changed", "POST", "/v1/direct-uploads/" + tampered + "/complete", nil, 404, CodeUploadNotFound},
		{"expired status", "GET", "/v1/direct-uploads/" + f.svc.signToken(old), nil, 410, CodeUploadExpired},
		{"expired parts", "POST", "/v1/direct-uploads/" + f.svc.signToken(old) + "/parts", nil, 410, CodeUploadExpired},
		{"expired complete", "POST", "/v1/direct-uploads/" + f.svc.signToken(old) + "/complete", nil, 410, CodeUploadExpired},
		{"from 0", "POST", "/v1/direct-uploads/" + up.UploadID + "/parts?from=0", nil, 400, httpapi.CodeBadRequest},
		{"from past the last", "POST", "/v1/direct-uploads/" + up.UploadID + "/parts?from=2", nil, 400, httpapi.CodeBadRequest},
		{"count 0", "POST", "/v1/direct-uploads/" + up.UploadID + "/parts?count=0", nil, 400, httpapi.CodeBadRequest},
		{"count over the batch", "POST", "/v1/direct-uploads/" + up.UploadID + "/parts?count=1001", nil, 400, httpapi.CodeBadRequest},
		{"count not a number", "POST", "/v1/direct-uploads/" + up.UploadID + "/parts?count=x", nil, 400, httpapi.CodeBadRequest},
		{"complete body not JSON", "POST", "/v1/direct-uploads/" + up.UploadID + "/complete", "parts", 400, httpapi.CodeBadRequest},
		{"complete unknown field", "POST", "/v1/direct-uploads/" + up.UploadID + "/complete", `{"partz":[]}`, 400, httpapi.CodeBadRequest},
		{"part size too small", "POST", "/v1/direct-uploads", map[string]any{"size": 10 << 20, "multipart": true, "part_size": 1 << 20}, 400, httpapi.CodeBadRequest},
		{"part size too large", "POST", "/v1/direct-uploads", map[string]any{"size": 10 << 20, "multipart": true, "part_size": int64(6) << 30}, 400, httpapi.CodeBadRequest},
		{"part size without multipart", "POST", "/v1/direct-uploads", map[string]any{"size": 10 << 20, "part_size": 5 << 20}, 400, httpapi.CodeBadRequest},
		{"webhook without multipart", "POST", "/v1/direct-uploads", map[string]any{"size": 10, "webhook_url": "https://example.com/h"}, 400, CodeInvalidHook},
		{"bad webhook", "POST", "/v1/direct-uploads", map[string]any{"size": 10, "multipart": true, "webhook_url": "ftp://x"}, 400, CodeInvalidHook},
		{"over the size limit", "POST", "/v1/direct-uploads", map[string]any{"size": 100<<20 + 1, "multipart": true}, 413, CodeTooLarge},
		{"bad preset", "POST", "/v1/direct-uploads", map[string]any{"size": 10, "multipart": true, "preset": "4k"}, 400, CodeInvalidPreset},
	} {
		code, body := f.do(t, c.method, c.path, c.body)
		want(t, c.name, code, body, c.status, c.code)
	}
	// An expired upload may still be aborted.
	code, body := f.do(t, http.MethodDelete, "/v1/direct-uploads/"+f.svc.signToken(old), nil)
	want(t, "abort expired", code, body, http.StatusNoContent, "")

	off := New(Config{SourcesBucket: f.bucket, Presigner: f.store})
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/v1/direct-uploads"}, {http.MethodGet, "/v1/direct-uploads/" + up.UploadID},
	} {
		req := httptest.NewRequestWithContext(t.Context(), c.method, c.path, strings.NewReader(`{"size":10,"multipart":true}`))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		off.Handler().ServeHTTP(rec, req)
		want(t, "multipart off: "+c.method, rec.Code, rec.Body.Bytes(), http.StatusServiceUnavailable, httpapi.CodeUnavailable)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// TestSweepUploads: the sweep aborts the multipart uploads of the sources
// folder started before its cutoff, and leaves younger ones and objects
// outside the folder alone (on the real MinIO, whose ListMultipartUploads
// takes no folder prefix).
func TestSweepUploads(t *testing.T) {
	f := newMPFixture(t, nil)
	old := f.start(t, map[string]any{"size": 10, "multipart": true})
	putPart(t, old.Parts[0], noise(10), old.PartSize)
	outside, err := f.store.NewMultipartUpload(t.Context(), f.bucket, "elsewhere/x", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	fresh := f.start(t, map[string]any{"size": 10, "multipart": true})
	ups, err := f.store.ListMultipartUploads(t.Context(), f.bucket, "")
	if err != nil || len(ups) != 3 {
		t.Fatalf("uploads: %v %v", ups, err)
	}
	var cutoff time.Time
	for _, u := range ups {
		if u.Key == fresh.Key {
			cutoff = u.Initiated
		}
	}
	n, err := f.svc.AbortStaleUploads(t.Context(), cutoff)
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d aborted, %v; want 1", n, err)
	}
	code, body := f.do(t, http.MethodGet, "/v1/direct-uploads/"+old.UploadID, nil)
	want(t, "the old upload", code, body, http.StatusNotFound, CodeUploadNotFound)
	code, body = f.do(t, http.MethodGet, "/v1/direct-uploads/"+fresh.UploadID, nil)
	want(t, "the fresh upload", code, body, http.StatusOK, "")
	ups, _ = f.store.ListMultipartUploads(t.Context(), f.bucket, "")
	var left []string
	for _, u := range ups {
		left = append(left, u.UploadID)
	}
	if slices.Sort(left); !slices.Equal(left, slices.Sorted(slices.Values([]string{outside, tokenUploadID(t, fresh.UploadID)}))) {
		t.Fatalf("left %v", left)
	}
	// A second sweep (another replica's) finds nothing to do.
	if n, err := f.svc.AbortStaleUploads(t.Context(), cutoff); err != nil || n != 0 {
		t.Fatalf("second sweep: %d %v", n, err)
	}
}

// tokenUploadID is the S3 upload id inside an upload id.
func tokenUploadID(t *testing.T, id string) string {
	t.Helper()
	payload, _, _ := strings.Cut(strings.TrimPrefix(id, uploadIDPrefix), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	var tok uploadToken
	if err := json.Unmarshal(raw, &tok); err != nil {
		t.Fatal(err)
	}
	return tok.UploadID
}

// TestCompleteMultipartNotification: the bucket notification of a
// completed multipart upload starts the job like a PUT's.
func TestCompleteMultipartNotification(t *testing.T) {
	s := New(Config{SourcesBucket: "kiln-sources"})
	etag := "9b2cf535f27731c974343645a3985328-12"
	got, err := ParseS3Event(event(record("s3:ObjectCreated:CompleteMultipartUpload", "kiln-sources",
		"uploads%2F0123456789abcdef01234567%2Fbig.mp4", `\"`+etag+`\"`, `{"X-Amz-Meta-Kiln-Preset":"hd"}`)))
	if err != nil || len(got) != 1 {
		t.Fatalf("parse: %v %v", got, err)
	}
	if o := got[0].GetObject(); o.GetEtag() != etag || got[0].GetPreset() != "hd" || s.CheckObject(o) != nil || !workers.ValidETag(o.GetEtag()) {
		t.Fatalf("object %v: CheckObject %v", o, s.CheckObject(o))
	}
}
