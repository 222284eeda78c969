// Package workers runs the media stages of a job as asynq handlers: probe
// (ffprobe, limits, plan), transcode (one decode, every rung) and
// thumbnails. The packager takes over after them.
package workers

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// RungSpec is one target of a preset ladder. Height is the target size of
// the picture's short side, so portrait sources get the same ladder.
type RungSpec struct {
	Height       int   `json:"height"`
	VideoBitRate int64 `json:"video_bit_rate"`
}

// Preset is a named encoding ladder.
type Preset struct {
	Name           string     `json:"name"`
	Rungs          []RungSpec `json:"rungs"` // highest first
	AudioBitRate   int64      `json:"audio_bit_rate"`
	SegmentSeconds int        `json:"segment_seconds"`
	GOPSeconds     int        `json:"gop_seconds"`
	MaxFrameRate   float64    `json:"max_frame_rate"`
}

// DefaultPreset is kiln's default ladder (docs/architecture.md, "Media"),
// with a 144p rung for very poor connections: 1080p 5 Mb/s … 144p 0.2 Mb/s, AAC 128 kb/s, 6 s segments,
// a 2 s GOP, at most 60 fps.
func DefaultPreset() Preset {
	return Preset{
		Name: "default",
		Rungs: []RungSpec{
			{1080, 5_000_000}, {720, 3_000_000}, {480, 1_400_000},
			{360, 800_000}, {240, 400_000}, {144, 200_000},
		},
		AudioBitRate:   128_000,
		SegmentSeconds: 6,
		GOPSeconds:     2,
		MaxFrameRate:   60,
	}
}

// ErrNoStreams means the source has neither video nor audio.
var ErrNoStreams = errors.New("no video or audio stream")

// Plan decides what to encode from a probed source and why. It is a pure
// function: no upscaling, aspect ratio kept (non-square pixels squared),
// even dimensions, rotation applied so the output displays upright,
// constant frame rate (nominal rate, capped), deinterlaced, HDR and
// high-bit-depth sources mapped to SDR 8-bit, audio to AAC 48 kHz stereo,
// and a fixed GOP shared by every rung.
func Plan(media *kilnv1.MediaInfo, preset Preset) (*kilnv1.Plan, error) {
	v, a := media.GetVideo(), media.GetAudio()
	if v == nil && a == nil {
		return nil, ErrNoStreams
	}
	p := &kilnv1.Plan{
		Preset:         preset.Name,
		SegmentSeconds: int32(preset.SegmentSeconds),
		HasAudio:       a != nil,
		Normalisation:  &kilnv1.Normalisation{},
	}
	n := p.Normalisation
	say := func(format string, args ...any) { p.Decisions = append(p.Decisions, fmt.Sprintf(format, args...)) }
	if a != nil {
		if a.Index != nil {
			p.AudioStream = proto.Int32(a.GetIndex())
		}
		p.AudioBitRate = preset.AudioBitRate
		say("audio: %s %d ch %d Hz → AAC-LC stereo 48 kHz %d kb/s", a.Codec, a.Channels, a.SampleRate, preset.AudioBitRate/1000)
		if a.Channels > 2 {
			n.Downmix = true
			say("audio: %d channels downmixed to stereo", a.Channels)
		}
		if a.SampleRate != 48000 {
			n.Resample = true
			say("audio: resampled from %d Hz to 48 kHz", a.SampleRate)
		}
	} else {
		say("no audio stream: renditions have no audio track")
	}
	if v == nil {
		p.AudioOnly = true
		say("no video stream: audio-only HLS and an M4A download")
		return p, nil
	}

	if v.Index != nil {
		p.VideoStream = proto.Int32(v.GetIndex())
		if media.GetVideoStreams() > 1 || v.GetIndex() != 0 {
			say("video: stream #%d encoded (the one probed; cover art and other video streams are not)", v.GetIndex())
		}
	}
	w, h := int(v.GetDisplayWidth()), int(v.GetDisplayHeight())
	if w <= 0 || h <= 0 { // media info from an older probe: derive here
		w, h = int(v.GetWidth()), int(v.GetHeight())
		if r := v.GetRotation(); r == 90 || r == 270 {
			w, h = h, w
		}
	}
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("video stream has no dimensions (%dx%d)", w, h)
	}
	if r := v.GetRotation(); r != 0 {
		n.Rotate = r
		say("video: rotated %d° as the display matrix asks; output is %dx%d as displayed", r, w, h)
	}
	if sar := sarValue(v.GetSampleAspectRatio()); sar > 0 {
		n.SquarePixels = true
		say("video: non-square pixels (SAR %s) squared: %dx%d coded → %dx%d displayed", v.GetSampleAspectRatio(), v.GetWidth(), v.GetHeight(), w, h)
	}
	if v.GetInterlaced() {
		n.Deinterlace = true
		say("video: interlaced (%s field order) → deinterlaced (bwdif, one frame per frame)", v.GetFieldOrder())
	}
	if v.GetHdr() {
		n.ToneMap = true
		say("video: HDR (%s) tone-mapped to SDR BT.709", v.GetColorTransfer())
	}
	if v.GetBitDepth() > 8 || n.ToneMap {
		n.EightBit = true
		say("video: %d-bit %s → 8-bit yuv420p", v.GetBitDepth(), v.GetPixFmt())
	}

	fps := v.GetFrameRate()
	if v.GetVariableFrameRate() {
		n.ConstantFrameRate = true
		if nom := v.GetNominalFrameRate(); nom > 0 {
			fps = nom
		}
		say("video: variable frame rate (average %.3f, nominal %.3f) → constant %.3f fps", v.GetFrameRate(), v.GetNominalFrameRate(), min(fps, preset.MaxFrameRate))
	}
	if fps <= 0 || math.IsNaN(fps) || math.IsInf(fps, 0) {
		fps = 30
		say("video: frame rate unknown → 30 fps")
	}
	if fps > preset.MaxFrameRate {
		say("video: %.3f fps capped to %.0f fps", fps, preset.MaxFrameRate)
		fps = preset.MaxFrameRate
	}
	p.FrameRate = fps
	p.GopFrames = int32(max(1, math.Round(p.FrameRate*float64(preset.GOPSeconds))))
	say("video: IDR every %d frames (%d s), no scene-cut keyframes, %d s segments: boundaries align across rungs", p.GopFrames, preset.GOPSeconds, preset.SegmentSeconds)

	short, long := min(w, h), max(w, h)
	skipped := 0
	for _, r := range preset.Rungs {
		if r.Height > short {
			skipped++
			continue
		}
		s, l := even(float64(r.Height)), even(float64(long)*float64(r.Height)/float64(short))
		p.Rungs = append(p.Rungs, rung(fmt.Sprintf("%dp", r.Height), w >= h, s, l, r.VideoBitRate))
	}
	if skipped > 0 {
		say("video: %d rung(s) above the source's %dp skipped (no upscaling)", skipped, short)
	}
	// A source between two rungs keeps its own size as the top rung, so a
	// 180p or 400p source does not lose detail to the rung below it.
	if len(p.Rungs) > 0 && skipped > 0 { // above the ladder's top: the top rung is enough
		top := p.Rungs[0]
		topShort := min(top.Width, top.Height)
		if float64(short) >= float64(topShort)*1.15 {
			br := int64(float64(top.VideoBitRate) * math.Pow(float64(short)/float64(topShort), 2))
			br = min(br, preset.Rungs[skipped-1].VideoBitRate) // never above the next rung up
			s, l := even(float64(short)), even(float64(long))
			p.Rungs = append([]*kilnv1.Rung{rung(fmt.Sprintf("%dp", s), w >= h, s, l, br)}, p.Rungs...)
			say("video: %dp source between ladder rungs: kept at its own size (%dx%d) as the top rung", short, l, s)
		}
	}
	if len(p.Rungs) == 0 { // smaller than the lowest rung: keep the source size
		low := preset.Rungs[len(preset.Rungs)-1]
		p.Rungs = append(p.Rungs, rung(fmt.Sprintf("%dp", even(float64(short))), w >= h, even(float64(short)), even(float64(long)), low.VideoBitRate))
		say("video: smaller than the lowest rung: one rendition at the source size")
	}
	return p, nil
}

func rung(name string, landscape bool, short, long int, bitRate int64) *kilnv1.Rung {
	r := &kilnv1.Rung{Name: name, VideoBitRate: bitRate, Width: int32(long), Height: int32(short)}
	if !landscape {
		r.Width, r.Height = int32(short), int32(long)
	}
	return r
}

// even rounds to the nearest even integer ≥ 2 (H.264 4:2:0 needs even sizes).
func even(x float64) int {
	return max(2, int(math.Round(x/2))*2)
}
