// Package workers runs the media stages of a job as asynq handlers: probe
// (ffprobe + plan), transcode (one decode, every rung) and thumbnails. The
// packager takes over after them.
package workers

import (
	"errors"
	"fmt"
	"math"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// RungSpec is one target of a preset ladder. Height is the target size of
// the picture's short side, so portrait sources get the same ladder.
type RungSpec struct {
	Height       int
	VideoBitRate int64
}

// Preset is a named encoding ladder.
type Preset struct {
	Name           string
	Rungs          []RungSpec // highest first
	AudioBitRate   int64
	SegmentSeconds int
	GOPSeconds     int
	MaxFrameRate   float64
}

// DefaultPreset is the ladder of DESIGN.md plus a 144p rung for very poor
// connections: 1080p 5 Mb/s … 144p 0.2 Mb/s, AAC 128 kb/s, 6 s segments,
// a 2 s GOP.
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

// Plan decides what to encode from a probed source: no upscaling, aspect
// ratio kept, even dimensions, rotation applied, a fixed GOP shared by every
// rung. It is a pure function.
func Plan(media *kilnv1.MediaInfo, preset Preset) (*kilnv1.Plan, error) {
	v, a := media.GetVideo(), media.GetAudio()
	if v == nil && a == nil {
		return nil, ErrNoStreams
	}
	p := &kilnv1.Plan{
		SegmentSeconds: int32(preset.SegmentSeconds),
		HasAudio:       a != nil,
	}
	if a != nil {
		p.AudioBitRate = preset.AudioBitRate
	}
	if v == nil {
		return p, nil
	}
	w, h := int(v.GetWidth()), int(v.GetHeight())
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("video stream has no dimensions (%dx%d)", w, h)
	}
	if r := v.GetRotation(); r == 90 || r == 270 {
		w, h = h, w
	}
	short, long := min(w, h), max(w, h)
	for _, r := range preset.Rungs {
		if r.Height > short {
			continue
		}
		s, l := even(float64(r.Height)), even(float64(long)*float64(r.Height)/float64(short))
		p.Rungs = append(p.Rungs, rung(fmt.Sprintf("%dp", r.Height), w >= h, s, l, r.VideoBitRate))
	}
	if len(p.Rungs) == 0 { // smaller than the lowest rung: keep the source size
		low := preset.Rungs[len(preset.Rungs)-1]
		p.Rungs = append(p.Rungs, rung(fmt.Sprintf("%dp", even(float64(short))), w >= h, even(float64(short)), even(float64(long)), low.VideoBitRate))
	}
	fps := v.GetFrameRate()
	if fps <= 0 || math.IsNaN(fps) {
		fps = 30
	}
	p.FrameRate = min(fps, preset.MaxFrameRate)
	p.GopFrames = int32(math.Round(p.FrameRate * float64(preset.GOPSeconds)))
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
