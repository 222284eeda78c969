package workers

import (
	"errors"
	"fmt"
	"testing"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func TestPlan(t *testing.T) {
	video := func(w, h int32, fps float64, rot int32) *kilnv1.MediaInfo {
		return &kilnv1.MediaInfo{
			Video: &kilnv1.VideoStream{Codec: "h264", Width: w, Height: h, FrameRate: fps, Rotation: rot},
			Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 2, SampleRate: 48000},
		}
	}
	tests := []struct {
		name  string
		media *kilnv1.MediaInfo
		want  []string // "name WxH"
		fps   float64
		gop   int32
	}{
		{"360p landscape", video(640, 360, 30, 0), []string{"360p 640x360", "240p 426x240", "144p 256x144"}, 30, 60},
		{"1080p", video(1920, 1080, 25, 0), []string{"1080p 1920x1080", "720p 1280x720", "480p 854x480", "360p 640x360", "240p 426x240", "144p 256x144"}, 25, 50},
		{"portrait by rotation", video(640, 360, 30, 90), []string{"360p 360x640", "240p 240x426", "144p 144x256"}, 30, 60},
		{"portrait coded", video(360, 640, 30, 0), []string{"360p 360x640", "240p 240x426", "144p 144x256"}, 30, 60},
		{"no upscaling of 400p", video(712, 400, 30, 0), []string{"360p 640x360", "240p 428x240", "144p 256x144"}, 30, 60},
		{"tiny source keeps its size", video(100, 75, 30, 0), []string{"76p 100x76"}, 30, 60},
		{"ntsc rate", video(640, 360, 30000.0/1001, 0), []string{"360p 640x360", "240p 426x240", "144p 256x144"}, 30000.0 / 1001, 60},
		{"120 fps capped", video(640, 360, 120, 0), []string{"360p 640x360", "240p 426x240", "144p 256x144"}, 60, 120},
		{"unknown rate", video(640, 360, 0, 0), []string{"360p 640x360", "240p 426x240", "144p 256x144"}, 30, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Plan(tt.media, DefaultPreset())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range p.Rungs {
				got = append(got, fmt.Sprintf("%s %dx%d", r.Name, r.Width, r.Height))
				if r.Width%2 != 0 || r.Height%2 != 0 {
					t.Errorf("odd dimensions %dx%d", r.Width, r.Height)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("rungs = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("rungs = %v, want %v", got, tt.want)
				}
			}
			if p.FrameRate != tt.fps || p.GopFrames != tt.gop {
				t.Errorf("fps/gop = %v/%d, want %v/%d", p.FrameRate, p.GopFrames, tt.fps, tt.gop)
			}
			if !p.HasAudio || p.AudioBitRate != 128_000 || p.SegmentSeconds != 6 {
				t.Errorf("audio/segments = %v %d %d", p.HasAudio, p.AudioBitRate, p.SegmentSeconds)
			}
		})
	}
}

func TestPlanNoStreams(t *testing.T) {
	if _, err := Plan(&kilnv1.MediaInfo{}, DefaultPreset()); !errors.Is(err, ErrNoStreams) {
		t.Fatalf("err = %v, want ErrNoStreams", err)
	}
}
