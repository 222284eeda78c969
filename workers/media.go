package workers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// FormatWhitelist lists the container demuxers kiln opens. Playlist, concat
// and image-sequence demuxers (hls, concat, image2…) are deliberately absent:
// a disguised playlist could otherwise make ffmpeg read local files, which
// -protocol_whitelist alone does not prevent.
const FormatWhitelist = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,wav,mp3,aac,flac,asf,mxf,dv,m4v"

// ProtocolWhitelist lets ffmpeg read a presigned URL and nothing else.
const ProtocolWhitelist = "http,https,tcp,tls"

// Input bounds applied to every source.
const (
	ProbeSize       = 50 << 20
	AnalyzeDuration = 30 * time.Second
)

// InputArgs are the ffmpeg input options for an untrusted source URL.
func InputArgs(input string) []string {
	return []string{
		"-format_whitelist", FormatWhitelist,
		"-protocol_whitelist", ProtocolWhitelist,
		"-probesize", fmt.Sprint(ProbeSize),
		"-analyzeduration", fmt.Sprint(AnalyzeDuration.Microseconds()),
		"-i", input,
	}
}

// Objects is the object storage workers use.
type Objects interface {
	PresignGet(ctx context.Context, bucket, key string, ttl time.Duration) (*url.URL, error)
	PutFile(ctx context.Context, bucket, key, path, contentType string) error
}

// MediaFromProbe converts ffprobe's result into kiln's media info.
func MediaFromProbe(p *ffmpeg.ProbeResult) *kilnv1.MediaInfo {
	m := &kilnv1.MediaInfo{
		Format:          p.Format.FormatName,
		DurationSeconds: p.Format.Duration,
		SizeBytes:       p.Format.Size,
		BitRate:         p.Format.BitRate,
	}
	if v := p.Video(); v != nil {
		fps := ffmpeg.ParseRational(v.AvgFrameRate)
		if fps <= 0 || fps > 240 {
			fps = ffmpeg.ParseRational(v.RFrameRate)
		}
		m.Video = &kilnv1.VideoStream{
			Codec: v.CodecName, Width: int32(v.Width), Height: int32(v.Height),
			FrameRate: fps, PixFmt: v.PixFmt, Rotation: int32(v.Rotation),
		}
		if m.DurationSeconds <= 0 {
			m.DurationSeconds = v.Duration
		}
	}
	if a := p.Audio(); a != nil {
		m.Audio = &kilnv1.AudioStream{Codec: a.CodecName, Channels: int32(a.Channels), SampleRate: int32(a.SampleRate)}
		if m.DurationSeconds <= 0 {
			m.DurationSeconds = a.Duration
		}
	}
	return m
}

// classify turns an ffmpeg failure into a permanent bad-input error or a
// retryable infrastructure error.
func classify(err error, code, message string) error {
	var ee *ffmpeg.ExitError
	if errors.As(err, &ee) && !ee.Signaled && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return tasks.Permanent(code, message, err)
	}
	return err
}
