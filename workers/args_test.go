package workers

import (
	"bytes"
	"fmt"
	"image/jpeg"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// updateGolden regenerates testdata/*.golden: KILN_UPDATE_GOLDEN=1 go test ./workers/
var updateGolden = os.Getenv("KILN_UPDATE_GOLDEN") == "1"

// checkGolden compares argv (one argument per line; one with a line break,
// such as -headers, Go-quoted) with testdata/<name>.golden.
func checkGolden(t *testing.T, name string, argv []string) {
	t.Helper()
	lines := make([]string, len(argv))
	for i, a := range argv {
		lines[i] = a
		if strings.ContainsAny(a, "\r\n") {
			lines[i] = strconv.Quote(a)
		}
	}
	got := strings.Join(lines, "\n") + "\n"
	path := filepath.Join("testdata", name+".golden")
	if updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	wantB, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run KILN_UPDATE_GOLDEN=1 go test ./workers/ to create it)", err)
	}
	want := string(wantB)
	if got == want {
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w || i >= len(gl) || i >= len(wl) {
			t.Fatalf("%s differs at line %d:\n  got:  %q\n  want: %q\n(if the change is intended, regenerate with KILN_UPDATE_GOLDEN=1 go test ./workers/ -run %s)",
				path, i+1, g, w, t.Name())
		}
	}
}

const goldenInput = "https://minio.example.com:9000/kiln-sources/uploads/0123456789abcdef01234567/clip.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc"

func TestTranscodeArgsGolden(t *testing.T) {
	tests := []struct {
		name string
		plan *kilnv1.Plan
		opt  EncodeOptions
		in   Input // zero: goldenInput, nothing else
	}{
		{
			// A source read pinned to its probed ETag, bounded to its
			// probed 10 s (and the tolerance), its streams mapped by index.
			name: "transcode_pinned_bounded_indexed",
			plan: &kilnv1.Plan{
				Rungs:     []*kilnv1.Rung{{Name: "360p", Width: 640, Height: 360, VideoBitRate: 800_000}},
				FrameRate: 30, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000,
				VideoStream: proto.Int32(1), AudioStream: proto.Int32(2),
			},
			opt: EncodeOptions{X264Preset: "veryfast"},
			in:  Input{URL: goldenInput, ETag: "9b2cf535f27731c974343645a3985328", Seconds: 11.1, MaxPixels: 1920 * 1080},
		},
		{
			name: "transcode_3rungs_30fps_audio",
			plan: &kilnv1.Plan{
				Rungs: []*kilnv1.Rung{
					{Name: "360p", Width: 640, Height: 360, VideoBitRate: 800_000},
					{Name: "240p", Width: 426, Height: 240, VideoBitRate: 400_000},
					{Name: "144p", Width: 256, Height: 144, VideoBitRate: 200_000},
				},
				FrameRate: 30, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000,
			},
			opt: EncodeOptions{X264Preset: "veryfast"},
		},
		{
			name: "transcode_2rungs_2997fps_video_only",
			plan: &kilnv1.Plan{
				Rungs: []*kilnv1.Rung{
					{Name: "720p", Width: 1280, Height: 720, VideoBitRate: 3_000_000},
					{Name: "480p", Width: 854, Height: 480, VideoBitRate: 1_400_000},
				},
				FrameRate: 30000.0 / 1001, GopFrames: 60, SegmentSeconds: 6,
			},
			opt: EncodeOptions{X264Preset: "veryfast"},
		},
		{
			name: "transcode_1rung_25fps_threads2",
			plan: &kilnv1.Plan{
				Rungs:     []*kilnv1.Rung{{Name: "1080p", Width: 1920, Height: 1080, VideoBitRate: 5_000_000}},
				FrameRate: 25, GopFrames: 50, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 96_000,
			},
			opt: EncodeOptions{X264Preset: "medium", Threads: 2},
		},
		{
			name: "transcode_portrait_23976fps",
			plan: &kilnv1.Plan{
				Rungs: []*kilnv1.Rung{
					{Name: "720p", Width: 720, Height: 1280, VideoBitRate: 3_000_000},
					{Name: "360p", Width: 360, Height: 640, VideoBitRate: 800_000},
				},
				FrameRate: 24000.0 / 1001, GopFrames: 48, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000,
			},
			opt: EncodeOptions{X264Preset: "faster"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if in.URL == "" {
				in.URL = goldenInput
			}
			out := Outputs{Root: "/tmp/kiln/transcode-job_x", Stills: NewStills("/tmp/kiln/transcode-job_x/stills", tt.plan, 10)}
			args := TranscodeArgs(in, tt.plan, out, tt.opt)
			checkGolden(t, tt.name, args)

			// Invariants the golden files must keep.
			joined := strings.Join(args, " ")
			if n := strings.Count(joined, "-c:v libx264"); n != len(tt.plan.Rungs) {
				t.Errorf("%d video encoders for %d rungs", n, len(tt.plan.Rungs))
			}
			audioMap, videoIn := "-map 0:a:0", "[0:v:0]"
			if tt.plan.AudioStream != nil {
				audioMap = fmt.Sprintf("-map 0:%d", tt.plan.GetAudioStream())
			}
			if tt.plan.VideoStream != nil {
				videoIn = fmt.Sprintf("[0:%d]", tt.plan.GetVideoStream())
			}
			if !strings.Contains(joined, "-filter_complex "+videoIn) {
				t.Errorf("the filter graph does not read %s", videoIn)
			}
			for _, opt := range []string{"-codec_whitelist", "-max_pixels"} {
				if i := indexOf(args, opt); i < 0 || i > indexOf(args, "-i") {
					t.Errorf("%s must precede -i: %q", opt, args)
				}
			}
			if in.ETag != "" && !strings.Contains(joined, "-headers If-Match: \""+in.ETag+"\"\r\n -") {
				t.Errorf("reads not pinned to ETag %s: %q", in.ETag, args)
			}
			if in.Seconds > 0 && !strings.Contains(joined, "-t "+strconv.FormatFloat(in.Seconds, 'f', 3, 64)+" -i") {
				t.Errorf("read not bounded to %v s: %q", in.Seconds, args)
			}
			// The audio is encoded once, into its own rendition.
			if n := strings.Count(joined, audioMap); tt.plan.HasAudio != (n == 1) || !tt.plan.HasAudio && n != 0 {
				t.Errorf("%d audio maps, has audio %v", n, tt.plan.HasAudio)
			}
			if n, want := strings.Count(joined, "-f hls"), len(tt.plan.Rungs)+btoi(tt.plan.HasAudio); n != want {
				t.Errorf("%d HLS outputs, want %d (the rungs and the audio)", n, want)
			}
			if n := strings.Count(joined, "-an -map_metadata -1 -f hls"); n != len(tt.plan.Rungs) {
				t.Errorf("%d video outputs without audio, want %d", n, len(tt.plan.Rungs))
			}
			if n := strings.Count(joined, "-g "+strconv.Itoa(int(tt.plan.GopFrames))+" -keyint_min "+strconv.Itoa(int(tt.plan.GopFrames))+" -sc_threshold 0"); n != len(tt.plan.Rungs) {
				t.Errorf("fixed GOP on %d of %d rungs", n, len(tt.plan.Rungs))
			}
			if i := indexOf(args, "-i"); i < 0 || indexOf(args, "-format_whitelist") > i || indexOf(args, "-protocol_whitelist") > i {
				t.Errorf("whitelists must precede -i: %q", args)
			}
			if i, j := indexOf(args, "-i"), indexOf(args, "-rw_timeout"); j < 0 || j > i || args[j+1] != strconv.FormatInt(ReadTimeout.Microseconds(), 10) {
				t.Errorf("the read timeout must precede -i: %q", args)
			}
		})
	}
}

func indexOf(args []string, s string) int {
	for i, a := range args {
		if a == s {
			return i
		}
	}
	return -1
}

func TestFormatRate(t *testing.T) {
	tests := []struct {
		fps  float64
		want string
	}{
		{30, "30"}, {25, "25"}, {60, "60"}, {50, "50"}, {24, "24"},
		{30000.0 / 1001, "30000/1001"}, {29.97, "30000/1001"},
		{24000.0 / 1001, "24000/1001"}, {23.976, "24000/1001"},
		{60000.0 / 1001, "60000/1001"}, {59.94, "60000/1001"},
		{12.5, "12.5"}, {15, "15"},
	}
	for _, tt := range tests {
		if got := formatRate(tt.fps); got != tt.want {
			t.Errorf("formatRate(%v) = %q, want %q", tt.fps, got, tt.want)
		}
	}
}

func TestMediaFromProbe(t *testing.T) {
	video := ffmpeg.ProbeStream{
		Index: 0, CodecType: "video", CodecName: "h264", Profile: "High", Level: 31,
		Width: 1920, Height: 1080, PixFmt: "yuv420p", RFrameRate: "30000/1001", AvgFrameRate: "30000/1001",
		Duration: 12.4, Rotation: 90,
	}
	audio := ffmpeg.ProbeStream{Index: 1, CodecType: "audio", CodecName: "aac", Profile: "LC", Channels: 6, SampleRate: 44100, Duration: 12.5}
	format := ffmpeg.ProbeFormat{FormatName: "mov,mp4,m4a,3gp,3g2,mj2", Duration: 12.5, Size: 7_800_000, BitRate: 4_992_000, NbStreams: 2}
	with := func(s ffmpeg.ProbeStream, f func(*ffmpeg.ProbeStream)) ffmpeg.ProbeStream { f(&s); return s }

	tests := []struct {
		name  string
		probe *ffmpeg.ProbeResult
		want  *kilnv1.MediaInfo
	}{
		{
			name:  "video and audio",
			probe: &ffmpeg.ProbeResult{Format: format, Streams: []ffmpeg.ProbeStream{video, audio}},
			want: &kilnv1.MediaInfo{
				Format: format.FormatName, DurationSeconds: 12.5, SizeBytes: 7_800_000, BitRate: 4_992_000,
				Video: &kilnv1.VideoStream{Codec: "h264", Width: 1920, Height: 1080, FrameRate: 30000.0 / 1001, PixFmt: "yuv420p", Rotation: 90},
				Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 6, SampleRate: 44100},
			},
		},
		{
			name: "audio only",
			probe: &ffmpeg.ProbeResult{
				Format:  ffmpeg.ProbeFormat{FormatName: "mp3", Duration: 180.2, Size: 2_880_000, BitRate: 128_000},
				Streams: []ffmpeg.ProbeStream{{CodecType: "audio", CodecName: "mp3", Channels: 2, SampleRate: 44100}},
			},
			want: &kilnv1.MediaInfo{
				Format: "mp3", DurationSeconds: 180.2, SizeBytes: 2_880_000, BitRate: 128_000,
				Audio: &kilnv1.AudioStream{Codec: "mp3", Channels: 2, SampleRate: 44100},
			},
		},
		{
			name: "cover art is not video",
			probe: &ffmpeg.ProbeResult{
				Format: ffmpeg.ProbeFormat{FormatName: "mp3", Duration: 60},
				Streams: []ffmpeg.ProbeStream{
					{CodecType: "audio", CodecName: "mp3", Channels: 2, SampleRate: 48000},
					{CodecType: "video", CodecName: "mjpeg", Width: 500, Height: 500, AttachedPic: true, AvgFrameRate: "0/0", RFrameRate: "90000/1"},
				},
			},
			want: &kilnv1.MediaInfo{Format: "mp3", DurationSeconds: 60, Audio: &kilnv1.AudioStream{Codec: "mp3", Channels: 2, SampleRate: 48000}},
		},
		{
			name: "vfr: avg rate 0/0 falls back to r_frame_rate",
			probe: &ffmpeg.ProbeResult{Format: format, Streams: []ffmpeg.ProbeStream{
				with(video, func(s *ffmpeg.ProbeStream) { s.AvgFrameRate, s.RFrameRate, s.Rotation = "0/0", "25/1", 0 }),
			}},
			want: &kilnv1.MediaInfo{
				Format: format.FormatName, DurationSeconds: 12.5, SizeBytes: 7_800_000, BitRate: 4_992_000,
				Video: &kilnv1.VideoStream{Codec: "h264", Width: 1920, Height: 1080, FrameRate: 25, PixFmt: "yuv420p"},
			},
		},
		{
			name: "absurd avg rate falls back to r_frame_rate",
			probe: &ffmpeg.ProbeResult{Format: format, Streams: []ffmpeg.ProbeStream{
				with(video, func(s *ffmpeg.ProbeStream) { s.AvgFrameRate, s.RFrameRate, s.Rotation = "5000/1", "60/1", 0 }),
			}},
			want: &kilnv1.MediaInfo{
				Format: format.FormatName, DurationSeconds: 12.5, SizeBytes: 7_800_000, BitRate: 4_992_000,
				Video: &kilnv1.VideoStream{Codec: "h264", Width: 1920, Height: 1080, FrameRate: 60, PixFmt: "yuv420p"},
			},
		},
		{
			name: "no format duration: video stream duration",
			probe: &ffmpeg.ProbeResult{Format: ffmpeg.ProbeFormat{FormatName: "matroska,webm"}, Streams: []ffmpeg.ProbeStream{
				with(video, func(s *ffmpeg.ProbeStream) { s.Rotation = 0 }), audio,
			}},
			want: &kilnv1.MediaInfo{
				Format: "matroska,webm", DurationSeconds: 12.4,
				Video: &kilnv1.VideoStream{Codec: "h264", Width: 1920, Height: 1080, FrameRate: 30000.0 / 1001, PixFmt: "yuv420p"},
				Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 6, SampleRate: 44100},
			},
		},
		{
			name: "no format or video duration: audio stream duration",
			probe: &ffmpeg.ProbeResult{Format: ffmpeg.ProbeFormat{FormatName: "ogg"}, Streams: []ffmpeg.ProbeStream{
				with(video, func(s *ffmpeg.ProbeStream) { s.Duration, s.Rotation = 0, 0 }), audio,
			}},
			want: &kilnv1.MediaInfo{
				Format: "ogg", DurationSeconds: 12.5,
				Video: &kilnv1.VideoStream{Codec: "h264", Width: 1920, Height: 1080, FrameRate: 30000.0 / 1001, PixFmt: "yuv420p"},
				Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 6, SampleRate: 44100},
			},
		},
		{
			name:  "no streams",
			probe: &ffmpeg.ProbeResult{Format: ffmpeg.ProbeFormat{FormatName: "mov,mp4,m4a,3gp,3g2,mj2"}},
			want:  &kilnv1.MediaInfo{Format: "mov,mp4,m4a,3gp,3g2,mj2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only the fields this test is about: MediaFromProbe fills more.
			got := coreMedia(MediaFromProbe(tt.probe))
			if g, w := got.String(), tt.want.String(); g != w {
				t.Fatalf("MediaFromProbe =\n%s\nwant\n%s", g, w)
			}
		})
	}
}

// coreMedia keeps the container, duration and basic stream facts of m.
func coreMedia(m *kilnv1.MediaInfo) *kilnv1.MediaInfo {
	c := &kilnv1.MediaInfo{Format: m.Format, DurationSeconds: m.DurationSeconds, SizeBytes: m.SizeBytes, BitRate: m.BitRate}
	if v := m.GetVideo(); v != nil {
		c.Video = &kilnv1.VideoStream{Codec: v.Codec, Width: v.Width, Height: v.Height, FrameRate: v.FrameRate, PixFmt: v.PixFmt, Rotation: v.Rotation}
	}
	if a := m.GetAudio(); a != nil {
		c.Audio = &kilnv1.AudioStream{Codec: a.Codec, Channels: a.Channels, SampleRate: a.SampleRate}
	}
	return c
}

func TestTranscodeTimeout(t *testing.T) {
	tests := []struct {
		name  string
		media *kilnv1.MediaInfo
		want  time.Duration
	}{
		{"nil media", nil, 10 * time.Minute},
		{"unknown duration", &kilnv1.MediaInfo{}, 10 * time.Minute},
		{"half a second", &kilnv1.MediaInfo{DurationSeconds: 0.5}, 10*time.Minute + 10*time.Second},
		{"one minute", &kilnv1.MediaInfo{DurationSeconds: 60}, 30 * time.Minute},
		{"two hours", &kilnv1.MediaInfo{DurationSeconds: 7200}, 10*time.Minute + 40*time.Hour},
	}
	for _, tt := range tests {
		if got := tasks.TranscodeTimeout(tt.media); got != tt.want {
			t.Errorf("%s: TranscodeTimeout = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestTranscodeArgsRun encodes generated clips with the real ffmpeg, read
// over HTTP as workers read presigned URLs, and checks every rung.
func TestTranscodeArgsRun(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	tests := []struct {
		name      string
		rate      string // lavfi frame rate, and the rungs' avg_frame_rate
		wantFPS   float64
		wantRungs []string // "WxH"
	}{
		{"640x360 30fps", "30/1", 30, []string{"640x360", "426x240", "256x144"}},
		{"640x360 29.97fps", "30000/1001", 30000.0 / 1001, []string{"640x360", "426x240", "256x144"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			// Mono 44.1 kHz audio, so the rungs' 48 kHz stereo is a real conversion.
			clip := testenv.Clip(t, testenv.ClipSpec{
				Seconds: 4, Width: 640, Height: 360, Rate: tt.rate,
				SampleRate: 44100, Audio: []string{"-c:a", "aac", "-ac", "1"},
			})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.ServeFile(w, r, clip) // supports the range requests the mov demuxer makes
			}))
			t.Cleanup(srv.Close)

			runner := ffmpeg.New(ffmpeg.Config{})
			probe, err := runner.Probe(t.Context(), srv.URL+"/clip.mp4", ffmpeg.ProbeOptions{
				FormatWhitelist: FormatWhitelist, ProtocolWhitelist: ProtocolWhitelist,
			})
			if err != nil {
				t.Fatal(err)
			}
			plan, err := Plan(MediaFromProbe(probe), DefaultPreset())
			if err != nil {
				t.Fatal(err)
			}
			var rungs []string
			for _, r := range plan.Rungs {
				rungs = append(rungs, fmt.Sprintf("%dx%d", r.Width, r.Height))
			}
			if strings.Join(rungs, " ") != strings.Join(tt.wantRungs, " ") || math.Abs(plan.FrameRate-tt.wantFPS) > 1e-9 || plan.GopFrames != 60 || !plan.HasAudio {
				t.Fatalf("plan = %v", plan)
			}
			gopSeconds := float64(plan.GopFrames) / plan.FrameRate

			out := Outputs{Root: filepath.Join(tmp, "out")}
			out.Stills = NewStills(filepath.Join(out.Root, "stills"), plan, 4)
			if err := out.Prepare(plan); err != nil {
				t.Fatal(err)
			}
			var progressed bool
			args := TranscodeArgs(Input{URL: srv.URL + "/clip.mp4"}, plan, out, EncodeOptions{X264Preset: "veryfast", Threads: 2})
			if err := runner.Run(t.Context(), args, func(ffmpeg.Progress) { progressed = true }); err != nil {
				t.Fatal(err)
			}
			if !progressed {
				t.Error("no progress reported")
			}

			// The audio, once: AAC-LC 48 kHz stereo, 4 s, segments like the video's.
			audio := joinFMP4(t, out.Dir("audio"))
			if got := ffprobe(t, audio, "-show_entries", "stream=codec_type,codec_name,sample_rate,channels"); got != "aac,audio,48000,2" {
				t.Errorf("audio = %q, want aac,audio,48000,2 alone", got)
			}
			var firstKeys, firstSegs []string
			for _, r := range plan.Rungs {
				file := joinFMP4(t, out.Dir(r.Name))
				if got, want := ffprobe(t, file, "-show_entries", "stream=codec_type,codec_name,profile,width,height,sample_aspect_ratio,pix_fmt,avg_frame_rate"),
					fmt.Sprintf("h264,High,video,%d,%d,1:1,yuv420p,%s", r.Width, r.Height, tt.rate); got != want {
					t.Errorf("%s streams = %q, want %q alone", r.Name, got, want)
				}
				keys := strings.FieldsFunc(ffprobe(t, file, "-select_streams", "v", "-skip_frame", "nokey", "-show_entries", "frame=pts_time"),
					func(r rune) bool { return r == ',' || r == '\n' || r == ' ' })
				if len(keys) < 2 {
					t.Errorf("%s keyframes at %q, want at least 0 and %.3f s", r.Name, keys, gopSeconds)
				}
				// Key frames every GOP from the first (whose time is the
				// encoder's B-frame delay: fMP4 has no edit list).
				first := 0.0
				for i, s := range keys {
					ts, err := strconv.ParseFloat(s, 64)
					if err != nil {
						t.Fatalf("%s keyframe time %q: %v", r.Name, s, err)
					}
					if i == 0 {
						first = ts
					}
					ts -= first
					if n := math.Round(ts / gopSeconds); math.Abs(ts-n*gopSeconds) > 0.001 {
						t.Errorf("%s keyframe at %.3f s, not a multiple of %.3f s (all: %q)", r.Name, ts, gopSeconds, keys)
					}
				}
				segs, err := finishedSegments(filepath.Join(out.Dir(r.Name), FFmpegPlaylist))
				if err != nil || len(segs) == 0 {
					t.Fatalf("%s segments %v: %v", r.Name, segs, err)
				}
				var durations []string
				for _, s := range segs {
					durations = append(durations, strconv.FormatFloat(s.Duration, 'f', 3, 64))
				}
				if firstKeys == nil {
					firstKeys, firstSegs = keys, durations
				} else if strings.Join(keys, " ") != strings.Join(firstKeys, " ") || strings.Join(durations, " ") != strings.Join(firstSegs, " ") {
					t.Errorf("%s keyframes %q, segments %q differ from %s's %q, %q", r.Name, keys, durations, plan.Rungs[0].Name, firstKeys, firstSegs)
				}
				dur, err := strconv.ParseFloat(ffprobe(t, file, "-show_entries", "format=duration"), 64)
				if err != nil || math.Abs(dur-4) > 0.15 {
					t.Errorf("%s duration = %v (%v), want ≈ 4 s", r.Name, dur, err)
				}
			}
			// The stills came from the same decode.
			if thumbs, _ := filepath.Glob(filepath.Join(out.Stills.Dir, "t_*.jpg")); len(thumbs) != out.Stills.Grid.Count {
				t.Errorf("%d thumbnails, want %d", len(thumbs), out.Stills.Grid.Count)
			}
			if _, _, ok := out.Stills.PickPoster(); !ok {
				t.Error("no poster candidate written")
			}
			// The sprite tiles them.
			var tiles [][]byte
			for _, f := range out.Stills.thumbnailFiles() {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				tiles = append(tiles, b)
			}
			g := out.Stills.Grid
			if sprite, err := TileSprite(g, tiles); err != nil {
				t.Error(err)
			} else if cfg, err := jpeg.DecodeConfig(bytes.NewReader(sprite)); err != nil || cfg.Width != g.Columns*g.TileWidth || cfg.Height != g.Rows*g.TileHeight {
				t.Errorf("sprite %dx%d (%v), want %dx%d", cfg.Width, cfg.Height, err, g.Columns*g.TileWidth, g.Rows*g.TileHeight)
			}
		})
	}
}

// joinFMP4 writes the init segment and the segments ffmpeg finished in
// dir, end to end, into one fragmented MP4 file ffprobe reads.
func joinFMP4(t *testing.T, dir string) string {
	t.Helper()
	segs, err := finishedSegments(filepath.Join(dir, FFmpegPlaylist))
	if err != nil || len(segs) == 0 {
		t.Fatalf("%s: segments %v: %v", dir, segs, err)
	}
	data, err := os.ReadFile(filepath.Join(dir, layout.InitFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		b, err := os.ReadFile(filepath.Join(dir, s.URI))
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, b...)
	}
	path := filepath.Join(dir, "joined.mp4")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ffprobe runs ffprobe on file with args and -of csv=p=0, returning the
// trimmed output.
func ffprobe(t *testing.T, file string, args ...string) string {
	t.Helper()
	full := append([]string{"-v", "error"}, args...)
	full = append(full, "-of", "csv=p=0", file)
	out, err := exec.CommandContext(t.Context(), "ffprobe", full...).Output()
	if err != nil {
		t.Fatalf("ffprobe %q: %v", full, err)
	}
	return strings.TrimSpace(string(out))
}
