package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// memIdempotency is an in-memory IdempotencyStore; steal makes the next
// Complete find its reservation taken by another request's record.
type memIdempotency struct {
	mu    sync.Mutex
	recs  map[string]IdempotencyRecord
	steal *IdempotencyRecord
}

func (m *memIdempotency) Reserve(_ context.Context, key, token string, _ time.Duration) (IdempotencyRecord, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec, ok := m.recs[key]; ok {
		return rec, false, nil
	}
	m.recs[key] = IdempotencyRecord{Token: token}
	return m.recs[key], true, nil
}

func (m *memIdempotency) Extend(_ context.Context, key, token string, _ time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recs[key].Token == token, nil
}

func (m *memIdempotency) Complete(_ context.Context, key, token string, rec IdempotencyRecord, _ time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.steal != nil {
		m.recs[key], m.steal = *m.steal, nil
	}
	if m.recs[key].Token != token {
		return false, nil
	}
	m.recs[key] = rec
	return true, nil
}

func (m *memIdempotency) Release(_ context.Context, key, token string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.recs[key].Token == token {
		delete(m.recs, key)
	}
	return nil
}

func (m *memIdempotency) Get(_ context.Context, key string) (IdempotencyRecord, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.recs[key]
	return rec, ok, nil
}

type fakeRemover struct{ removed []string }

func (f *fakeRemover) Remove(_ context.Context, bucket, key string) error {
	f.removed = append(f.removed, bucket+"/"+key)
	return nil
}

func mpBody(t *testing.T, data string) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf) // a random boundary each time
	fw, err := mw.CreateFormFile("file", "clip.mp4")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte(data))
	mw.Close()
	return mw.FormDataContentType(), &buf
}

func TestIdempotentUpload(t *testing.T) {
	objects, idem, remover, events := &fakeObjects{}, &memIdempotency{recs: map[string]IdempotencyRecord{}}, &fakeRemover{}, &fakeEvents{}
	s := New(Config{Objects: objects, Events: events, SourcesBucket: "src", PublicURL: "https://kiln.test",
		Idempotency: idem, Remover: remover})
	post := func(key, auth, contentType string, body *bytes.Buffer, query string) (*httptest.ResponseRecorder, UploadResponse) {
		t.Helper()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/uploads"+query, body)
		if key != "" {
			req.Header.Set(IdempotencyHeader, key)
		}
		req.Header.Set("Authorization", "Bearer "+auth)
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var resp UploadResponse
		_ = json.Unmarshal(rec.Body.Bytes(), &resp)
		return rec, resp
	}
	code := func(rec *httptest.ResponseRecorder) string {
		var e httpapi.ErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		return e.Error.Code
	}
	ct, body := mpBody(t, "video-a")
	first, a := post("k1", "key1", ct, body, "")
	if first.Code != http.StatusAccepted || a.JobID == "" {
		t.Fatalf("first: %d %s", first.Code, first.Body)
	}
	// Same file again, another multipart boundary: the same answer, nothing stored.
	ct, body = mpBody(t, "video-a")
	again, b := post("k1", "key1", ct, body, "")
	if again.Code != http.StatusOK || b != a || again.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s", again.Code, again.Body)
	}
	ct, body = mpBody(t, "video-b")
	if rec, _ := post("k1", "key1", ct, body, ""); rec.Code != http.StatusConflict || code(rec) != CodeIdempotencyConflict {
		t.Fatalf("different body: %d %s", rec.Code, rec.Body)
	}
	ct, body = mpBody(t, "video-a")
	if rec, _ := post("k1", "key1", ct, body, "?preset=hd"); rec.Code != http.StatusBadRequest {
		t.Fatalf("unknown preset: %d", rec.Code) // validated before the key
	}
	ct, body = mpBody(t, "video-a")
	if rec, _ := post("k1", "key1", ct, body, "?playback_policy=signed"); rec.Code != http.StatusConflict {
		t.Fatalf("different policy: %d %s", rec.Code, rec.Body)
	}
	// Another API key has its own keys.
	ct, body = mpBody(t, "video-b")
	if rec, c := post("k1", "key2", ct, body, ""); rec.Code != http.StatusAccepted || c.JobID == a.JobID {
		t.Fatalf("other API key: %d %s", rec.Code, rec.Body)
	}
	if len(objects.puts) != 2 {
		t.Fatalf("%d objects stored, want 2", len(objects.puts))
	}
	for _, k := range []string{strings.Repeat("k", MaxIdempotencyKey+1), "tab\there", "é"} {
		if rec, _ := post(k, "key1", "video/mp4", bytes.NewBufferString("x"), ""); rec.Code != http.StatusBadRequest || code(rec) != httpapi.CodeBadRequest {
			t.Errorf("key %q: %d %s", k, rec.Code, rec.Body)
		}
	}
	if rec, _ := post(strings.Repeat("k", MaxIdempotencyKey), "key1", "video/mp4", bytes.NewBufferString("x"), ""); rec.Code != http.StatusAccepted {
		t.Errorf("longest key: %d %s", rec.Code, rec.Body)
	}
	// In progress: 409 without reading or storing.
	idem.recs[scopedIdempotencyKey("Bearer key1", "busy")] = IdempotencyRecord{Token: "other"}
	if rec, _ := post("busy", "key1", "video/mp4", bytes.NewBufferString("x"), ""); rec.Code != http.StatusConflict {
		t.Errorf("in progress: %d", rec.Code)
	}
	// A reservation lost to a different request: the stored object goes.
	n := len(objects.puts)
	idem.steal = &IdempotencyRecord{Hash: "other", Status: 202, Response: []byte(`{}`)}
	if rec, _ := post("lost", "key1", "video/mp4", bytes.NewBufferString("x"), ""); rec.Code != http.StatusConflict || code(rec) != CodeIdempotencyConflict {
		t.Errorf("lost reservation: %d %s", rec.Code, rec.Body)
	}
	if len(objects.puts) != n+1 || len(remover.removed) != 1 || remover.removed[0] != "src/"+objects.puts[n].Key {
		t.Errorf("removed %v", remover.removed)
	}
	// Lost before the job is started: nothing is published, the object goes.
	published := len(events.landed)
	objects.onPut = func() {
		idem.recs[scopedIdempotencyKey("Bearer key1", "lost-early")] = IdempotencyRecord{Hash: "other", Status: 202, Response: []byte(`{}`)}
	}
	if rec, _ := post("lost-early", "key1", "video/mp4", bytes.NewBufferString("x"), ""); rec.Code != http.StatusConflict || code(rec) != CodeIdempotencyConflict {
		t.Errorf("reservation lost before publishing: %d %s", rec.Code, rec.Body)
	}
	objects.onPut = nil
	if len(events.landed) != published || len(remover.removed) != 2 {
		t.Errorf("published %d, removed %v after a reservation lost before publishing", len(events.landed)-published, remover.removed)
	}
	// A failed upload releases its key.
	objects.err = context.DeadlineExceeded
	if rec, _ := post("retryable", "key1", "video/mp4", bytes.NewBufferString("x"), ""); rec.Code != http.StatusBadGateway {
		t.Errorf("failing store: %d", rec.Code)
	}
	objects.err = nil
	if rec, _ := post("retryable", "key1", "video/mp4", bytes.NewBufferString("x"), ""); rec.Code != http.StatusAccepted {
		t.Errorf("after a failed upload: %d %s", rec.Code, rec.Body)
	}

	// Stored but not recorded (NATS down): 503 with Retry-After, and the key
	// is released, so the retry uploads again and gets a job that starts
	// instead of a replay of one that may never.
	events.landedErr = errors.New("nats: timeout")
	n = len(objects.puts)
	rec, _ := post("nats-down", "key1", "video/mp4", bytes.NewBufferString("y"), "")
	if rec.Code != http.StatusServiceUnavailable || code(rec) != httpapi.CodeUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("publish failure: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if len(objects.puts) != n+1 {
		t.Fatalf("%d objects stored, want %d (the object stays)", len(objects.puts), n+1)
	}
	if _, held := idem.recs[scopedIdempotencyKey("Bearer key1", "nats-down")]; held {
		t.Fatal("the key is still held after a 503")
	}
	events.landedErr = nil
	rec, d := post("nats-down", "key1", "video/mp4", bytes.NewBufferString("y"), "")
	if rec.Code != http.StatusAccepted || rec.Header().Get("Idempotent-Replayed") != "" || d.JobID == "" {
		t.Fatalf("retry after the 503: %d %s", rec.Code, rec.Body)
	}
	if last := events.landed[len(events.landed)-1]; last.GetObject().GetKey() != objects.puts[len(objects.puts)-1].Key {
		t.Fatalf("the retry's job is not the one published: %v", last)
	}
	// …and its answer is what the key replays from now on.
	if rec, e := post("nats-down", "key1", "video/mp4", bytes.NewBufferString("y"), ""); rec.Code != http.StatusOK || e != d {
		t.Fatalf("replay after the retry: %d %s", rec.Code, rec.Body)
	}
}

// TestRedisIdempotency runs the store against the Redis of `go tool task test`.
func TestRedisIdempotency(t *testing.T) {
	c := cancel.NewRedisClient(testenv.RedisOpt(t))
	defer c.Close()
	s := &RedisIdempotency{Redis: c}
	ctx, key := t.Context(), "test-"+newToken()
	if _, ok, err := s.Reserve(ctx, key, "t1", time.Minute); !ok || err != nil {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	if rec, ok, err := s.Reserve(ctx, key, "t2", time.Minute); ok || err != nil || rec.Token != "t1" {
		t.Fatalf("second reserve: %+v %v %v", rec, ok, err)
	}
	if ok, err := s.Extend(ctx, key, "t2", time.Minute); ok || err != nil {
		t.Fatalf("extend by another: %v %v", ok, err)
	}
	if ok, err := s.Complete(ctx, key, "t1", IdempotencyRecord{Hash: "h", Status: 202, Response: []byte(`{"a":1}`)}, time.Minute); !ok || err != nil {
		t.Fatalf("complete: %v %v", ok, err)
	}
	if rec, ok, err := s.Reserve(ctx, key, "t3", time.Minute); ok || err != nil || rec.Hash != "h" || string(rec.Response) != `{"a":1}` {
		t.Fatalf("reserve done key: %+v %v %v", rec, ok, err)
	}
	if err := s.Release(ctx, key, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(ctx, key); !ok {
		t.Fatal("release removed a completed record")
	}
	c.Del(ctx, redisIdemKey(key))
}

type fakePresigner struct {
	bucket, key string
	headers     http.Header
	ttl         time.Duration
}

func (f *fakePresigner) PresignPut(_ context.Context, bucket, key string, ttl time.Duration, h http.Header) (*url.URL, error) {
	f.bucket, f.key, f.headers, f.ttl = bucket, key, h, ttl
	return url.Parse("https://s3.test/" + bucket + "/" + key + "?X-Amz-Signature=x")
}

// TestDirectUploadTTL: the URL's lifetime is Config.DirectUploadTTL
// (KILN_DIRECT_UPLOAD_TTL).
func TestDirectUploadTTL(t *testing.T) {
	pre := &fakePresigner{}
	s := New(Config{Objects: &fakeObjects{}, Events: &fakeEvents{}, SourcesBucket: "src", Presigner: pre, DirectUploadTTL: 2 * time.Minute})
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/direct-uploads", strings.NewReader(`{"size":1}`))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	var resp DirectUploadResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != http.StatusCreated {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if pre.ttl != 2*time.Minute || time.Until(resp.ExpiresAt) > 2*time.Minute {
		t.Fatalf("presigned for %v, expires at %v; want 2m", pre.ttl, resp.ExpiresAt)
	}
}

func TestDirectUpload(t *testing.T) {
	pre := &fakePresigner{}
	s := New(Config{Objects: &fakeObjects{}, Events: &fakeEvents{}, SourcesBucket: "src", PublicURL: "https://kiln.test",
		MaxUploadBytes: 1000, Presets: []string{"default", "hd"}, Presigner: pre})
	tests := []struct {
		name, body, contentType string
		status                  int
		code                    string
	}{
		{"ok", `{"filename":"my clip.mp4","size":1000,"preset":"hd","playback_policy":"signed"}`, "application/json", 201, ""},
		{"defaults", `{"size":1}`, "application/json; charset=utf-8", 201, ""},
		{"too large", `{"size":1001}`, "application/json", 413, CodeTooLarge},
		{"no size", `{"filename":"a.mp4"}`, "application/json", 400, httpapi.CodeBadRequest},
		{"zero size", `{"size":0}`, "application/json", 400, httpapi.CodeBadRequest},
		{"unknown field", `{"size":1,"sise":2}`, "application/json", 400, httpapi.CodeBadRequest},
		{"not JSON", `size=1`, "application/json", 400, httpapi.CodeBadRequest},
		{"two objects", `{"size":1}{}`, "application/json", 400, httpapi.CodeBadRequest},
		{"wrong content type", `{"size":1}`, "text/plain", 415, httpapi.CodeUnsupportedMediaType},
		{"no content type", `{"size":1}`, "", 415, httpapi.CodeUnsupportedMediaType},
		{"bad preset", `{"size":1,"preset":"4k"}`, "application/json", 400, CodeInvalidPreset},
		{"bad policy", `{"size":1,"playback_policy":"private"}`, "application/json", 400, CodeInvalidPolicy},
		{"bad priority", `{"size":1,"priority":"urgent"}`, "application/json", 400, CodeInvalidPriority},
		{"body over 1 MiB", `{"filename":"` + strings.Repeat("a", maxJSONBody) + `","size":1}`, "application/json", 413, CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			*pre = fakePresigner{}
			req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/direct-uploads", strings.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tt.status)
			}
			if tt.code != "" {
				var e httpapi.ErrorBody
				if json.Unmarshal(rec.Body.Bytes(), &e); e.Error.Code != tt.code {
					t.Fatalf("code %q, want %q", e.Error.Code, tt.code)
				}
				if pre.key != "" {
					t.Fatal("presigned despite the error")
				}
				return
			}
			var resp DirectUploadResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Method != "PUT" || resp.Key != pre.key || pre.bucket != "src" || !strings.HasPrefix(resp.Key, "uploads/") ||
				!strings.HasPrefix(resp.UploadURL, "https://s3.test/src/uploads/") ||
				resp.JobLookupURL != "https://kiln.test/v1/jobs?source_key="+url.QueryEscape(resp.Key) {
				t.Fatalf("response %+v", resp)
			}
			// Short-lived: whoever holds the URL can replace the source
			// until it expires.
			if pre.ttl != DefaultDirectUploadTTL || pre.ttl > 15*time.Minute {
				t.Errorf("presigned for %v, want the %v default", pre.ttl, DefaultDirectUploadTTL)
			}
			if d := time.Until(resp.ExpiresAt); d > pre.ttl || d < pre.ttl-time.Minute {
				t.Errorf("expires_at in %v, want the URL's %v", d, pre.ttl)
			}
			for k, v := range resp.Headers {
				if pre.headers.Get(k) != v {
					t.Errorf("header %s: returned %q, signed %q", k, v, pre.headers.Get(k))
				}
			}
			if len(resp.Headers) != len(pre.headers) || resp.Headers["Content-Length"] == "" ||
				resp.Headers["X-Amz-Meta-Kiln-Preset"] == "" || resp.Headers["X-Amz-Meta-Kiln-Playback-Policy"] == "" {
				t.Errorf("headers %v", resp.Headers)
			}
			if tt.name == "ok" && (!strings.HasSuffix(resp.Key, "/my_clip.mp4") || resp.Headers["Content-Length"] != "1000" ||
				resp.Headers["X-Amz-Meta-Kiln-Preset"] != "hd" || resp.Headers["X-Amz-Meta-Kiln-Playback-Policy"] != "signed") {
				t.Errorf("ok: %+v", resp)
			}
		})
	}
}

// TestUploadWebhookSecret: an upload with a webhook_url gets that webhook's
// own signing secret (webhooks.UploadSecret of KILN_WEBHOOK_SECRET and the
// job id) in its 202; one without gets none; an idempotent replay answers
// without it, and the stored answer never holds it.
func TestUploadWebhookSecret(t *testing.T) {
	def := webhooks.NewSecret()
	idem := &memIdempotency{recs: map[string]IdempotencyRecord{}}
	s := New(Config{Objects: &fakeObjects{}, Events: &fakeEvents{}, SourcesBucket: "src", PublicURL: "https://kiln.test",
		Idempotency: idem, WebhookSecret: def})
	post := func(query, idemKey, data string) (*httptest.ResponseRecorder, map[string]any) {
		t.Helper()
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/uploads"+query, strings.NewReader(data))
		req.Header.Set("Authorization", "Bearer k")
		if idemKey != "" {
			req.Header.Set(IdempotencyHeader, idemKey)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var out map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		return rec, out
	}
	hook := "?webhook_url=" + url.QueryEscape("https://example.com/hook")
	rec, out := post(hook+"&filename=a.mp4", "", "video")
	want, _ := webhooks.UploadSecret(def, fmt.Sprint(out["job_id"]))
	if rec.Code != http.StatusAccepted || out["webhook_secret"] != want || want == "" || want == def {
		t.Fatalf("upload with a webhook: %d %v, want webhook_secret %s", rec.Code, out, want)
	}
	if rec, out := post("?filename=b.mp4", "", "video"); rec.Code != http.StatusAccepted || out["webhook_secret"] != nil {
		t.Fatalf("upload without a webhook: %d %v", rec.Code, out)
	}
	rec, first := post(hook, "idem-1", "video-c")
	if rec.Code != http.StatusAccepted || first["webhook_secret"] == nil {
		t.Fatalf("first idempotent upload: %d %v", rec.Code, first)
	}
	rec, again := post(hook, "idem-1", "video-c")
	if rec.Code != http.StatusOK || again["job_id"] != first["job_id"] || again["webhook_secret"] != nil {
		t.Fatalf("replay: %d %v; want the answer without webhook_secret", rec.Code, again)
	}
	for k, r := range idem.recs {
		if strings.Contains(string(r.Response), "whsec_") {
			t.Errorf("idempotency record %s holds the secret: %s", k, r.Response)
		}
	}
}
