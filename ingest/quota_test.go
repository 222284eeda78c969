package ingest

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// redisDB is this package's database of the test stack's Redis (see
// testenv/redis.go).
const redisDB = 4

// quotaFixture is the upload API on the real MinIO with its quotas on the
// real Redis.
type quotaFixture struct {
	*mpFixture
	q *quota.Store
}

func newQuotaFixture(t *testing.T) *quotaFixture {
	t.Helper()
	q := &quota.Store{Redis: testenv.RedisClient(t, testenv.RedisDB(t, redisDB))}
	f := newMPFixture(t, func(c *Config) { c.Quotas = q })
	return &quotaFixture{mpFixture: f, q: q}
}

// stored counts the objects in the fixture's bucket.
func (f *quotaFixture) stored(t *testing.T) int {
	t.Helper()
	infos, err := f.store.List(t.Context(), f.bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	return len(infos)
}

// stream uploads data as tenant tn: raw with its length, or (form) as a
// multipart/form-data body of unknown length.
func (f *quotaFixture) stream(t *testing.T, tn string, data []byte, form bool) (int, []byte, http.Header) {
	t.Helper()
	body, ctype := bytes.NewReader(data), "video/mp4"
	var buf bytes.Buffer
	if form {
		mw := multipart.NewWriter(&buf)
		fw, _ := mw.CreateFormFile("file", "clip.mp4")
		_, _ = fw.Write(data)
		_ = mw.Close()
		body, ctype = bytes.NewReader(buf.Bytes()), mw.FormDataContentType()
	}
	req := httptest.NewRequestWithContext(httpapi.WithPrincipal(t.Context(), httpapi.Principal{Name: "ci", Scope: httpapi.ScopeWrite, Tenant: tn}),
		http.MethodPost, "/v1/uploads?filename=clip.mp4", body)
	req.Header.Set("Content-Type", ctype)
	if form {
		req.ContentLength = -1 // a chunked body: its size is unknown until the end
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes(), rec.Header()
}

// TestQuotaRefusesBeforeStoring, on the real MinIO and Redis: a tenant at
// its concurrent_jobs limit gets 429 concurrency_limit (with Retry-After)
// on every upload route and nothing is stored; the slot comes back when
// the catalog reports the job ended, or when an upload is aborted; an
// upload that would pass stored_bytes gets 403 quota_exceeded before a
// byte is stored — and one of unknown size is cut where it passes it,
// leaving nothing; encoded minutes at the limit refuse too; another
// tenant is not affected.
func TestQuotaRefusesBeforeStoring(t *testing.T) {
	f := newQuotaFixture(t)
	ctx := t.Context()
	if err := f.q.PutLimits(ctx, tenantA, quota.Limits{ConcurrentJobs: 1}); err != nil {
		t.Fatal(err)
	}
	clip := noise(1000)
	code, body, _ := f.stream(t, tenantA, clip, false)
	want(t, "first upload", code, body, http.StatusAccepted, "")
	if n := f.stored(t); n != 1 {
		t.Fatalf("%d objects after the first upload", n)
	}
	first := f.events.landed[0].GetObject().GetKey()

	code, body, h := f.stream(t, tenantA, clip, false)
	want(t, "second upload", code, body, http.StatusTooManyRequests, quota.CodeConcurrencyLimit)
	if h.Get("Retry-After") != strconv.Itoa(quota.ConcurrencyRetryAfter) {
		t.Errorf("Retry-After %q", h.Get("Retry-After"))
	}
	code, body = f.doAs(t, tenantA, http.MethodPost, "/v1/direct-uploads", map[string]any{"filename": "a.mp4", "size": 10})
	want(t, "direct upload", code, body, http.StatusTooManyRequests, quota.CodeConcurrencyLimit)
	code, body = f.doAs(t, tenantA, http.MethodPost, "/v1/direct-uploads", map[string]any{"filename": "a.mp4", "size": 10, "multipart": true})
	want(t, "multipart upload", code, body, http.StatusTooManyRequests, quota.CodeConcurrencyLimit)
	if n := f.stored(t); n != 1 {
		t.Fatalf("%d objects after refused uploads, want 1", n)
	}
	if ups, err := f.store.ListMultipartUploads(ctx, f.bucket, ""); err != nil || len(ups) != 0 {
		t.Fatalf("multipart uploads after a refusal: %v %v", ups, err)
	}
	code, body, _ = f.stream(t, tenantB, clip, false)
	want(t, "tenant B", code, body, http.StatusAccepted, "")

	// The catalog reports the first job ended: the slot is free.
	if err := f.q.Publish(ctx, quota.Snapshot{Limits: map[string]quota.Limits{tenantA: {ConcurrentJobs: 1}},
		Ended: map[string][]string{tenantA: {first}}}); err != nil {
		t.Fatal(err)
	}
	// A multipart upload takes it; aborting gives it back.
	code, body = f.doAs(t, tenantA, http.MethodPost, "/v1/direct-uploads", map[string]any{"filename": "a.mp4", "size": 10, "multipart": true})
	want(t, "multipart upload once the slot is free", code, body, http.StatusCreated, "")
	var up MultipartUploadResponse
	if err := json.Unmarshal(body, &up); err != nil {
		t.Fatal(err)
	}
	code, body, _ = f.stream(t, tenantA, clip, false)
	want(t, "upload beside the multipart one", code, body, http.StatusTooManyRequests, quota.CodeConcurrencyLimit)
	code, body = f.doAs(t, tenantA, http.MethodDelete, "/v1/direct-uploads/"+up.UploadID, nil)
	want(t, "abort", code, body, http.StatusNoContent, "")
	if n, err := f.q.Active(ctx, tenantA); err != nil || n != 0 {
		t.Fatalf("active after the abort: %d %v", n, err)
	}

	// Stored bytes: 90 of 100 used.
	if err := f.q.Publish(ctx, quota.Snapshot{Limits: map[string]quota.Limits{tenantA: {StoredBytes: 100}},
		Usage: map[string]quota.Usage{tenantA: {StoredBytes: 90}}}); err != nil {
		t.Fatal(err)
	}
	before := f.stored(t)
	code, body, _ = f.stream(t, tenantA, noise(11), false)
	want(t, "11 bytes with 10 left", code, body, http.StatusForbidden, quota.CodeQuotaExceeded)
	code, body = f.doAs(t, tenantA, http.MethodPost, "/v1/direct-uploads", map[string]any{"filename": "a.mp4", "size": 11})
	want(t, "a direct upload of 11 bytes with 10 left", code, body, http.StatusForbidden, quota.CodeQuotaExceeded)
	code, body, _ = f.stream(t, tenantA, noise(11), true)
	want(t, "11 bytes of unknown size with 10 left", code, body, http.StatusForbidden, quota.CodeQuotaExceeded)
	if n := f.stored(t); n != before {
		t.Fatalf("%d objects after uploads over the quota, want %d", n, before)
	}
	if ups, err := f.store.ListMultipartUploads(ctx, f.bucket, ""); err != nil || len(ups) != 0 {
		t.Fatalf("multipart uploads left by a cut upload: %v %v", ups, err)
	}
	code, body, _ = f.stream(t, tenantA, noise(10), true)
	want(t, "10 bytes of unknown size with 10 left", code, body, http.StatusAccepted, "")

	// Encoded minutes: 10 of 10 this month.
	if err := f.q.Publish(ctx, quota.Snapshot{Limits: map[string]quota.Limits{tenantA: {EncodedMinutesPerMonth: 10}},
		Usage: map[string]quota.Usage{tenantA: {EncodedSeconds: 600}}}); err != nil {
		t.Fatal(err)
	}
	code, body, _ = f.stream(t, tenantA, clip, false)
	want(t, "upload with the month's minutes used", code, body, http.StatusForbidden, quota.CodeQuotaExceeded)
	code, body, _ = f.stream(t, tenantB, clip, false)
	want(t, "tenant B, no quotas", code, body, http.StatusAccepted, "")
}
