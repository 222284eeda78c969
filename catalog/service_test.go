package catalog

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grafov/m3u8"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/objstore"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// fakeObjects serves objects from a map and presigns to a fake S3 host,
// with the response header overrides as query parameters like S3's.
type fakeObjects map[string][]byte // "bucket/key" -> body

var _ Objects = fakeObjects(nil)

func (f fakeObjects) PresignGetWith(_ context.Context, bucket, key string, ttl time.Duration, opts objstore.PresignOptions) (*url.URL, error) {
	q := url.Values{"X-Amz-Expires": {strconv.Itoa(int(ttl.Seconds()))}}
	if opts.ContentType != "" {
		q.Set("response-content-type", opts.ContentType)
	}
	if opts.ContentDisposition != "" {
		q.Set("response-content-disposition", opts.ContentDisposition)
	}
	return &url.URL{Scheme: "https", Host: "s3.test", Path: "/" + bucket + "/" + key, RawQuery: q.Encode()}, nil
}

func (f fakeObjects) Get(_ context.Context, bucket, key string, maxBytes int64) ([]byte, error) {
	b, ok := f[bucket+"/"+key]
	if !ok {
		return nil, fmt.Errorf("no such object %s/%s: %w", bucket, key, objstore.ErrNotFound)
	}
	if int64(len(b)) > maxBytes {
		return nil, fmt.Errorf("object %s/%s larger than %d bytes", bucket, key, maxBytes)
	}
	return b, nil
}

// Open serves the object from memory, with an MD5 ETag like S3's.
func (f fakeObjects) Open(_ context.Context, bucket, key string) (io.ReadSeekCloser, objstore.Info, error) {
	b, ok := f[bucket+"/"+key]
	if !ok {
		return nil, objstore.Info{}, fmt.Errorf("open %s/%s: %w", bucket, key, objstore.ErrNotFound)
	}
	sum := md5.Sum(b)
	return nopCloser{bytes.NewReader(b)}, objstore.Info{Bucket: bucket, Key: key, ETag: hex.EncodeToString(sum[:]),
		Size: int64(len(b)), LastModified: t0}, nil
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

const (
	testKey    = "kiln_test_key"
	testPublic = "https://kiln.example.com/"
	mediaM3U8  = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:6.000,\nseg_00001.m4s\n#EXT-X-ENDLIST\n"
)

func TestHandler(t *testing.T) {
	store := newStore(t)
	readyJob, readyAsset := testJob("ready")
	queuedJob, queuedAsset := testJob("queued")
	failedJob, _ := testJob("failed")
	unknownJob, unknownAsset := testJob("unknown")
	for _, ev := range []*kilnv1.JobEvent{
		event(readyJob, queued, 0), event(readyJob, probing, 0), event(readyJob, transcoding, 0.7),
		event(readyJob, packaging, 0), event(readyJob, ready, 0),
		event(queuedJob, queued, 0),
		event(failedJob, queued, 0), event(failedJob, failed, 0),
	} {
		if _, err := store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	out := testOutputs(readyAsset)
	svc, err := New(Config{
		Store:      store,
		Objects:    fakeObjects{"outputs/" + out.Renditions[0].PlaylistKey: []byte(mediaM3U8)},
		PublicURL:  testPublic,
		APIKeys:    httpapi.NewKeys([]string{testKey}),
		Logger:     zaptest.NewLogger(t),
		PresignTTL: 10 * time.Minute,

		SourcesBucket: "sources",
		OutputsBucket: "outputs",
	})
	if err != nil {
		t.Fatal(err)
	}
	h := svc.Handler()
	play := "/v1/play/" + readyAsset

	tests := []struct {
		name   string
		method string
		target string
		key    string
		status int
		code   string // error envelope code, when an error is expected
		check  func(t *testing.T, rec *httptest.ResponseRecorder)
	}{
		{name: "job without key", target: "/v1/jobs/" + readyJob, status: 401, code: httpapi.CodeUnauthorized},
		{name: "job with wrong key", target: "/v1/jobs/" + readyJob, key: "nope", status: 401, code: httpapi.CodeUnauthorized},
		{name: "malformed job id", target: "/v1/jobs/job_123", key: testKey, status: 400, code: httpapi.CodeInvalidID},
		{name: "asset id as job id", target: "/v1/jobs/" + readyAsset, key: testKey, status: 400, code: httpapi.CodeInvalidID},
		{name: "unknown job", target: "/v1/jobs/" + unknownJob, key: testKey, status: 404, code: httpapi.CodeNotFound},
		{name: "ready job", target: "/v1/jobs/" + readyJob, key: testKey, status: 200, check: checkReadyJob(readyJob, readyAsset)},
		{name: "failed job", target: "/v1/jobs/" + failedJob, key: testKey, status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			var got struct {
				State string               `json:"state"`
				Error *httpapi.ErrorDetail `json:"error"`
			}
			decode(t, rec, &got)
			if got.State != "failed" || got.Error == nil || got.Error.Code != "invalid_media" {
				t.Errorf("failed job = %+v", got)
			}
		}},
		{name: "asset without key", target: "/v1/assets/" + readyAsset, status: 401, code: httpapi.CodeUnauthorized},
		{name: "malformed asset id", target: "/v1/assets/" + readyJob, key: testKey, status: 400, code: httpapi.CodeInvalidID},
		{name: "unknown asset", target: "/v1/assets/" + unknownAsset, key: testKey, status: 404, code: httpapi.CodeNotFound},
		{name: "ready asset", target: "/v1/assets/" + readyAsset, key: testKey, status: 200, check: checkReadyAsset(readyAsset)},
		{name: "asset of a queued job", target: "/v1/assets/" + queuedAsset, key: testKey, status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			got := map[string]any{}
			decode(t, rec, &got)
			if got["state"] != "queued" || got["playback"] != nil || fmt.Sprint(got["renditions"]) != "[]" {
				t.Errorf("queued asset = %v", got)
			}
		}},
		{name: "master playlist", target: play + "/master.m3u8", status: 200, check: checkMaster},
		{name: "master of a queued asset", target: "/v1/play/" + queuedAsset + "/master.m3u8", status: 404, code: httpapi.CodeNotFound},
		{name: "master of an unknown asset", target: "/v1/play/" + unknownAsset + "/master.m3u8", status: 404, code: httpapi.CodeNotFound},
		{name: "master of a malformed id", target: "/v1/play/ast_x/master.m3u8", status: 400, code: httpapi.CodeInvalidID},
		{name: "media playlist", target: play + "/720p/index.m3u8", status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			// Direct delivery: the stored playlist, its URIs presigned object URLs.
			direct := regexp.MustCompile(`https://s3\.test/outputs/[^"\n]*/([a-z0-9_]+\.(m4s|mp4))\?[^"\n]*`)
			if direct.ReplaceAllString(rec.Body.String(), "$1") != mediaM3U8 || rec.Header().Get("Content-Type") != hlsContentType {
				t.Errorf("media playlist %q (%s)", rec.Body.String(), rec.Header().Get("Content-Type"))
			}
		}},
		{name: "media playlist missing in storage", target: play + "/360p/index.m3u8", status: 502, code: httpapi.CodeUnavailable},
		{name: "unknown rendition", target: play + "/4k/index.m3u8", status: 404, code: httpapi.CodeNotFound},
		{name: "segment", target: play + "/720p/seg_00001.m4s", status: 302,
			check: checkRedirect("/outputs/assets/" + readyAsset + "/hls/720p/seg_00001.m4s")},
		{name: "init segment", target: play + "/360p/init.mp4", status: 302,
			check: checkRedirect("/outputs/assets/" + readyAsset + "/hls/360p/init.mp4")},
		{name: "segment of unknown rendition", target: play + "/4k/seg_00001.m4s", status: 404, code: httpapi.CodeNotFound},
		{name: "segment of a queued asset", target: "/v1/play/" + queuedAsset + "/720p/seg_00001.m4s", status: 404, code: httpapi.CodeNotFound},
		{name: "download", target: play + "/download.mp4", status: 302, check: checkRedirect("/outputs/assets/" + readyAsset + "/download.mp4")},
		{name: "poster", target: play + "/poster.jpg", status: 302, check: checkRedirect("/outputs/assets/" + readyAsset + "/poster.jpg")},
		{name: "CORS preflight", method: http.MethodOptions, target: play + "/master.m3u8", status: 204, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			if rec.Header().Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(rec.Header().Get("Access-Control-Allow-Methods"), "GET") {
				t.Errorf("preflight headers = %v", rec.Header())
			}
		}},
		// Path traversal and anything that is not a segment.
		{name: "wrong extension", target: play + "/720p/x.txt", status: 404},
		{name: "encoded traversal in file", target: play + "/720p/..%2f..%2fsecret.m4s", status: 404},
		{name: "encoded traversal to master", target: play + "/720p/..%2fmaster.m3u8", status: 404},
		{name: "encoded dot-dot file", target: play + "/720p/%2e%2e", status: 404},
		{name: "encoded traversal in rendition", target: play + "/..%2f720p/seg_00001.m4s", status: 404},
		{name: "double extension", target: play + "/720p/seg.m4s.txt", status: 404},
		{name: "playback ignores API keys but needs none", target: play + "/720p/seg_00001.m4s", key: "nope", status: 302},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequestWithContext(t.Context(), method, tt.target, nil)
			if tt.key != "" {
				req.Header.Set("Authorization", "Bearer "+tt.key)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if strings.HasPrefix(tt.target, "/v1/play/") && rec.Header().Get("Access-Control-Allow-Origin") != "*" && tt.status != 404 {
				t.Errorf("playback response without CORS header")
			}
			if tt.code != "" {
				var body httpapi.ErrorBody
				decode(t, rec, &body)
				if body.Error.Code != tt.code {
					t.Errorf("error code = %q, want %q", body.Error.Code, tt.code)
				}
			}
			if tt.check != nil {
				tt.check(t, rec)
			}
		})
	}
}

func decode(t *testing.T, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, rec.Body)
	}
}

func checkReadyJob(jobID, assetID string) func(*testing.T, *httptest.ResponseRecorder) {
	return func(t *testing.T, rec *httptest.ResponseRecorder) {
		var got struct {
			ID         string               `json:"id"`
			AssetID    string               `json:"asset_id"`
			State      string               `json:"state"`
			Progress   float64              `json:"progress"`
			Preset     string               `json:"preset"`
			Source     map[string]any       `json:"source"`
			Error      *httpapi.ErrorDetail `json:"error"`
			Media      map[string]any       `json:"media"`
			Plan       map[string]any       `json:"plan"`
			CreatedAt  time.Time            `json:"created_at"`
			UpdatedAt  time.Time            `json:"updated_at"`
			Timestamps map[string]time.Time `json:"timestamps"`
			Links      map[string]string    `json:"links"`
		}
		decode(t, rec, &got)
		if got.ID != jobID || got.AssetID != assetID || got.State != "ready" || got.Progress != 1 || got.Preset != "default" {
			t.Errorf("job = %+v", got)
		}
		if got.Source["bucket"] != "sources" || got.Source["etag"] != "e1" || got.Source["size"] != float64(1234) {
			t.Errorf("source = %v", got.Source)
		}
		if got.Error != nil {
			t.Errorf("error on a ready job: %+v", got.Error)
		}
		if got.Media["duration_seconds"] != 12.5 || got.Plan["segment_seconds"] != float64(6) {
			t.Errorf("media = %v, plan = %v", got.Media, got.Plan)
		}
		if got.CreatedAt.IsZero() || got.UpdatedAt.Before(got.CreatedAt) || len(got.Timestamps) != 5 || got.Timestamps["ready"].IsZero() {
			t.Errorf("times: created %v updated %v timestamps %v", got.CreatedAt, got.UpdatedAt, got.Timestamps)
		}
		if got.Links["self"] != "https://kiln.example.com/v1/jobs/"+jobID || got.Links["asset"] != "https://kiln.example.com/v1/assets/"+assetID {
			t.Errorf("links = %v", got.Links)
		}
	}
}

func checkReadyAsset(assetID string) func(*testing.T, *httptest.ResponseRecorder) {
	return func(t *testing.T, rec *httptest.ResponseRecorder) {
		var got assetJSON
		decode(t, rec, &got)
		if got.State != StateReady || got.DurationSeconds != 12.48 || len(got.Renditions) != 2 {
			t.Fatalf("asset = %+v", got)
		}
		want := renditionJSON{Name: "360p", Width: 640, Height: 360, FrameRate: 29.97, Bandwidth: 950_000,
			AverageBandwidth: 900_000, Codecs: "avc1.64001e,mp4a.40.2", State: "ready"}
		if got.Renditions[0] != want {
			t.Errorf("rendition[0] = %+v, want %+v", got.Renditions[0], want)
		}
		base := "https://kiln.example.com/v1/play/" + assetID
		if got.Playback == nil || got.Playback.HLS != base+"/master.m3u8" ||
			got.Playback.MP4 != base+"/download.mp4" || got.Playback.Poster != base+"/poster.jpg" {
			t.Errorf("playback = %+v", got.Playback)
		}
	}
}

func checkMaster(t *testing.T, rec *httptest.ResponseRecorder) {
	if ct := rec.Header().Get("Content-Type"); ct != hlsContentType {
		t.Errorf("Content-Type = %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=60" {
		t.Errorf("Cache-Control = %q", cc)
	}
	body := rec.Body.String()
	for _, tag := range []string{"#EXT-X-VERSION:7\n", "#EXT-X-INDEPENDENT-SEGMENTS\n", "FRAME-RATE=29.970"} {
		if !strings.Contains(body, tag) {
			t.Errorf("master lacks %q:\n%s", tag, body)
		}
	}
	if strings.Contains(body, "PROGRAM-ID") {
		t.Errorf("master has PROGRAM-ID (removed in version 6):\n%s", body)
	}
	pl, typ, err := m3u8.DecodeFrom(strings.NewReader(body), true)
	if err != nil || typ != m3u8.MASTER {
		t.Fatalf("decode master: %v (type %v)\n%s", err, typ, body)
	}
	vs := pl.(*m3u8.MasterPlaylist).Variants
	want := []m3u8.VariantParams{
		{Bandwidth: 950_000, AverageBandwidth: 900_000, Codecs: "avc1.64001e,mp4a.40.2", Resolution: "640x360", FrameRate: 29.97},
		{Bandwidth: 3_400_000, AverageBandwidth: 3_100_000, Codecs: "avc1.64001f,mp4a.40.2", Resolution: "1280x720", FrameRate: 29.97},
	}
	wantURI := []string{"360p/index.m3u8", "720p/index.m3u8"}
	if len(vs) != len(want) {
		t.Fatalf("%d variants, want %d:\n%s", len(vs), len(want), body)
	}
	for i, v := range vs {
		w := want[i]
		if v.URI != wantURI[i] || v.Bandwidth != w.Bandwidth || v.AverageBandwidth != w.AverageBandwidth ||
			v.Codecs != w.Codecs || v.Resolution != w.Resolution || v.FrameRate != w.FrameRate {
			t.Errorf("variant %d = %s %+v, want %s %+v", i, v.URI, v.VariantParams, wantURI[i], w)
		}
	}
}

func checkRedirect(wantPath string) func(*testing.T, *httptest.ResponseRecorder) {
	return func(t *testing.T, rec *httptest.ResponseRecorder) {
		loc, err := url.Parse(rec.Header().Get("Location"))
		if err != nil || loc.Host != "s3.test" || loc.Path != wantPath || loc.Query().Get("X-Amz-Expires") != "600" {
			t.Errorf("Location = %q (%v), want path %s with a 10m presign", rec.Header().Get("Location"), err, wantPath)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "private, max-age=300" {
			t.Errorf("Cache-Control = %q", cc)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	store := newStore(t)
	keys := httpapi.NewKeys([]string{testKey})
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"complete", Config{Store: store, Objects: fakeObjects{}, PublicURL: "http://localhost:8080", APIKeys: keys}, true},
		{"no store", Config{Objects: fakeObjects{}, PublicURL: testPublic, APIKeys: keys}, false},
		{"no objects", Config{Store: store, PublicURL: testPublic, APIKeys: keys}, false},
		{"no keys", Config{Store: store, Objects: fakeObjects{}, PublicURL: testPublic}, false},
		{"relative public URL", Config{Store: store, Objects: fakeObjects{}, PublicURL: "/kiln", APIKeys: keys}, false},
		{"no public URL", Config{Store: store, Objects: fakeObjects{}, APIKeys: keys}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (s.ttl != time.Hour || s.log == nil) {
				t.Errorf("defaults not applied: ttl %v log %v", s.ttl, s.log)
			}
		})
	}
}

func TestHandleEvent(t *testing.T) {
	svc, err := New(Config{Store: newStore(t), Objects: fakeObjects{}, PublicURL: testPublic,
		APIKeys: httpapi.NewKeys(nil), Logger: zaptest.NewLogger(t), SourcesBucket: "sources", OutputsBucket: "outputs"})
	if err != nil {
		t.Fatal(err)
	}
	jobID, _ := testJob("a")
	for range 2 { // redelivery is harmless
		if err := svc.HandleEvent(t.Context(), event(jobID, queued, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.HandleEvent(t.Context(), &kilnv1.JobEvent{JobId: "bogus"}); err == nil {
		t.Fatal("invalid event accepted")
	}
}

// failingStore fails every Apply as a database would.
type failingStore struct{ Store }

var errDatabase = errors.New("database is locked")

func (failingStore) Apply(context.Context, *kilnv1.JobEvent) (bool, error) { return false, errDatabase }

func TestHandleMessage(t *testing.T) {
	store := newStore(t)
	svc, err := New(Config{Store: store, Objects: fakeObjects{}, PublicURL: testPublic,
		APIKeys: httpapi.NewKeys(nil), Logger: zaptest.NewLogger(t), SourcesBucket: "sources", OutputsBucket: "outputs"})
	if err != nil {
		t.Fatal(err)
	}
	marshal := func(ev *kilnv1.JobEvent) []byte {
		t.Helper()
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	jobID, _ := testJob("message")
	for range 2 { // redelivery is harmless
		if err := svc.HandleMessage(t.Context(), bus.SubjectJobs, marshal(event(jobID, queued, 0))); err != nil {
			t.Fatal(err)
		}
	}
	if j, err := store.Job(t.Context(), jobID); err != nil || j.State != StateQueued {
		t.Fatalf("job after the message = %+v, %v", j, err)
	}
	// Malformed payloads and invalid events are permanent.
	if err := svc.HandleMessage(t.Context(), bus.SubjectJobs, []byte{0xff, 0xff, 0xff}); !errors.Is(err, bus.ErrPermanent) {
		t.Errorf("malformed payload: %v, want bus.ErrPermanent", err)
	}
	err = svc.HandleMessage(t.Context(), bus.SubjectJobs, marshal(&kilnv1.JobEvent{JobId: "bogus"}))
	if !errors.Is(err, bus.ErrPermanent) || !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("invalid event: %v, want bus.ErrPermanent wrapping ErrInvalidEvent", err)
	}
	// Other errors are returned as is, for a redelivery.
	svc.store = failingStore{store}
	err = svc.HandleMessage(t.Context(), bus.SubjectJobs, marshal(event(jobID, probing, 0)))
	if !errors.Is(err, errDatabase) || errors.Is(err, bus.ErrPermanent) {
		t.Errorf("store error: %v, want it as is", err)
	}
}
