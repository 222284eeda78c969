package workers

import (
	"fmt"
	"time"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Limits bound what a worker accepts from a source. Zero fields take the
// values of DefaultLimits (noted below).
type Limits struct {
	// MaxBytes of the source; default 20 GiB.
	MaxBytes int64
	// MaxWidth and MaxHeight of the coded picture; default 8192 each.
	MaxWidth, MaxHeight int
	// MaxPixels per frame; default 8192×4352 (8K).
	MaxPixels int64
	// MaxDuration of the source; default 6 h.
	MaxDuration time.Duration
	// MaxStreams in the container; default 32.
	MaxStreams int
	// MaxTaskDisk bounds the temp disk one transcode may use; default 50 GiB.
	MaxTaskDisk int64
}

// DefaultLimits returns the limits a zero field of Limits stands for.
func DefaultLimits() Limits {
	return Limits{
		MaxBytes:    20 << 30,
		MaxWidth:    8192,
		MaxHeight:   8192,
		MaxPixels:   8192 * 4352,
		MaxDuration: 6 * time.Hour,
		MaxStreams:  32,
		MaxTaskDisk: 50 << 30,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBytes == 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxWidth == 0 {
		l.MaxWidth = d.MaxWidth
	}
	if l.MaxHeight == 0 {
		l.MaxHeight = d.MaxHeight
	}
	if l.MaxPixels == 0 {
		l.MaxPixels = d.MaxPixels
	}
	if l.MaxDuration == 0 {
		l.MaxDuration = d.MaxDuration
	}
	if l.MaxStreams == 0 {
		l.MaxStreams = d.MaxStreams
	}
	if l.MaxTaskDisk == 0 {
		l.MaxTaskDisk = d.MaxTaskDisk
	}
	return l
}

// MaxSampleAspectRatio bounds how far from square a source's pixels may
// be (SAR between 1:16 and 16:1); real anamorphic video stays within 1:2 to
// 2:1.
const MaxSampleAspectRatio = 16.0

// Decoders kiln agrees to run on untrusted input. Exotic decoders are a
// large attack surface for little benefit.
var (
	videoCodecs = set("h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video", "h263",
		"prores", "dnxhd", "mjpeg", "theora", "vc1", "wmv1", "wmv2", "wmv3", "flv1", "dvvideo", "msmpeg4v3")
	audioCodecs = set("aac", "mp3", "mp2", "ac3", "eac3", "opus", "vorbis", "flac", "alac", "wmav2", "dts",
		"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_f32le", "pcm_u8", "pcm_mulaw", "pcm_alaw", "amr_nb", "amr_wb")
)

// DecoderWhitelist is ffmpeg's -codec_whitelist on every untrusted input:
// the decoders of videoCodecs and audioCodecs, by decoder name (which is not
// always the codec's: mp3float, dca, flv, msmpeg4, amrnb, libdav1d…).
// ffmpeg refuses to open any other decoder, whatever stream a file makes it
// look at: a PNG or TIFF cover, a subtitle, a codec the probe never saw.
const DecoderWhitelist = "h264,hevc,vp8,vp9,libdav1d,libaom-av1,av1,mpeg4,mpeg2video,mpeg1video,h263,prores,dnxhd," +
	"mjpeg,theora,vc1,wmv1,wmv2,wmv3,flv,dvvideo,msmpeg4," +
	"aac,aac_fixed,mp3float,mp3,mp2float,mp2,ac3,ac3_fixed,eac3,opus,libopus,vorbis,libvorbis,flac,alac,wmav2,dca," +
	"pcm_s16le,pcm_s16be,pcm_s24le,pcm_s24be,pcm_s32le,pcm_f32le,pcm_u8,pcm_mulaw,pcm_alaw,amrnb,amrwb"

func set(xs ...string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// Check returns a permanent error with a reason code when media is outside
// the limits or cannot be processed.
func (l Limits) Check(m *kilnv1.MediaInfo) error {
	l = l.withDefaults()
	v, a := m.GetVideo(), m.GetAudio()
	switch {
	case v == nil && a == nil:
		return tasks.Permanent(failure.NoStreams, "the file has no video or audio stream", nil)
	case m.GetSizeBytes() > l.MaxBytes:
		return tasks.Permanent(failure.TooLarge, fmt.Sprintf("the file is %d bytes; the limit is %d", m.GetSizeBytes(), l.MaxBytes), nil)
	case int(m.GetVideoStreams()+m.GetAudioStreams()+m.GetOtherStreams()) > l.MaxStreams:
		return tasks.Permanent(failure.TooManyStreams, fmt.Sprintf("the file has %d streams; the limit is %d",
			m.GetVideoStreams()+m.GetAudioStreams()+m.GetOtherStreams(), l.MaxStreams), nil)
	case time.Duration(m.GetDurationSeconds()*float64(time.Second)) > l.MaxDuration:
		return tasks.Permanent(failure.TooLong, fmt.Sprintf("the file lasts %.0f s; the limit is %.0f s", m.GetDurationSeconds(), l.MaxDuration.Seconds()), nil)
	}
	if v != nil {
		w, h := int64(v.GetWidth()), int64(v.GetHeight())
		switch {
		case !videoCodecs[v.GetCodec()]:
			return tasks.Permanent(failure.UnsupportedCodec, fmt.Sprintf("video codec %q is not supported", v.GetCodec()), nil)
		case w <= 0 || h <= 0:
			return tasks.Permanent(failure.InvalidMedia, "the video stream has no picture size", nil)
		case w > int64(l.MaxWidth) || h > int64(l.MaxHeight) || w*h > l.MaxPixels:
			return tasks.Permanent(failure.TooLarge, fmt.Sprintf("the picture is %dx%d; the limit is %dx%d and %d pixels",
				w, h, l.MaxWidth, l.MaxHeight, l.MaxPixels), nil)
		}
		// Non-square pixels stretch the picture: the displayed size, which
		// the plan scales from, must be within the limits too, and the
		// stretch believable (a 65535:1 SAR, legal in H.264, would plan
		// renditions half a billion pixels wide).
		if sar := sarValue(v.GetSampleAspectRatio()); sar > 0 && (sar > MaxSampleAspectRatio || sar < 1/MaxSampleAspectRatio) {
			return tasks.Permanent(failure.InvalidMedia, fmt.Sprintf("the pixel aspect ratio %s is outside 1:%g to %g:1",
				v.GetSampleAspectRatio(), MaxSampleAspectRatio, MaxSampleAspectRatio), nil)
		}
		dw, dh := int64(v.GetDisplayWidth()), int64(v.GetDisplayHeight())
		if max(dw, dh) > int64(max(l.MaxWidth, l.MaxHeight)) || dw*dh > l.MaxPixels {
			return tasks.Permanent(failure.TooLarge, fmt.Sprintf("the picture displays as %dx%d (pixel aspect ratio %s); the limit is %dx%d and %d pixels",
				dw, dh, v.GetSampleAspectRatio(), l.MaxWidth, l.MaxHeight, l.MaxPixels), nil)
		}
	}
	if a != nil && !audioCodecs[a.GetCodec()] {
		return tasks.Permanent(failure.UnsupportedCodec, fmt.Sprintf("audio codec %q is not supported", a.GetCodec()), nil)
	}
	return nil
}
