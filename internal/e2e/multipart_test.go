package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// bigClip is a clip of more than one 5 MiB part: 10 s of lossless
// 640x360 H.264 (about 6 MiB).
func bigClip(t *testing.T) (string, []byte) {
	t.Helper()
	p := testenv.Clip(t, testenv.ClipSpec{Name: "multipart.mp4", Seconds: 10, Width: 640, Height: 360,
		Video: []string{"-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p"}})
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) <= objstore.MinPartSize {
		t.Fatalf("clip of %d bytes: want more than one part", len(data))
	}
	return p, data
}

// TestMultipartUploads: multipart direct uploads on the whole stack.
// The CLI sends a clip in parts (`kiln upload --multipart-threshold`) and
// follows its job to ready; and a client that completes its multipart
// upload on S3 itself, without the complete route, gets its job from the
// bucket notification (s3:ObjectCreated:CompleteMultipartUpload, an ETag
// "<hex>-<parts>"), well before the reconciler's grace would.
func TestMultipartUploads(t *testing.T) {
	s := needStack(t)
	clip, data := bigClip(t)

	t.Run("cli", func(t *testing.T) {
		bin := testenv.BuildKiln(t)
		t.Setenv("XDG_CACHE_HOME", t.TempDir())
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
		defer cancel()
		stdout, stderr, code := cliRun(ctx, t, bin, s.APIURL, s.APIKey, "upload", clip,
			"--multipart-threshold", "1MiB", "--part-size", "5MiB", "--wait")
		if code != 0 {
			t.Fatalf("kiln upload: exit %d\n%s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "job_") || !strings.Contains(lines[len(lines)-1], "/master.m3u8") {
			t.Fatalf("stdout %q: want the job id, then the HLS URL", stdout)
		}
		j := s.waitJob(t, lines[0], jobTimeout)
		var src struct {
			Source struct {
				ETag string `json:"etag"`
				Size int64  `json:"size"`
			} `json:"source"`
		}
		if s.do(t, http.MethodGet, "/v1/jobs/"+j.ID, nil, "", &src); j.State != "ready" || !strings.HasSuffix(src.Source.ETag, "-2") ||
			src.Source.Size != int64(len(data)) {
			t.Fatalf("job %+v, source %+v: want ready, from a 2-part object of %d bytes", j, src.Source, len(data))
		}
		decode(t, lines[len(lines)-1])
	})

	t.Run("bucket notification", func(t *testing.T) {
		req, _ := json.Marshal(map[string]any{"filename": "notified.mp4", "size": len(data), "multipart": true, "part_size": objstore.MinPartSize})
		var up struct {
			UploadID string `json:"upload_id"`
			Key      string `json:"key"`
			Parts    []struct {
				PartNumber int               `json:"part_number"`
				Size       int64             `json:"size"`
				URL        string            `json:"url"`
				Headers    map[string]string `json:"headers"`
			} `json:"parts"`
		}
		if code := s.do(t, http.MethodPost, "/v1/direct-uploads", bytes.NewReader(req), "application/json", &up); code != http.StatusCreated || len(up.Parts) != 2 {
			t.Fatalf("start: %d %+v", code, up)
		}
		var parts []objstore.Part
		for _, p := range slices.Backward(up.Parts) { // any order
			off := int64(p.PartNumber-1) * objstore.MinPartSize
			r, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, p.URL, bytes.NewReader(data[off:off+p.Size]))
			r.ContentLength = p.Size
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("PUT part %d: %d", p.PartNumber, resp.StatusCode)
			}
			parts = append([]objstore.Part{{Number: p.PartNumber, ETag: strings.Trim(resp.Header.Get("ETag"), `"`)}}, parts...)
		}
		// Completed on S3 directly: only the bucket notification tells
		// ingest.
		store, err := objstore.New(s.S3)
		if err != nil {
			t.Fatal(err)
		}
		payload, _, _ := strings.Cut(strings.TrimPrefix(up.UploadID, "mpu_"), ".")
		s3ID := uploadIDOf(t, payload)
		etag, err := store.CompleteMultipartUpload(t.Context(), s.Sources, up.Key, s3ID, parts)
		if err != nil {
			t.Fatal(err)
		}
		completed := time.Now()
		var found jobView
		for found.ID == "" {
			if time.Since(completed) > time.Minute {
				t.Fatal("no job for the completed multipart upload within a minute")
			}
			var page struct {
				Jobs []jobView `json:"jobs"`
			}
			if code := s.do(t, http.MethodGet, "/v1/jobs?source_key="+url.QueryEscape(up.Key), nil, "", &page); code != http.StatusOK {
				t.Fatalf("list by source_key: %d", code)
			}
			if len(page.Jobs) > 0 {
				found = page.Jobs[0]
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("job %s recorded %s after the completion (etag %s)", found.ID, time.Since(completed).Round(time.Millisecond), etag)
		if j := s.waitJob(t, found.ID, jobTimeout); j.State != "ready" {
			t.Fatalf("job %+v", j)
		}
		// The upload is gone: its id names nothing now.
		var bad apiError
		if code := s.do(t, http.MethodGet, "/v1/direct-uploads/"+up.UploadID, nil, "", &bad); code != http.StatusNotFound || bad.Error.Code != "upload_not_found" {
			t.Fatalf("status of the completed upload: %d %+v", code, bad)
		}
	})
}

// uploadIDOf is the S3 upload id inside an upload id's payload (base64url
// JSON: a client never needs it; this test completes the upload behind
// kiln's back).
func uploadIDOf(t *testing.T, payload string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		UploadID string `json:"u"`
	}
	if err := json.Unmarshal(raw, &tok); err != nil || tok.UploadID == "" {
		t.Fatalf("upload id payload %q: %v", raw, err)
	}
	return tok.UploadID
}
