package workers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
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
	// ReadTimeout bounds every network wait on the source (-rw_timeout).
	ReadTimeout = ffmpeg.ReadTimeout
)

// InputArgs are the ffmpeg input options for an untrusted source URL.
func InputArgs(input string) []string {
	return []string{
		"-format_whitelist", FormatWhitelist,
		"-protocol_whitelist", ProtocolWhitelist,
		"-probesize", fmt.Sprint(ProbeSize),
		"-analyzeduration", fmt.Sprint(AnalyzeDuration.Microseconds()),
		"-rw_timeout", fmt.Sprint(ReadTimeout.Microseconds()),
		"-i", input,
	}
}

// FFmpeg runs ffmpeg and ffprobe for the handlers; *ffmpeg.Runner in
// production, a fake in tests.
type FFmpeg interface {
	Run(ctx context.Context, args []string, onProgress func(ffmpeg.Progress)) error
	Probe(ctx context.Context, input string, opts ffmpeg.ProbeOptions) (*ffmpeg.ProbeResult, error)
}

var _ FFmpeg = (*ffmpeg.Runner)(nil)

// Objects is the object storage workers use.
type Objects interface {
	PresignGet(ctx context.Context, bucket, key string, ttl time.Duration) (*url.URL, error)
	PutFile(ctx context.Context, bucket, key, path, contentType string) error
}

// MediaFromProbe converts ffprobe's result into kiln's media info. A
// negative duration, size or bit rate reads as unknown (0), like "N/A".
func MediaFromProbe(p *ffmpeg.ProbeResult) *kilnv1.MediaInfo {
	m := &kilnv1.MediaInfo{
		Format:          p.Format.FormatName,
		DurationSeconds: max(p.Format.Duration, 0),
		SizeBytes:       max(p.Format.Size, 0),
		BitRate:         max(p.Format.BitRate, 0),
	}
	for _, st := range p.Streams {
		switch {
		case st.CodecType == "video" && !st.AttachedPic:
			m.VideoStreams++
		case st.CodecType == "audio":
			m.AudioStreams++
		default:
			m.OtherStreams++
		}
	}
	if v := p.Video(); v != nil {
		m.Video = videoFromProbe(v)
		if m.DurationSeconds <= 0 {
			m.DurationSeconds = max(v.Duration, 0)
		}
	}
	if a := p.Audio(); a != nil {
		m.Audio = &kilnv1.AudioStream{
			Codec: a.CodecName, Profile: a.Profile, Channels: int32(a.Channels), ChannelLayout: a.ChannelLayout,
			SampleRate: int32(a.SampleRate), BitRate: a.BitRate,
		}
		if m.DurationSeconds <= 0 {
			m.DurationSeconds = max(a.Duration, 0)
		}
	}
	return m
}

func videoFromProbe(v *ffmpeg.ProbeStream) *kilnv1.VideoStream {
	avg, nominal := ffmpeg.ParseRational(v.AvgFrameRate), ffmpeg.ParseRational(v.RFrameRate)
	if nominal <= 0 || nominal > 1000 {
		nominal = 0
	}
	if avg <= 0 || avg > 1000 {
		avg = nominal
	}
	vs := &kilnv1.VideoStream{
		Codec: v.CodecName, Profile: v.Profile, Level: int32(v.Level),
		Width: int32(v.Width), Height: int32(v.Height),
		FrameRate: avg, NominalFrameRate: nominal,
		PixFmt: v.PixFmt, BitDepth: int32(bitDepth(v)),
		ColorTransfer: v.ColorTransfer, ColorPrimaries: v.ColorPrimaries, ColorSpace: v.ColorSpace,
		SampleAspectRatio: v.SampleAspectRatio, Rotation: int32(v.Rotation),
		FieldOrder: v.FieldOrder, BitRate: v.BitRate,
	}
	// A variable frame rate shows as an average rate that differs from the
	// container's base rate by more than rounding.
	vs.VariableFrameRate = avg > 0 && nominal > 0 && math.Abs(avg-nominal)/nominal > 0.01
	switch v.FieldOrder {
	case "tt", "bb", "tb", "bt":
		vs.Interlaced = true
	}
	vs.Hdr = v.ColorTransfer == "smpte2084" || v.ColorTransfer == "arib-std-b67"
	w, h := float64(v.Width), float64(v.Height)
	if sar := sarValue(v.SampleAspectRatio); sar > 0 {
		w *= sar
	}
	if vs.Rotation == 90 || vs.Rotation == 270 {
		w, h = h, w
	}
	vs.DisplayWidth, vs.DisplayHeight = int32(math.Round(w)), int32(math.Round(h))
	return vs
}

// sarValue parses "num:den"; 0 when unknown or square.
func sarValue(s string) float64 {
	num, den, ok := strings.Cut(s, ":")
	if !ok {
		return 0
	}
	n, err1 := strconv.ParseFloat(num, 64)
	d, err2 := strconv.ParseFloat(den, 64)
	if err1 != nil || err2 != nil || n <= 0 || d <= 0 || n == d {
		return 0
	}
	return n / d
}

// bitDepth from bits_per_raw_sample, else from the pixel format's name.
func bitDepth(v *ffmpeg.ProbeStream) int {
	if v.BitsPerRawSample > 0 {
		return v.BitsPerRawSample
	}
	for _, d := range []string{"16", "14", "12", "10", "9"} {
		if strings.Contains(v.PixFmt, "p"+d) {
			n, _ := strconv.Atoi(d)
			return n
		}
	}
	if v.PixFmt == "" {
		return 0
	}
	return 8
}

// MessageMissing is the failure message of a stage whose input object is
// not in storage (HTTP 404).
const MessageMissing = "the file to read is no longer in storage (deleted?)"

// classify turns an ffmpeg failure into a permanent error with code, or
// returns it as is to be retried, by its cause (ffmpeg.ExitError.Cause):
// what the demuxer or decoder rejects is bad input (message); a missing
// object (404) is permanent too, with MessageMissing (storage is
// read-after-write consistent, so the object was deleted); network and
// disk failures, a signal and the end of the task's context are the
// infrastructure's, retried.
func classify(err error, code, message string) error {
	if errors.Is(err, ffmpeg.ErrOutputTooLarge) {
		return tasks.Permanent(code, message, err) // absurd input: it will be as large next time
	}
	var ee *ffmpeg.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	switch ee.Cause() {
	case ffmpeg.CauseInput:
		return tasks.Permanent(code, message, err)
	case ffmpeg.CauseMissing:
		return tasks.Permanent(code, MessageMissing, err)
	}
	return err
}
