package packager_test

// The package handler with the real ffmpeg and ffprobe, one rendition read
// from a failing source (internal/ffmpeg/ffmpegtest): a network failure
// retries the task, bad data or a deleted object fails that rendition only.

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/ffmpeg/ffmpegtest"
	"github.com/kilnvideo/kiln/internal/testenv"
	"github.com/kilnvideo/kiln/packager"
)

// presignByKey is object storage whose presigned URL of key is url(key).
type presignByKey struct {
	*fakes.Objects
	url func(key string) string
}

func (o presignByKey) PresignGet(ctx context.Context, bucket, key string, ttl time.Duration) (*url.URL, error) {
	if _, err := o.Objects.PresignGet(ctx, bucket, key, ttl); err != nil {
		return nil, err
	}
	return url.Parse(o.url(key))
}

func TestPackageClassifiesRealFailures(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	// Encoded renditions are faststart MP4s with kiln's fixed GOP.
	good := ffmpegtest.NewSources(t, testenv.Clip(t, testenv.ClipSpec{Seconds: 4,
		ExtraArgs: []string{"-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-movflags", "+faststart"}}))
	refused := ffmpegtest.RefusedURL(t)
	tests := []struct {
		name  string
		input string // of the 240p rendition
		// no code: the task (a retry of the 240p rendition) is retried;
		// else the rendition fails again with this code and message.
		code, message string
	}{
		{name: "storage down (closed port)", input: refused},
		{name: "503", input: good.URL(ffmpegtest.Status503)},
		{name: "403 expired presigned URL", input: good.URL(ffmpegtest.Status403)},
		{name: "closes mid-body", input: good.URL(ffmpegtest.Cut)},
		{name: "404: deleted", input: good.URL(ffmpegtest.Status404), code: failure.PackageFailed, message: packager.MessageMissing},
		{name: "garbage", input: good.URL(ffmpegtest.Garbage), code: failure.PackageFailed, message: "ffmpeg could not package this rendition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objects, events := &fakes.Objects{}, &fakes.Events{}
			h := packager.New(packager.Config{
				FFmpeg: ffmpeg.New(ffmpeg.Config{Logger: zaptest.NewLogger(t)}),
				Objects: presignByKey{objects, func(key string) string {
					if strings.Contains(key, "/240p.") {
						return tt.input
					}
					return good.URL(ffmpegtest.OK)
				}},
				Events: events, OutputsBucket: outputsBucket, WorkDir: t.TempDir(),
			})
			err := h.Package(t.Context(), asTask(t, retryOf("240p")))
			ready := func() bool {
				for _, ev := range events.Events() {
					if ev.GetOutputs() != nil {
						return true
					}
				}
				return false
			}
			if tt.code == "" {
				var ee *ffmpeg.ExitError
				if !errors.As(err, &ee) {
					t.Fatalf("Package = %v, want a retryable *ffmpeg.ExitError", err)
				}
				fakes.WantRetryable(t, err, ee)
				if ready() {
					t.Error("the asset was published ready while a rendition is to be retried")
				}
				return
			}
			if err != nil {
				t.Fatalf("Package = %v, want the rendition's failure published", err)
			}
			if !ready() {
				t.Fatal("no READY event")
			}
			out := events.Events()[len(events.Events())-1].GetOutputs()
			if !out.GetPartial() || len(out.GetRenditions()) != 0 || len(out.GetFailedRenditions()) != 1 {
				t.Fatalf("renditions %v, failed %v: want a partial READY with 240p failed", out.GetRenditions(), out.GetFailedRenditions())
			}
			f := out.GetFailedRenditions()[0]
			if f.GetName() != "240p" || f.GetError().GetCode() != tt.code || f.GetError().GetMessage() != tt.message {
				t.Errorf("failed rendition %v, want 240p: %s %q", f, tt.code, tt.message)
			}
		})
	}
}
