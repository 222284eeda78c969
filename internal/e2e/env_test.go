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

	"github.com/kilnvideo/kiln/internal/testenv"
)

// stack is where the services under test are (testenv.Stack); the e2e
// helpers are its methods.
type stack testenv.StackEnv

// needStack returns the stack or skips; under `go tool task test`
// (KILN_TEST_REQUIRE_SERVICES=1) a missing stack, ffmpeg or ffprobe is a
// failure, not a skip.
func needStack(t *testing.T) stack {
	t.Helper()
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	return stack(testenv.Stack(t))
}

// makeClip generates a small H.264 (x264's default preset) + AAC 30 fps
// test clip of size WxH.
func makeClip(t *testing.T, name string, seconds int, size string) string {
	t.Helper()
	var w, h int
	if _, err := fmt.Sscanf(size, "%dx%d", &w, &h); err != nil {
		t.Fatalf("clip size %q: %v", size, err)
	}
	return testenv.Clip(t, testenv.ClipSpec{
		Name: name, Seconds: float64(seconds), Width: w, Height: h, Rate: "30",
		Video: []string{"-c:v", "libx264", "-pix_fmt", "yuv420p"},
	})
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
	Attempt int32  `json:"attempt"`
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
	// DurationSeconds is what the catalog recorded.
	DurationSeconds float64 `json:"duration_seconds"`
}

// waitJob polls the job until it reaches a terminal state, and a ready
// job's asset until its MP4 download (built just after READY) is there.
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
			var asset assetView
			switch {
			case j.State == "failed":
				return j
			case j.State == "ready" && s.do(t, http.MethodGet, "/v1/assets/"+j.AssetID, nil, "", &asset) == http.StatusOK &&
				asset.Playback != nil && asset.Playback.MP4 != "":
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
	JobID         string `json:"job_id"`
	AssetID       string `json:"asset_id"`
	StatusURL     string `json:"status_url"`
	WebhookSecret string `json:"webhook_secret"`
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
