package objstore_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/objstore"
)

// putPart PUTs data to a presigned part URL and returns the status and the
// ETag answered.
func putPart(t *testing.T, url string, data []byte, contentLength int64) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, url, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = contentLength
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, strings.Trim(resp.Header.Get("ETag"), `"`)
}

// TestMultipartUpload drives a multipart upload through presigned part
// URLs on the real MinIO: parts out of order, a part of another size
// refused by the signature, listing, a complete refused for a wrong ETag,
// the object made with the metadata of the start, abort and listing of
// uploads in progress.
func TestMultipartUpload(t *testing.T) {
	c, _, bucket := setup(t)
	ctx := t.Context()
	const key = "uploads/0123456789abcdef01234567/big.mp4"
	data := randomBytes(objstore.MinPartSize*2 + 1000)
	sizes := []int64{objstore.MinPartSize, objstore.MinPartSize, 1000}
	id, err := c.NewMultipartUpload(ctx, bucket, key, "video/mp4", map[string]string{"Kiln-Preset": "hd"})
	if err != nil {
		t.Fatal(err)
	}
	ups, err := c.ListMultipartUploads(ctx, bucket, "uploads/")
	if err != nil || len(ups) != 1 || ups[0].Key != key || ups[0].UploadID != id || time.Since(ups[0].Initiated) > time.Minute {
		t.Fatalf("uploads in progress: %+v %v", ups, err)
	}
	partURL := func(n int) string {
		u, err := c.PresignUploadPart(ctx, bucket, key, id, n, sizes[n-1], time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return u.String()
	}
	chunk := func(n int) []byte {
		off := int64(n-1) * objstore.MinPartSize
		return data[off : off+sizes[n-1]]
	}
	// The Content-Length is signed: a part of another size is refused.
	if code, _ := putPart(t, partURL(3), append(bytes.Clone(chunk(3)), 'x'), sizes[2]+1); code != http.StatusForbidden {
		t.Fatalf("part of another size: %d, want 403", code)
	}
	etags := map[int]string{}
	for _, n := range []int{3, 1} {
		code, etag := putPart(t, partURL(n), chunk(n), sizes[n-1])
		if code != http.StatusOK || etag == "" {
			t.Fatalf("part %d: %d %q", n, code, etag)
		}
		etags[n] = etag
	}
	parts, err := c.ListParts(ctx, bucket, key, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || parts[0].Number != 1 || parts[1].Number != 3 || parts[0].Size != sizes[0] || parts[1].Size != sizes[2] ||
		parts[0].ETag != etags[1] || parts[1].ETag != etags[3] {
		t.Fatalf("parts %+v, want 1 and 3 with %v", parts, etags)
	}
	code, etag := putPart(t, partURL(2), chunk(2), sizes[1])
	if code != http.StatusOK {
		t.Fatalf("part 2: %d", code)
	}
	etags[2] = etag
	all := []objstore.Part{{Number: 1, ETag: etags[1]}, {Number: 2, ETag: etags[3]}, {Number: 3, ETag: etags[3]}}
	if _, err := c.CompleteMultipartUpload(ctx, bucket, key, id, all); !errors.Is(err, objstore.ErrBadParts) {
		t.Fatalf("complete with a wrong ETag: %v, want ErrBadParts", err)
	}
	all[1].ETag = etags[2]
	objETag, err := c.CompleteMultipartUpload(ctx, bucket, key, id, all)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(objETag, "-3") || strings.Contains(objETag, `"`) {
		t.Fatalf("object ETag %q, want <hex>-3", objETag)
	}
	st, err := c.Stat(ctx, bucket, key)
	if err != nil || st.ETag != objETag || st.Size != int64(len(data)) || st.ContentType != "video/mp4" || st.Metadata["Kiln-Preset"] != "hd" {
		t.Fatalf("object %+v %v", st, err)
	}
	got, err := c.Get(ctx, bucket, key, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object bytes differ (%d of %d) %v", len(got), len(data), err)
	}
	// Completed: the upload is gone.
	if _, err := c.ListParts(ctx, bucket, key, id); !errors.Is(err, objstore.ErrNoUpload) {
		t.Fatalf("list parts after complete: %v, want ErrNoUpload", err)
	}
	// MinIO answers an abort of an upload that is gone with success (S3
	// with NoSuchUpload): either way the object stays.
	if err := c.AbortMultipartUpload(ctx, bucket, key, id); err != nil && !errors.Is(err, objstore.ErrNoUpload) {
		t.Fatalf("abort after complete: %v", err)
	}
	if _, err := c.Stat(ctx, bucket, key); err != nil {
		t.Fatalf("the object after an abort of its completed upload: %v", err)
	}

	// Abort: the parts go, the upload is no longer listed.
	var ids []string
	for i := range 3 {
		id, err := c.NewMultipartUpload(ctx, bucket, "uploads/x/"+strconv.Itoa(i), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if code, _ := putPart(t, mustPresign(t, c, bucket, "uploads/x/0", ids[0]), []byte("abc"), 3); code != http.StatusOK {
		t.Fatalf("part: %d", code)
	}
	if err := c.AbortMultipartUpload(ctx, bucket, "uploads/x/0", ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListParts(ctx, bucket, "uploads/x/0", ids[0]); !errors.Is(err, objstore.ErrNoUpload) {
		t.Fatalf("list parts after abort: %v", err)
	}
	ups, err = c.ListMultipartUploads(ctx, bucket, "uploads/")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, u := range ups {
		left = append(left, u.UploadID)
	}
	if slices.Sort(left); !slices.Equal(left, slices.Sorted(slices.Values(ids[1:]))) {
		t.Fatalf("uploads in progress after an abort: %v, want %v", left, ids[1:])
	}
	if ups, err := c.ListMultipartUploads(ctx, bucket, "elsewhere/"); err != nil || len(ups) != 0 {
		t.Fatalf("uploads under another prefix: %v %v", ups, err)
	}
}

func mustPresign(t *testing.T, c *objstore.Client, bucket, key, id string) string {
	t.Helper()
	u, err := c.PresignUploadPart(t.Context(), bucket, key, id, 1, 3, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}
