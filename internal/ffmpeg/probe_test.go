package ffmpeg_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
)

func TestParseRational(t *testing.T) {
	tests := []struct {
		in   string
		want float64
	}{
		{"30000/1001", 29.97002997},
		{"25/1", 25},
		{"24", 24},
		{"0/0", 0},
		{"1/0", 0},
		{"", 0},
		{"N/A", 0},
		{"a/b", 0},
		{"1e308/1e-308", 0},
	}
	for _, tt := range tests {
		if got := ffmpeg.ParseRational(tt.in); math.Abs(got-tt.want) > 1e-6 {
			t.Errorf("ParseRational(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseProbe(t *testing.T) {
	tests := []struct {
		name      string
		json      string
		wantVideo int // index of Video(), -1 for nil
		wantAudio int
		check     func(t *testing.T, p *ffmpeg.ProbeResult)
	}{
		{
			name:      "tolerant numbers",
			json:      `{"format":{"duration":"N/A","size":"123","bit_rate":456,"nb_streams":1},"streams":[{"index":0,"codec_type":"video","width":"640","height":480,"level":-99,"duration":null,"nb_frames":"N/A","bit_rate":"1e3"}]}`,
			wantVideo: 0, wantAudio: -1,
			check: func(t *testing.T, p *ffmpeg.ProbeResult) {
				f, v := p.Format, p.Streams[0]
				if f.Duration != 0 || f.Size != 123 || f.BitRate != 456 || f.NbStreams != 1 {
					t.Errorf("format %+v", f)
				}
				if v.Width != 640 || v.Height != 480 || v.Level != -99 || v.Duration != 0 || v.NbFrames != 0 || v.BitRate != 1000 {
					t.Errorf("stream %+v", v)
				}
			},
		},
		{
			name:      "cover art first, audio-only otherwise",
			json:      `{"streams":[{"index":0,"codec_type":"video","codec_name":"mjpeg","disposition":{"attached_pic":1}},{"index":1,"codec_type":"audio","channels":6,"sample_rate":"48000"}]}`,
			wantVideo: -1, wantAudio: 1,
			check: func(t *testing.T, p *ffmpeg.ProbeResult) {
				if a := p.Audio(); a.Channels != 6 || a.SampleRate != 48000 {
					t.Errorf("audio %+v", a)
				}
			},
		},
		{
			name:      "sample format unknown until decoded",
			json:      `{"streams":[{"index":0,"codec_type":"audio","sample_fmt":"unknown","sample_rate":"44100"},{"index":1,"codec_type":"audio","sample_fmt":"s16p"}]}`,
			wantVideo: -1, wantAudio: 0,
			check: func(t *testing.T, p *ffmpeg.ProbeResult) {
				if p.Streams[0].SampleFmt != "" || p.Streams[1].SampleFmt != "s16p" {
					t.Errorf("sample formats %q, %q; want \"\", s16p", p.Streams[0].SampleFmt, p.Streams[1].SampleFmt)
				}
			},
		},
		{
			name:      "display matrix -90 is 270",
			json:      `{"streams":[{"index":0,"codec_type":"video","side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]}]}`,
			wantVideo: 0, wantAudio: -1,
			check: wantRotation(270),
		},
		{
			name:      "display matrix wins over legacy tag",
			json:      `{"streams":[{"index":0,"codec_type":"video","tags":{"rotate":"90"},"side_data_list":[{"side_data_type":"CPB properties"},{"side_data_type":"Display Matrix","rotation":-90}]}]}`,
			wantVideo: 0, wantAudio: -1,
			check: wantRotation(270),
		},
		{
			name:      "legacy tag is clockwise",
			json:      `{"streams":[{"index":0,"codec_type":"video","tags":{"rotate":"90"}}]}`,
			wantVideo: 0, wantAudio: -1,
			check: wantRotation(270),
		},
		{
			name:      "odd angle snaps",
			json:      `{"streams":[{"index":0,"codec_type":"video","side_data_list":[{"side_data_type":"Display Matrix","rotation":-181}]}]}`,
			wantVideo: 0, wantAudio: -1,
			check: wantRotation(180),
		},
		{name: "empty object", json: `{}`, wantVideo: -1, wantAudio: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ffmpeg.ParseProbe([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if got := streamIndex(p.Video()); got != tt.wantVideo {
				t.Errorf("Video() = stream %d, want %d", got, tt.wantVideo)
			}
			if got := streamIndex(p.Audio()); got != tt.wantAudio {
				t.Errorf("Audio() = stream %d, want %d", got, tt.wantAudio)
			}
			if string(p.Raw) != tt.json {
				t.Errorf("Raw not kept")
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestParseProbeGolden(t *testing.T) {
	// Captured from ffprobe 5.1: see the integration tests for how they are made.
	t.Run("rotated", func(t *testing.T) {
		p := parseFile(t, "probe_rotated.json")
		v := p.Video()
		if v == nil || v.Rotation != 90 || v.Width != 320 || v.Level != 13 || v.NbFrames != 50 || v.BitsPerRawSample != 8 || v.FieldOrder != "progressive" {
			t.Errorf("video %+v", v)
		}
		if p.Format.Duration != 2 || p.Format.NbStreams != 2 || p.Format.Size == 0 {
			t.Errorf("format %+v", p.Format)
		}
	})
	t.Run("cover", func(t *testing.T) {
		p := parseFile(t, "probe_cover.json")
		v := p.Video()
		if v == nil || v.CodecName != "h264" || v.AttachedPic || math.Abs(ffmpeg.ParseRational(v.RFrameRate)-29.97) > 0.01 {
			t.Errorf("video %+v", v)
		}
		if last := p.Streams[len(p.Streams)-1]; !last.AttachedPic || last.CodecName != "mjpeg" {
			t.Errorf("cover %+v", last)
		}
		if a := p.Audio(); a == nil || a.Channels != 2 || a.ChannelLayout != "stereo" || a.SampleRate != 44100 || a.SampleFmt != "fltp" {
			t.Errorf("audio %+v", a)
		}
	})
}

func TestParseProbeInvalid(t *testing.T) {
	for _, in := range []string{"", "{", `{"streams":{}}`, `{"streams":[{"disposition":"x"}]}`} {
		if _, err := ffmpeg.ParseProbe([]byte(in)); err == nil {
			t.Errorf("ParseProbe(%q): want error", in)
		}
	}
}

func FuzzParseProbe(f *testing.F) {
	for _, name := range []string{"probe_rotated.json", "probe_cover.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"streams":[{"side_data_list":[{"side_data_type":"Display Matrix","rotation":1e400}],"tags":{"rotate":"NaN"},"width":9e99}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := ffmpeg.ParseProbe(in)
		if err != nil {
			return
		}
		p.Video()
		p.Audio()
		for _, s := range p.Streams {
			if r := s.Rotation; r != 0 && r != 90 && r != 180 && r != 270 {
				t.Fatalf("rotation %d", r)
			}
			ffmpeg.ParseRational(s.RFrameRate)
		}
	})
}

func wantRotation(want int) func(*testing.T, *ffmpeg.ProbeResult) {
	return func(t *testing.T, p *ffmpeg.ProbeResult) {
		t.Helper()
		if got := p.Video().Rotation; got != want {
			t.Errorf("Rotation = %d, want %d", got, want)
		}
	}
}

func streamIndex(s *ffmpeg.ProbeStream) int {
	if s == nil {
		return -1
	}
	return s.Index
}

func parseFile(t *testing.T, name string) *ffmpeg.ProbeResult {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ffmpeg.ParseProbe(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
