// Package e2e holds the end-to-end tests: they drive a running kiln stack
// (started by `go tool task test`) the way a user does — HTTP uploads, direct
// S3 puts, ffmpeg playing the HLS URLs the catalog hands out.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/objstore"
)

// stack is where the services under test are, from KILN_TEST_* variables.
type stack struct {
	APIURL    string
	APIKey    string
	S3        objstore.Config
	Sources   string
	Outputs   string
	RedisAddr string
	NATSURL   string
}

// needStack returns the stack or skips; under `go tool task test`
// (KILN_TEST_REQUIRE_SERVICES=1) a missing stack is a failure, not a skip.
func needStack(t *testing.T) stack {
	t.Helper()
	s := stack{
		APIURL:    os.Getenv("KILN_TEST_API_URL"),
		APIKey:    os.Getenv("KILN_TEST_API_KEY"),
		Sources:   envOr("KILN_TEST_SOURCES_BUCKET", "kiln-sources"),
		Outputs:   envOr("KILN_TEST_OUTPUTS_BUCKET", "kiln-outputs"),
		RedisAddr: os.Getenv("KILN_TEST_REDIS_ADDR"),
		NATSURL:   os.Getenv("KILN_TEST_NATS_URL"),
		S3: objstore.Config{
			Endpoint:  os.Getenv("KILN_TEST_S3_ENDPOINT"),
			AccessKey: os.Getenv("KILN_TEST_S3_ACCESS_KEY"),
			SecretKey: os.Getenv("KILN_TEST_S3_SECRET_KEY"),
		},
	}
	if s.APIURL == "" || s.APIKey == "" || s.S3.Endpoint == "" {
		if os.Getenv("KILN_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal("KILN_TEST_* variables missing: run through `go tool task test`")
		}
		t.Skip("no kiln stack: run through `go tool task test`")
	}
	return s
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// makeClip generates a small H.264/AAC test clip.
func makeClip(t *testing.T, name string, seconds int, size string, extra ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	args := []string{"-v", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=s=%s:r=30:d=%d", size, seconds),
		"-f", "lavfi", "-i", fmt.Sprintf("sine=f=440:d=%d", seconds),
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"}
	args = append(args, extra...)
	args = append(args, out)
	if b, err := exec.CommandContext(t.Context(), "ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("make clip: %v\n%s", err, b)
	}
	return out
}

// do sends a request with the API key and decodes a JSON answer into v.
func (s stack) do(t *testing.T, method, path string, body io.Reader, contentType string, v any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.APIURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.APIKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if v != nil && len(data) > 0 {
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatalf("%s %s: status %d, body is not JSON: %v\n%s", method, path, resp.StatusCode, err, data)
		}
	}
	return resp.StatusCode
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type jobView struct {
	ID      string `json:"id"`
	AssetID string `json:"asset_id"`
	State   string `json:"state"`
	Preset  string `json:"preset"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Source struct {
		Bucket string `json:"bucket"`
		Key    string `json:"key"`
	} `json:"source"`
	CreatedAt time.Time `json:"created_at"`
}

type assetView struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Policy     string `json:"playback_policy"`
	Renditions []struct {
		Name             string  `json:"name"`
		Width            int     `json:"width"`
		Height           int     `json:"height"`
		FrameRate        float64 `json:"frame_rate"`
		Bandwidth        int64   `json:"bandwidth"`
		AverageBandwidth int64   `json:"average_bandwidth"`
		Codecs           string  `json:"codecs"`
	} `json:"renditions"`
	Playback *struct {
		HLS    string `json:"hls"`
		MP4    string `json:"mp4"`
		Poster string `json:"poster"`
	} `json:"playback"`
	// TokenExpiresAt is set for a signed asset.
	TokenExpiresAt *time.Time `json:"playback_token_expires_at"`
}

// waitJob polls the job until it reaches a terminal state.
func (s stack) waitJob(t *testing.T, jobID string, timeout time.Duration) jobView {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	var last jobView
	for {
		var j jobView
		code := s.do(t, http.MethodGet, "/v1/jobs/"+jobID, nil, "", &j)
		if code == http.StatusOK {
			last = j
			if j.State == "ready" || j.State == "failed" {
				return j
			}
		} else if code != http.StatusNotFound { // not yet recorded is fine
			t.Fatalf("GET job %s: status %d", jobID, code)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s not finished after %s (last state %q)", jobID, timeout, last.State)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// uploadMultipart posts file as multipart/form-data.
func (s stack) uploadMultipart(t *testing.T, file, query string) (int, uploadResponse, apiError) {
	t.Helper()
	var body bytes.Buffer
	boundary := "kilnboundary7e3"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&body, "--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n", boundary)
	fmt.Fprintf(&body, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=%q\r\nContent-Type: video/mp4\r\n\r\n", boundary, filepath.Base(file))
	body.Write(data)
	fmt.Fprintf(&body, "\r\n--%s--\r\n", boundary)
	return s.upload(t, &body, "multipart/form-data; boundary="+boundary, query)
}

type uploadResponse struct {
	JobID     string `json:"job_id"`
	AssetID   string `json:"asset_id"`
	StatusURL string `json:"status_url"`
}

func (s stack) upload(t *testing.T, body io.Reader, contentType, query string) (int, uploadResponse, apiError) {
	t.Helper()
	var raw json.RawMessage
	code := s.do(t, http.MethodPost, "/v1/uploads"+query, body, contentType, &raw)
	var ok uploadResponse
	var bad apiError
	if code == http.StatusAccepted {
		_ = json.Unmarshal(raw, &ok)
	} else {
		_ = json.Unmarshal(raw, &bad)
	}
	return code, ok, bad
}

// ffprobeStreams lists the streams ffprobe sees at url (HLS: every variant).
type probedStream struct {
	CodecType string `json:"codec_type"`
	CodecName string `json:"codec_name"`
	Width     int    `json:"width"`
	Height    int    `json:"height"`
}

func ffprobeStreams(t *testing.T, url string) []probedStream {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ffprobe", "-v", "error", "-print_format", "json", "-show_streams", url).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("ffprobe %s: %v\n%s", url, err, ee.Stderr)
		}
		t.Fatalf("ffprobe %s: %v", url, err)
	}
	var res struct {
		Streams []probedStream `json:"streams"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res.Streams
}

// decode plays url to the null muxer, failing on any decode error, and
// returns ffmpeg's stderr.
func decode(t *testing.T, url string, args ...string) string {
	t.Helper()
	full := append([]string{"-v", "error", "-xerror", "-i", url}, args...)
	full = append(full, "-f", "null", "-")
	var stderr strings.Builder
	cmd := exec.CommandContext(t.Context(), "ffmpeg", full...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffmpeg could not play %s: %v\n%s", url, err, stderr.String())
	}
	return stderr.String()
}
