package workers

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// urlSafeName is the catalog's rendition-name syntax (catalog/event.go): a
// plan's rung names become rendition names and URI path segments, and a
// READY naming anything else is refused.
var urlSafeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// FuzzProbeToPlan feeds arbitrary bytes through what the probe stage does
// with ffprobe's output: ffmpeg.ParseProbe, MediaFromProbe, Limits.Check,
// Plan with the default preset, then the transcode argv and the disk
// estimate. Seeds: the real ffprobe outputs in internal/ffmpeg/testdata and
// testdata/fuzz/FuzzProbeToPlan, plus hand-made edge cases.
//
// Properties: nothing panics, whatever the media (Plan and TranscodeArgs
// run even on media the limits refuse); the media info has no NaN or
// infinite number, no negative duration, size or bit rate, a quarter-turn
// rotation, frame rates in [0, 1000], stream counts that add up, and a
// positive display size for a positive coded size; media and plan marshal as
// protobuf (they are published in events); for media the limits accept,
// Plan fails only without streams or dimensions, and a plan has a frame
// rate in (0, 60], a GOP of at least one frame, even rung sizes from 2 to
// the largest picture the limits accept (8192 a side) and unique URL-safe
// rung names.
func FuzzProbeToPlan(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("..", "internal", "ffmpeg", "testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		`{}`,
		`{"format":{"duration":"N/A","size":"N/A"},"streams":[{"codec_type":"audio","codec_name":"aac","channels":2,"sample_rate":"48000","duration":"3.5"}]}`,
		`{"format":{"duration":"-5","size":"-1","bit_rate":"-1"},"streams":[{"codec_type":"video","codec_name":"h264","width":1920,"height":1080,"duration":"-3","bit_rate":"-8"}]}`,
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":1,"height":1,"r_frame_rate":"1000000/1","avg_frame_rate":"1/1000000"}]}`,
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":4096,"height":2,"sample_aspect_ratio":"2:1"}]}`,
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":713,"height":401,"sample_aspect_ratio":"1:3","tags":{"rotate":"90"}}]}`,
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":1080,"height":1920,"field_order":"tt","color_transfer":"arib-std-b67","pix_fmt":"yuv420p10le","r_frame_rate":"30000/1001","avg_frame_rate":"24000/1001"}]}`,
		`{"streams":[{"codec_type":"video","codec_name":"mjpeg","disposition":{"attached_pic":1},"width":600,"height":600},{"codec_type":"audio","codec_name":"mp3","channels":8,"sample_rate":"22050"}]}`,
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":-1920,"height":-1080}]}`,
		// A SAR far from 1 (Limits.Check refuses one outside 1:16..16:1 and
		// a displayed size over the limits; videoFromProbe clamps the
		// displayed size to int32):
		// - the display width would overflow int32 and turn negative:
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":8192,"height":1080,"sample_aspect_ratio":"1000000:1"}]}`,
		// - a rung of width -2147483648 (even() rounded 2147483647 up past int32):
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":1,"height":1080,"sample_aspect_ratio":"2147483647:1"}]}`,
		// - a legal H.264 SAR (16-bit 65535:1) planned a 536862720x1080 rung:
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":8192,"height":1080,"sample_aspect_ratio":"65535:1"}]}`,
		// - the other way: 1:65535 displays less than a pixel wide:
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":8192,"height":1080,"sample_aspect_ratio":"1:65535"}]}`,
		// - within 16:1 but displayed wider than the limits (8192 a side):
		`{"streams":[{"codec_type":"video","codec_name":"h264","width":4096,"height":1080,"sample_aspect_ratio":"15:1"}]}`,
	} {
		f.Add([]byte(s))
	}
	preset := DefaultPreset()
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := ffmpeg.ParseProbe(data)
		if err != nil {
			return
		}
		var generic struct {
			Streams []json.RawMessage `json:"streams"`
		}
		if err := json.Unmarshal(data, &generic); err != nil || len(generic.Streams) != len(res.Streams) {
			t.Fatalf("ParseProbe found %d streams, the JSON has %d (%v)", len(res.Streams), len(generic.Streams), err)
		}

		m := MediaFromProbe(res)
		checkMedia(t, res, m)
		if _, err := proto.Marshal(m); err != nil {
			t.Fatalf("media info does not marshal: %v", err)
		}

		accepted := Limits{}.Check(m) == nil
		plan, err := Plan(m, preset)
		if err != nil {
			if !accepted {
				return
			}
			if m.GetVideo() == nil && m.GetAudio() == nil {
				if !errors.Is(err, ErrNoStreams) {
					t.Fatalf("Plan without streams: %v, want ErrNoStreams", err)
				}
				return
			}
			t.Fatalf("Plan refused media the limits accept: %v\nmedia: %v", err, m)
		}
		args := TranscodeArgs(Input{URL: "https://s3.example/src"}, plan, Outputs{Root: "/work/job"}, EncodeOptions{X264Preset: DefaultX264Preset})
		if len(args) == 0 {
			t.Fatal("no transcode argv")
		}
		if !accepted {
			return
		}
		if _, err := proto.Marshal(plan); err != nil {
			t.Fatalf("plan does not marshal: %v", err)
		}
		if EncodedBytes(plan, m.GetDurationSeconds()) < 0 {
			t.Fatalf("negative disk estimate for plan %v", plan)
		}
		checkPlan(t, m, plan, preset)
	})
}

func checkMedia(t *testing.T, res *ffmpeg.ProbeResult, m *kilnv1.MediaInfo) {
	t.Helper()
	bad := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("media info: "+format+"\nmedia: %v", append(args, m)...)
	}
	number := func(what string, x float64) {
		t.Helper()
		if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
			bad("%s = %v, want a finite number ≥ 0", what, x)
		}
	}
	count := func(what string, x int64) {
		t.Helper()
		if x < 0 {
			bad("%s = %d < 0", what, x)
		}
	}
	number("duration", m.GetDurationSeconds())
	count("size", m.GetSizeBytes())
	count("bit rate", m.GetBitRate())
	if n := int(m.GetVideoStreams() + m.GetAudioStreams() + m.GetOtherStreams()); n != len(res.Streams) {
		bad("%d streams counted, ffprobe listed %d", n, len(res.Streams))
	}
	if (m.GetVideo() != nil) != (res.Video() != nil) || (m.GetAudio() != nil) != (res.Audio() != nil) {
		bad("video/audio presence differs from the probe's")
	}
	if v := m.GetVideo(); v != nil {
		number("frame rate", v.GetFrameRate())
		number("nominal frame rate", v.GetNominalFrameRate())
		if v.GetFrameRate() > 1000 || v.GetNominalFrameRate() > 1000 {
			bad("frame rates %v/%v above 1000", v.GetFrameRate(), v.GetNominalFrameRate())
		}
		switch v.GetRotation() {
		case 0, 90, 180, 270:
		default:
			bad("rotation %d", v.GetRotation())
		}
		// A positive coded size (what the limits accept) displays as a
		// positive size: SAR and rotation must not overflow it.
		if v.GetWidth() > 0 && v.GetHeight() > 0 && (v.GetDisplayWidth() <= 0 || v.GetDisplayHeight() <= 0) {
			bad("%dx%d coded displays as %dx%d", v.GetWidth(), v.GetHeight(), v.GetDisplayWidth(), v.GetDisplayHeight())
		}
	}
}

func checkPlan(t *testing.T, m *kilnv1.MediaInfo, plan *kilnv1.Plan, preset Preset) {
	t.Helper()
	bad := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("plan: "+format+"\nmedia: %v\nplan: %v", append(args, m, plan)...)
	}
	if plan.GetHasAudio() != (m.GetAudio() != nil) {
		bad("has_audio %v, the media has audio: %v", plan.GetHasAudio(), m.GetAudio() != nil)
	}
	if plan.GetAudioOnly() != (m.GetVideo() == nil) {
		bad("audio_only %v, the media has video: %v", plan.GetAudioOnly(), m.GetVideo() != nil)
	}
	if plan.GetAudioOnly() {
		if len(plan.GetRungs()) != 0 {
			bad("audio-only plan with rungs")
		}
		return
	}
	if fps := plan.GetFrameRate(); !(fps > 0 && fps <= preset.MaxFrameRate) {
		bad("frame rate %v outside (0, %v]", fps, preset.MaxFrameRate)
	}
	if plan.GetGopFrames() < 1 {
		bad("GOP of %d frames", plan.GetGopFrames())
	}
	if len(plan.GetRungs()) == 0 {
		bad("video plan without rungs")
	}
	seen := map[string]bool{}
	for _, r := range plan.GetRungs() {
		if !urlSafeName.MatchString(r.GetName()) || seen[r.GetName()] {
			bad("rung name %q is not URL-safe or not unique", r.GetName())
		}
		seen[r.GetName()] = true
		if w, h := r.GetWidth(), r.GetHeight(); w < 2 || h < 2 || w%2 != 0 || h%2 != 0 {
			bad("rung %s is %dx%d, want even sizes ≥ 2", r.GetName(), w, h)
		}
		if l := DefaultLimits(); int(r.GetWidth()) > l.MaxWidth || int(r.GetHeight()) > l.MaxHeight {
			bad("rung %s is %dx%d, larger than any source the limits accept (%dx%d)", r.GetName(), r.GetWidth(), r.GetHeight(), l.MaxWidth, l.MaxHeight)
		}
		if r.GetVideoBitRate() <= 0 {
			bad("rung %s at %d b/s", r.GetName(), r.GetVideoBitRate())
		}
	}
}
