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

	"google.golang.org/protobuf/proto"

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
// (ffmpeg 5.1, Debian 12's, can only take the URL from its command line, so
// it is there, with its signature: /proc/<pid>/cmdline shows it to the
// machine's other processes. What limits that: the URL grants a GET of this
// one object, pinned to its ETag, and expires with the task (presignTTL);
// the worker logs argv with query strings redacted; ffmpeg's environment
// holds no credential (ffmpeg.ChildEnv). ffmpeg 7's "-/i <file>" reads an
// option's value from a file and would take the URL off the command line.)
const ProtocolWhitelist = "http,https,tcp,tls"

// Input bounds applied to every source.
const (
	ProbeSize       = 50 << 20
	AnalyzeDuration = 30 * time.Second
	// ReadTimeout bounds every network wait on the source (-rw_timeout).
	ReadTimeout = ffmpeg.ReadTimeout
)

// Input is one untrusted input of an ffmpeg run, and how to bound its read.
type Input struct {
	// URL is the presigned URL (or, in tests, the path) of the input.
	URL string
	// ETag, when set, pins every HTTP request for the input to the object
	// the probe saw (PinHeaders): a replaced object answers 412 and the
	// run fails (source_changed, see Handlers.sourceChanged).
	ETag string
	// Seconds, when > 0, bounds how much of the input is read and decoded
	// (an input -t): never more than the probe accepted (EncodeBound).
	Seconds float64
	// Seek, when > 0, starts reading at the source's key frame before this
	// time (seconds; -ss without accurate seeking); Seconds then counts
	// from there. CopyTS keeps the source's timestamps (from its start).
	Seek   float64
	CopyTS bool
	// MaxPixels bounds every picture a decoder may allocate (-max_pixels);
	// 0: DefaultLimits().MaxPixels.
	MaxPixels int64
	// ReadRate, when > 0, caps how fast the input is read, in multiples
	// of real time (-readrate).
	ReadRate float64
}

// InputArgs are the ffmpeg input options for an untrusted input: demuxer,
// protocol and decoder whitelists, a picture-size bound for the decoders,
// bounded probing, a read timeout, the ETag pin and the duration bound.
func InputArgs(in Input) []string {
	px := in.MaxPixels
	if px <= 0 {
		px = DefaultLimits().MaxPixels
	}
	args := []string{
		"-format_whitelist", FormatWhitelist,
		"-protocol_whitelist", ProtocolWhitelist,
		"-codec_whitelist", DecoderWhitelist,
		"-max_pixels", strconv.FormatInt(min(px, math.MaxInt32), 10),
		"-probesize", fmt.Sprint(ProbeSize),
		"-analyzeduration", fmt.Sprint(AnalyzeDuration.Microseconds()),
		"-rw_timeout", fmt.Sprint(ReadTimeout.Microseconds()),
	}
	if h := PinHeaders(in.ETag); h != "" {
		args = append(args, "-headers", h)
	}
	if in.CopyTS {
		// Timestamps from the source's start, kept through a seek: a chunk
		// picks its frames by their place in the whole video.
		args = append(args, "-copyts", "-start_at_zero")
	}
	if in.Seek > 0 {
		args = append(args, "-noaccurate_seek", "-ss", strconv.FormatFloat(in.Seek, 'f', 3, 64))
	}
	if in.Seconds > 0 {
		args = append(args, "-t", strconv.FormatFloat(in.Seconds, 'f', 3, 64))
	}
	if in.ReadRate > 0 {
		args = append(args, "-readrate", strconv.FormatFloat(in.ReadRate, 'f', -1, 64))
	}
	return append(args, "-i", in.URL)
}

// PinHeaders are the HTTP headers (ffmpeg's -headers) that pin reads of an
// object to etag: "If-Match: \"<etag>\"\r\n"; "" for no etag.
//
// Why If-Match rather than a server-side copy to a key no client can write:
// the copy doubles the storage and the write of every source (up to
// KILN_MAX_SOURCE_BYTES, multipart copies above 5 GiB) before the first
// frame is decoded, while a conditional GET costs nothing: S3 and MinIO
// answer 412 to every request, ranged or not, once the object has another
// ETag, so ffmpeg reads the bytes the probe saw or fails. ffmpeg sends
// -headers with each request it makes for the input, seeks and reconnects
// included. The price is that a replaced source fails its job instead of
// finishing from a copy; its replacement is a job of its own anyway (job
// ids derive from the ETag).
func PinHeaders(etag string) string {
	if etag == "" {
		return ""
	}
	return "If-Match: \"" + etag + "\"\r\n"
}

// ValidETag reports whether etag can be sent in an If-Match header as is:
// printable ASCII without quotes, backslashes or spaces (S3's are hex
// digests, "-<parts>" for multipart uploads), at most 256 bytes. Anything
// else comes from a forged event and would inject headers.
func ValidETag(etag string) bool {
	if len(etag) > 256 {
		return false
	}
	for i := 0; i < len(etag); i++ {
		if c := etag[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
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
	Get(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, error)
	Remove(ctx context.Context, bucket, key string) error
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
			SampleRate: int32(a.SampleRate), BitRate: a.BitRate, Index: proto.Int32(int32(a.Index)),
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
	// An absurd SAR (Limits.Check refuses it) must not overflow: clamped to
	// [1, MaxInt32].
	vs.DisplayWidth, vs.DisplayHeight = displaySize(w), displaySize(h)
	vs.Index = proto.Int32(int32(v.Index))
	return vs
}

// displaySize rounds a displayed side to an int32 in [1, MaxInt32] (0 for a
// side that is not positive).
func displaySize(x float64) int32 {
	if !(x > 0) {
		return 0
	}
	return int32(min(max(math.Round(x), 1), math.MaxInt32))
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
