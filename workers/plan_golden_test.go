package workers

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// TestPlanGolden pins the plan (rungs, normalisation, decisions) and the
// transcode argv for a table of sources, as ffprobe would describe them.
// Regenerate with KILN_UPDATE_GOLDEN=1 go test ./workers/.
func TestPlanGolden(t *testing.T) {
	stereo := &kilnv1.AudioStream{Codec: "aac", Channels: 2, SampleRate: 48000}
	video := func(mod func(v *kilnv1.VideoStream)) *kilnv1.VideoStream {
		v := &kilnv1.VideoStream{Codec: "h264", Width: 1920, Height: 1080, DisplayWidth: 1920, DisplayHeight: 1080,
			FrameRate: 30, NominalFrameRate: 30, PixFmt: "yuv420p", BitDepth: 8, SampleAspectRatio: "1:1", FieldOrder: "progressive"}
		if mod != nil {
			mod(v)
		}
		return v
	}
	sources := []struct {
		name  string
		media *kilnv1.MediaInfo
	}{
		{"plan_1080p_stereo", &kilnv1.MediaInfo{DurationSeconds: 60, Video: video(nil), Audio: stereo}},
		{"plan_phone_portrait_rotated", &kilnv1.MediaInfo{DurationSeconds: 12, Video: video(func(v *kilnv1.VideoStream) {
			v.Rotation, v.DisplayWidth, v.DisplayHeight = 90, 1080, 1920
		}), Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 1, SampleRate: 44100}}},
		{"plan_vfr_phone", &kilnv1.MediaInfo{DurationSeconds: 8, Video: video(func(v *kilnv1.VideoStream) {
			v.Width, v.Height, v.DisplayWidth, v.DisplayHeight = 1280, 720, 1280, 720
			v.FrameRate, v.NominalFrameRate, v.VariableFrameRate = 27.4, 30, true
		}), Audio: stereo}},
		{"plan_interlaced_anamorphic_dv", &kilnv1.MediaInfo{DurationSeconds: 30, Video: video(func(v *kilnv1.VideoStream) {
			v.Codec, v.Width, v.Height, v.DisplayWidth, v.DisplayHeight = "mpeg2video", 720, 576, 1024, 576
			v.SampleAspectRatio, v.FieldOrder, v.Interlaced, v.FrameRate, v.NominalFrameRate = "64:45", "tt", true, 25, 25
		}), Audio: &kilnv1.AudioStream{Codec: "mp2", Channels: 2, SampleRate: 48000}}},
		{"plan_hdr10_4k_surround", &kilnv1.MediaInfo{DurationSeconds: 120, Video: video(func(v *kilnv1.VideoStream) {
			v.Codec, v.Width, v.Height, v.DisplayWidth, v.DisplayHeight = "hevc", 3840, 2160, 3840, 2160
			v.PixFmt, v.BitDepth, v.ColorTransfer, v.Hdr, v.FrameRate, v.NominalFrameRate = "yuv420p10le", 10, "smpte2084", true, 59.94, 59.94
		}), Audio: &kilnv1.AudioStream{Codec: "eac3", Channels: 6, SampleRate: 48000}}},
		{"plan_high_frame_rate", &kilnv1.MediaInfo{DurationSeconds: 5, Video: video(func(v *kilnv1.VideoStream) {
			v.Width, v.Height, v.DisplayWidth, v.DisplayHeight, v.FrameRate, v.NominalFrameRate = 1280, 720, 1280, 720, 120, 120
		})}},
		{"plan_audio_only", &kilnv1.MediaInfo{DurationSeconds: 200, Audio: &kilnv1.AudioStream{Codec: "mp3", Channels: 2, SampleRate: 44100}}},
		// A cover-art PNG (stream 0) before the real video: the plan maps
		// stream 1 and the audio at 2, never the first video stream.
		{"plan_cover_art_first", &kilnv1.MediaInfo{DurationSeconds: 10, VideoStreams: 1, AudioStreams: 1, OtherStreams: 1,
			Video: video(func(v *kilnv1.VideoStream) {
				v.Width, v.Height, v.DisplayWidth, v.DisplayHeight, v.Index = 640, 360, 640, 360, proto.Int32(1)
			}), Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 2, SampleRate: 48000, Index: proto.Int32(2)}}},
		{"plan_between_rungs_400p", &kilnv1.MediaInfo{DurationSeconds: 3, Video: video(func(v *kilnv1.VideoStream) {
			v.Width, v.Height, v.DisplayWidth, v.DisplayHeight = 712, 400, 712, 400
		}), Audio: stereo}},
	}
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			plan, err := Plan(src.media, DefaultPreset())
			if err != nil {
				t.Fatal(err)
			}
			js, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(plan)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.ReplaceAll(string(js), "  ", " "), "\n")
			lines = append(lines, "--- argv ---")
			lines = append(lines, TranscodeArgs(Input{URL: "https://s3.example/src?X-Amz-Signature=x"}, plan, Outputs{Root: filepath.FromSlash("/work/job")}, EncodeOptions{X264Preset: "veryfast"})...)
			checkGolden(t, src.name, lines)
		})
	}
}
