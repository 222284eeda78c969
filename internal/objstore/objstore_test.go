package objstore_test

// Tests against the real MinIO of the test stack (KILN_TEST_S3_*). Each test
// works in its own bucket kiln-objstore-test-<random>, removed at the end.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// s3Config is the test stack's MinIO; without one the test skips, or fails
// under `go tool task test` (testenv.S3).
func s3Config(t *testing.T) objstore.Config {
	t.Helper()
	return testenv.S3(t).Config
}

// bucketName is a fresh bucket name of this test run.
func bucketName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "kiln-objstore-test-" + hex.EncodeToString(b)
}

// dropBucket removes bucket and everything in it when the test ends, with
// minio-go directly (objstore has no bucket removal).
func dropBucket(t *testing.T, cfg objstore.Config, bucket string) {
	t.Helper()
	t.Cleanup(func() {
		mc, err := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), Secure: cfg.Secure})
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		if ok, err := mc.BucketExists(ctx, bucket); err != nil || !ok {
			return
		}
		if err := mc.RemoveBucketWithOptions(ctx, bucket, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
			t.Errorf("cleanup: remove bucket %s: %v", bucket, err)
		}
	})
}

// setup returns a client and a fresh bucket that exists.
func setup(t *testing.T) (*objstore.Client, objstore.Config, string) {
	t.Helper()
	cfg := s3Config(t)
	c, err := objstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bucket := bucketName(t)
	dropBucket(t, cfg, bucket)
	if err := c.EnsureBuckets(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	return c, cfg, bucket
}

func put(t *testing.T, c *objstore.Client, bucket, key string, data []byte) objstore.Info {
	t.Helper()
	info, err := c.Put(t.Context(), bucket, key, bytes.NewReader(data), int64(len(data)), "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := mathrand.NewChaCha8([32]byte{1, 2, 3})
	_, _ = r.Read(b)
	return b
}

func TestNewRequiresEndpoint(t *testing.T) {
	if _, err := objstore.New(objstore.Config{}); err == nil {
		t.Error("New without endpoint: nil error")
	}
	// New does not contact the server.
	if _, err := objstore.New(objstore.Config{Endpoint: "127.0.0.1:1"}); err != nil {
		t.Errorf("New: %v", err)
	}
}

func TestEnsureBucketsIdempotent(t *testing.T) {
	cfg := s3Config(t)
	c, err := objstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, b := bucketName(t), bucketName(t)
	dropBucket(t, cfg, a)
	dropBucket(t, cfg, b)
	ctx := t.Context()
	if err := c.Ping(ctx, a); err == nil {
		t.Error("Ping of a missing bucket: nil error")
	}
	for i := range 3 {
		if err := c.EnsureBuckets(ctx, a, b, a); err != nil {
			t.Fatalf("EnsureBuckets #%d: %v", i+1, err)
		}
	}
	if err := c.Ping(ctx, a, b); err != nil {
		t.Errorf("Ping after EnsureBuckets: %v", err)
	}
	// Existing content survives another EnsureBuckets.
	put(t, c, a, "keep", []byte("x"))
	if err := c.EnsureBuckets(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, a, "keep"); err != nil {
		t.Errorf("object lost after EnsureBuckets: %v", err)
	}
	// Invalid bucket names are reported.
	if err := c.EnsureBuckets(ctx, "Not_A_Valid_Bucket"); err == nil {
		t.Error("EnsureBuckets(invalid name): nil error")
	}
}

// patternReader yields n deterministic pseudo-random bytes without holding
// them in memory, and no Len/Size/Seek so the uploader cannot know its size.
type patternReader struct {
	r *mathrand.ChaCha8
	n int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n)]
	_, _ = p.r.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

func TestPutStreamsUnknownSize(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	const size = 40 << 20 // more than two 16 MiB parts
	src := &patternReader{r: mathrand.NewChaCha8([32]byte{42}), n: size}
	h := sha256.New()
	meta := map[string]string{"Kiln-Upload": "u1"}
	info, err := c.Put(ctx, bucket, "uploads/big.bin", io.TeeReader(src, h), -1, "video/mp4", meta)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	sum := h.Sum(nil)
	if info.Size != size || info.Bucket != bucket || info.Key != "uploads/big.bin" || info.ContentType != "video/mp4" || info.ETag == "" {
		t.Errorf("Put info = %+v", info)
	}
	// A multipart upload: the ETag ends in -<parts>, 40 MiB in 16 MiB parts is 3.
	if !strings.HasSuffix(info.ETag, "-3") {
		t.Errorf("ETag %q: want a 3-part multipart ETag", info.ETag)
	}
	st, err := c.Stat(ctx, bucket, "uploads/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.ETag != info.ETag || st.ContentType != "video/mp4" || st.LastModified.IsZero() {
		t.Errorf("Stat = %+v, want size %d etag %s", st, size, info.ETag)
	}
	if got := metaValue(st.Metadata, "Kiln-Upload"); got != "u1" {
		t.Errorf("metadata = %v, want Kiln-Upload=u1", st.Metadata)
	}
	// The bytes are intact.
	r, oi, err := c.Open(ctx, bucket, "uploads/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h2 := sha256.New()
	if n, err := io.Copy(h2, r); err != nil || n != size {
		t.Fatalf("read back %d bytes: %v", n, err)
	}
	if !bytes.Equal(h2.Sum(nil), sum) {
		t.Error("read back bytes differ from the uploaded ones")
	}
	if oi.ETag != info.ETag || oi.Size != size {
		t.Errorf("Open info = %+v", oi)
	}
}

func metaValue(m map[string]string, key string) string {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

func TestPutHonoursPartSize(t *testing.T) {
	cfg := s3Config(t)
	cfg.PartSize = 5 << 20 // the S3 minimum
	c, err := objstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bucket := bucketName(t)
	dropBucket(t, cfg, bucket)
	if err := c.EnsureBuckets(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	info, err := c.Put(t.Context(), bucket, "k", &patternReader{r: mathrand.NewChaCha8([32]byte{7}), n: 12 << 20}, -1, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(info.ETag, "-3") || info.Size != 12<<20 {
		t.Errorf("12 MiB in 5 MiB parts: etag %q size %d, want 3 parts", info.ETag, info.Size)
	}
}

func TestPutFile(t *testing.T) {
	c, _, bucket := setup(t)
	data := randomBytes(100_000)
	path := filepath.Join(t.TempDir(), "clip.mp4")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.PutFile(t.Context(), bucket, "files/clip.mp4", path, "video/mp4"); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(t.Context(), bucket, "files/clip.mp4", 1<<20)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("Get after PutFile: %d bytes, %v", len(got), err)
	}
	if st, err := c.Stat(t.Context(), bucket, "files/clip.mp4"); err != nil || st.ContentType != "video/mp4" {
		t.Errorf("Stat after PutFile = %+v, %v", st, err)
	}
	if err := c.PutFile(t.Context(), bucket, "files/missing", filepath.Join(t.TempDir(), "nope"), ""); err == nil {
		t.Error("PutFile of a missing file: nil error")
	}
}

func TestGet(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	data := []byte("#EXTM3U\n#EXT-X-VERSION:7\n")
	put(t, c, bucket, "hls/master.m3u8", data)

	tests := []struct {
		key      string
		maxBytes int64
		want     []byte
		wantErr  error
	}{
		{"hls/master.m3u8", 1 << 20, data, nil},
		{"hls/master.m3u8", int64(len(data)), data, nil}, // exactly at the bound
		{"hls/master.m3u8", int64(len(data)) - 1, nil, objstore.ErrTooLarge},
		{"hls/master.m3u8", 0, nil, objstore.ErrTooLarge},
		{"hls/missing.m3u8", 1 << 20, nil, objstore.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.key, tt.maxBytes), func(t *testing.T) {
			got, err := c.Get(ctx, bucket, tt.key, tt.maxBytes)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Get = %q, %v, want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("Get = %q, %v, want %q", got, err, tt.want)
			}
		})
	}
	// A missing bucket is "not found" too.
	if _, err := c.Get(ctx, bucketName(t), "k", 10); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Get from a missing bucket: %v, want ErrNotFound", err)
	}
}

func TestNotFound(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	if _, err := c.Stat(ctx, bucket, "nope"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
	}
	if _, err := c.Stat(ctx, bucketName(t), "nope"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Stat(missing bucket) = %v, want ErrNotFound", err)
	}
	r, _, err := c.Open(ctx, bucket, "nope")
	if !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Open(missing) = %v, want ErrNotFound", err)
	}
	if r != nil {
		t.Error("Open(missing) returned a reader")
	}
	// Other errors are not "not found".
	bad, err := objstore.New(objstore.Config{Endpoint: s3Config(t).Endpoint, AccessKey: "wrong", SecretKey: "wrongwrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Stat(ctx, bucket, "nope"); err == nil || errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Stat with bad credentials = %v, want an error that is not ErrNotFound", err)
	}
}

func TestPresignGet(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	data := randomBytes(10_000)
	put(t, c, bucket, "assets/a1/mp4/720p.mp4", data)

	get := func(u string) (int, http.Header, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, body
	}

	u, err := c.PresignGet(ctx, bucket, "assets/a1/mp4/720p.mp4", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, body := get(u.String()); code != http.StatusOK || !bytes.Equal(body, data) {
		t.Errorf("GET presigned: %d, %d bytes", code, len(body))
	}
	// Tampering with the URL breaks the signature.
	tampered := strings.Replace(u.String(), "720p.mp4", "1080p.mp4", 1)
	if code, _, _ := get(tampered); code != http.StatusForbidden {
		t.Errorf("GET tampered URL: %d, want 403", code)
	}

	u, err = c.PresignGetWith(ctx, bucket, "assets/a1/mp4/720p.mp4", time.Minute,
		objstore.PresignOptions{ContentType: "video/mp4", ContentDisposition: `attachment; filename="video.mp4"`})
	if err != nil {
		t.Fatal(err)
	}
	code, h, body := get(u.String())
	if code != http.StatusOK || !bytes.Equal(body, data) || h.Get("Content-Type") != "video/mp4" ||
		h.Get("Content-Disposition") != `attachment; filename="video.mp4"` {
		t.Errorf("GET presigned with overrides: %d, content-type %q, disposition %q", code, h.Get("Content-Type"), h.Get("Content-Disposition"))
	}

	// Expiry.
	u, err = c.PresignGet(ctx, bucket, "assets/a1/mp4/720p.mp4", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if code, _, body := get(u.String()); code != http.StatusForbidden {
		t.Errorf("GET expired presigned URL: %d (%d bytes), want 403", code, len(body))
	}
}

func TestPresignPut(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	data := randomBytes(5000)
	headers := http.Header{}
	headers.Set("Content-Type", "video/mp4")
	headers.Set("X-Amz-Meta-Kiln-Upload", "u9")
	u, err := c.PresignPut(ctx, bucket, "uploads/direct.mp4", time.Minute, headers)
	if err != nil {
		t.Fatal(err)
	}
	do := func(h http.Header) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	// Headers other than the signed ones are refused.
	wrong := headers.Clone()
	wrong.Set("X-Amz-Meta-Kiln-Upload", "forged")
	if code := do(wrong); code != http.StatusForbidden {
		t.Errorf("PUT with a changed signed header: %d, want 403", code)
	}
	if code := do(headers); code != http.StatusOK {
		t.Fatalf("PUT presigned: %d", code)
	}
	st, err := c.Stat(ctx, bucket, "uploads/direct.mp4")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != int64(len(data)) || st.ContentType != "video/mp4" || metaValue(st.Metadata, "Kiln-Upload") != "u9" {
		t.Errorf("Stat after presigned PUT = %+v", st)
	}
}

func keys(infos []objstore.Info) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.Key)
	}
	slices.Sort(out)
	return out
}

func TestListRemove(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	for _, k := range []string{"assets/a1/hls/720p/seg1.m4s", "assets/a1/hls/720p/seg2.m4s", "assets/a1/hls/master.m3u8",
		"assets/a10/hls/master.m3u8", "assets/b2/poster.jpg"} {
		put(t, c, bucket, k, []byte(k))
	}
	l, err := c.List(ctx, bucket, "assets/a1/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"assets/a1/hls/720p/seg1.m4s", "assets/a1/hls/720p/seg2.m4s", "assets/a1/hls/master.m3u8"}
	if got := keys(l); !slices.Equal(got, want) {
		t.Errorf("List(assets/a1/) = %v, want %v (recursive, not a10)", got, want)
	}
	for _, i := range l {
		if i.Size != int64(len(i.Key)) || i.ETag == "" || i.Bucket != bucket {
			t.Errorf("List info %+v", i)
		}
	}
	if l, err := c.List(ctx, bucket, "nothing/"); err != nil || len(l) != 0 {
		t.Errorf("List(empty prefix) = %v, %v", l, err)
	}
	if _, err := c.List(ctx, bucketName(t), ""); err == nil {
		t.Error("List of a missing bucket: nil error")
	}

	if err := c.Remove(ctx, bucket, "assets/b2/poster.jpg"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, bucket, "assets/b2/poster.jpg"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Stat after Remove = %v, want ErrNotFound", err)
	}
	if err := c.Remove(ctx, bucket, "assets/b2/poster.jpg"); err != nil {
		t.Errorf("Remove of a missing object: %v, want nil", err)
	}
}

func TestRemovePrefix(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	for _, bad := range []string{"", "/", "assets", "assets/a1"} {
		if err := c.RemovePrefix(ctx, bucket, bad); err == nil {
			t.Errorf("RemovePrefix(%q): nil error, want a refusal", bad)
		}
	}
	// More objects than one multi-delete request (1000) takes.
	const n = 1100
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			k := fmt.Sprintf("assets/a1/hls/720p/seg%04d.m4s", i)
			if _, err := c.Put(ctx, bucket, k, strings.NewReader("x"), 1, "", nil); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, k := range []string{"assets/a1/hls/master.m3u8", "assets/a10/keep.jpg", "assets/a1.txt"} {
		put(t, c, bucket, k, []byte("y"))
	}
	if l, err := c.List(ctx, bucket, "assets/a1/"); err != nil || len(l) != n+1 {
		t.Fatalf("before: %d objects under assets/a1/, %v", len(l), err)
	}
	if err := c.RemovePrefix(ctx, bucket, "assets/a1/"); err != nil {
		t.Fatalf("RemovePrefix: %v", err)
	}
	if l, err := c.List(ctx, bucket, "assets/a1/"); err != nil || len(l) != 0 {
		t.Errorf("after: %d objects under assets/a1/, %v", len(l), err)
	}
	l, err := c.List(ctx, bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(l), []string{"assets/a1.txt", "assets/a10/keep.jpg"}; !slices.Equal(got, want) {
		t.Errorf("left = %v, want %v", got, want)
	}
	// Nothing to remove is fine.
	if err := c.RemovePrefix(ctx, bucket, "assets/a1/"); err != nil {
		t.Errorf("RemovePrefix of an empty folder: %v", err)
	}
}

func TestOpenSeek(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	data := randomBytes(1 << 20)
	pi := put(t, c, bucket, "assets/a1/mp4/720p.mp4", data)

	r, info, err := c.Open(ctx, bucket, "assets/a1/mp4/720p.mp4")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if info.Size != int64(len(data)) || info.ETag != pi.ETag || info.LastModified.IsZero() || info.Key != "assets/a1/mp4/720p.mp4" {
		t.Errorf("Open info = %+v", info)
	}
	tests := []struct {
		offset int64
		whence int
		n      int
		want   []byte
	}{
		{500_000, io.SeekStart, 1000, data[500_000:501_000]},
		{-100, io.SeekEnd, 100, data[len(data)-100:]},
		{0, io.SeekStart, 10, data[:10]},
		{90, io.SeekCurrent, 10, data[100:110]},
	}
	for _, tt := range tests {
		if _, err := r.Seek(tt.offset, tt.whence); err != nil {
			t.Fatalf("Seek(%d, %d): %v", tt.offset, tt.whence, err)
		}
		got := make([]byte, tt.n)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("read after Seek(%d, %d): %v", tt.offset, tt.whence, err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("bytes after Seek(%d, %d) differ", tt.offset, tt.whence)
		}
	}

	// The reader streams through http.ServeContent with Range requests.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r, info, err := c.Open(req.Context(), bucket, "assets/a1/mp4/720p.mp4")
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		defer r.Close()
		w.Header().Set("ETag", info.ETag)
		http.ServeContent(w, req, "720p.mp4", info.LastModified, r)
	}))
	defer srv.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[1000:2000]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(data)) {
		t.Errorf("ranged GET: %d, %d bytes, Content-Range %q", resp.StatusCode, len(body), resp.Header.Get("Content-Range"))
	}
}

func TestNotifyObjectCreatedBadARN(t *testing.T) {
	// Only the ARN check: a valid ARN would route this bucket's events into
	// the stack's NATS stream, where kiln's ingest would pick them up.
	c, err := objstore.New(objstore.Config{Endpoint: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.NotifyObjectCreated(t.Context(), "b", "not-an-arn"); err == nil {
		t.Error("NotifyObjectCreated(bad arn): nil error")
	}
}

// TestPutIfMatch: a conditional write creates only what is missing,
// replaces only the copy it read, and says ErrChanged otherwise.
func TestPutIfMatch(t *testing.T) {
	cfg := s3Config(t)
	c, err := objstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bucket := bucketName(t)
	dropBucket(t, cfg, bucket)
	ctx := t.Context()
	if err := c.EnsureBuckets(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	data, etag, err := c.GetETag(ctx, bucket, "p.m3u8", 1<<10)
	if err != nil || data != nil || etag != "" {
		t.Fatalf("GetETag of a missing object: %q %q %v", data, etag, err)
	}
	if err := c.PutIfMatch(ctx, bucket, "p.m3u8", []byte("one"), "text/plain", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.PutIfMatch(ctx, bucket, "p.m3u8", []byte("again"), "text/plain", ""); !errors.Is(err, objstore.ErrChanged) {
		t.Errorf("create over an existing object: %v, want ErrChanged", err)
	}
	data, etag, err = c.GetETag(ctx, bucket, "p.m3u8", 1<<10)
	if err != nil || string(data) != "one" || etag == "" {
		t.Fatalf("GetETag: %q %q %v", data, etag, err)
	}
	if err := c.PutIfMatch(ctx, bucket, "p.m3u8", []byte("two"), "text/plain", etag); err != nil {
		t.Fatal(err)
	}
	if err := c.PutIfMatch(ctx, bucket, "p.m3u8", []byte("stale"), "text/plain", etag); !errors.Is(err, objstore.ErrChanged) {
		t.Errorf("write over a copy that changed: %v, want ErrChanged", err)
	}
	if data, _, _ := c.GetETag(ctx, bucket, "p.m3u8", 1<<10); string(data) != "two" {
		t.Errorf("stored %q, want two", data)
	}
}
