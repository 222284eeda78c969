package packager

import (
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/testenv"
)

func TestCodecs(t *testing.T) {
	h264 := func(profile string, level int) ffmpeg.ProbeStream {
		return ffmpeg.ProbeStream{CodecType: "video", CodecName: "h264", Profile: profile, Level: level, Width: 640, Height: 360}
	}
	aac := func(profile string) ffmpeg.ProbeStream {
		return ffmpeg.ProbeStream{CodecType: "audio", CodecName: "aac", Profile: profile, Channels: 2, SampleRate: 48000}
	}
	tests := []struct {
		name    string
		streams []ffmpeg.ProbeStream
		want    string
		wantErr string
	}{
		{"high 3.0 + aac lc", []ffmpeg.ProbeStream{h264("High", 30), aac("LC")}, "avc1.64001e,mp4a.40.2", ""},
		{"main 3.1", []ffmpeg.ProbeStream{h264("Main", 31)}, "avc1.4d001f", ""},
		{"constrained baseline 3.0", []ffmpeg.ProbeStream{h264("Constrained Baseline", 30)}, "avc1.42e01e", ""},
		{"baseline 2.1", []ffmpeg.ProbeStream{h264("Baseline", 21)}, "avc1.420015", ""},
		{"high 4.0", []ffmpeg.ProbeStream{h264("High", 40)}, "avc1.640028", ""},
		{"high 5.1", []ffmpeg.ProbeStream{h264("High", 51)}, "avc1.640033", ""},
		{"audio first in the file", []ffmpeg.ProbeStream{aac("LC"), h264("High", 31)}, "avc1.64001f,mp4a.40.2", ""},
		{"he-aac", []ffmpeg.ProbeStream{h264("High", 30), aac("HE-AAC")}, "avc1.64001e,mp4a.40.5", ""},
		{"aac without profile is lc", []ffmpeg.ProbeStream{aac("")}, "mp4a.40.2", ""},
		{"audio only", []ffmpeg.ProbeStream{aac("LC")}, "mp4a.40.2", ""},
		{
			"cover art ignored",
			[]ffmpeg.ProbeStream{{CodecType: "video", CodecName: "mjpeg", AttachedPic: true}, h264("High", 30), aac("LC")},
			"avc1.64001e,mp4a.40.2", "",
		},
		{"hevc unsupported", []ffmpeg.ProbeStream{{CodecType: "video", CodecName: "hevc", Profile: "Main", Level: 93}}, "", "unsupported video codec"},
		{"high 10 unsupported", []ffmpeg.ProbeStream{h264("High 10", 30)}, "", "unsupported H.264 profile"},
		{"high 4:2:2 unsupported", []ffmpeg.ProbeStream{h264("High 4:2:2", 30)}, "", "unsupported H.264 profile"},
		{"unknown level", []ffmpeg.ProbeStream{h264("High", 0)}, "", "bad H.264 level"},
		{"absurd level", []ffmpeg.ProbeStream{h264("High", 300)}, "", "bad H.264 level"},
		{"he-aac v2 unsupported", []ffmpeg.ProbeStream{aac("HE-AACv2")}, "", "unsupported audio"},
		{"mp3 unsupported", []ffmpeg.ProbeStream{{CodecType: "audio", CodecName: "mp3"}}, "", "unsupported audio"},
		{"no streams", nil, "", "no streams"},
		{"only data streams", []ffmpeg.ProbeStream{{CodecType: "data", CodecName: "bin_data"}}, "", "no streams"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Codecs(&ffmpeg.ProbeResult{Streams: tt.streams})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Codecs = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Codecs = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func runFFmpeg(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "ffmpeg", append([]string{"-hide_banner", "-nostdin", "-v", "error", "-y"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestMeasurePlaylistRealHLS(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	tmp := t.TempDir()
	clip := testenv.Clip(t, testenv.ClipSpec{
		Seconds: 7, Width: 320, Height: 180, Rate: "30", SampleRate: 48000,
		Audio:     []string{"-c:a", "aac", "-b:a", "64k"},
		ExtraArgs: []string{"-g", "60", "-keyint_min", "60", "-sc_threshold", "0"},
	})

	dir := filepath.Join(tmp, "hls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Served over HTTP, as the packager reads encoded rungs: its ffmpeg
	// may not read local files.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, clip) }))
	t.Cleanup(srv.Close)
	runFFmpeg(t, HLSArgs(srv.URL+"/clip.mp4", 6, dir)...)

	for _, name := range []string{"index.m3u8", "init.mp4"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: %v", name, err)
		}
	}
	playlist, err := os.ReadFile(filepath.Join(dir, "index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"#EXT-X-VERSION:7", "#EXT-X-PLAYLIST-TYPE:VOD", `#EXT-X-MAP:URI="init.mp4"`, "#EXT-X-INDEPENDENT-SEGMENTS", "#EXT-X-ENDLIST"} {
		if !strings.Contains(string(playlist), tag) {
			t.Errorf("playlist lacks %s:\n%s", tag, playlist)
		}
	}

	stats, err := MeasurePlaylist(filepath.Join(dir, "index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	if stats.Segments != 2 {
		t.Errorf("segments = %d, want 2 (6 s + 1 s)\n%s", stats.Segments, playlist)
	}
	if math.Abs(stats.Duration-7) > 0.1 {
		t.Errorf("duration = %.3f, want ≈ 7", stats.Duration)
	}
	if stats.AverageBitRate <= 0 || stats.PeakBitRate < stats.AverageBitRate {
		t.Errorf("peak/average = %d/%d, want peak ≥ average > 0", stats.PeakBitRate, stats.AverageBitRate)
	}
	// The average is the segments' bits over the duration.
	var bits float64
	var segs []string
	for _, l := range strings.Split(string(playlist), "\n") {
		if strings.HasSuffix(l, ".m4s") {
			segs = append(segs, l)
		}
	}
	if len(segs) != stats.Segments {
		t.Fatalf("playlist names %q, measured %d segments", segs, stats.Segments)
	}
	for _, seg := range segs {
		if ok, _ := filepath.Match("seg_[0-9][0-9][0-9][0-9][0-9].m4s", seg); !ok {
			t.Errorf("segment name %q does not follow seg_%%05d.m4s", seg)
		}
		fi, err := os.Stat(filepath.Join(dir, seg))
		if err != nil {
			t.Fatal(err)
		}
		bits += float64(fi.Size()) * 8
	}
	if want := int64(math.Ceil(bits / stats.Duration)); stats.AverageBitRate != want {
		t.Errorf("average = %d, want %d", stats.AverageBitRate, want)
	}
}

func TestMeasurePlaylist(t *testing.T) {
	const media = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n" +
		"#EXT-X-MAP:URI=\"init.mp4\"\n"
	tests := []struct {
		name     string
		playlist string
		files    map[string]int // segment name → size in bytes
		noFile   bool           // do not write the playlist at all
		want     PlaylistStats
		wantErr  bool
	}{
		{
			name:     "measured",
			playlist: media + "#EXTINF:6.000000,\nseg_00001.m4s\n#EXTINF:1.000000,\nseg_00002.m4s\n#EXT-X-ENDLIST\n",
			files:    map[string]int{"seg_00001.m4s": 6000, "seg_00002.m4s": 2000},
			// 48000 b / 6 s, 16000 b / 1 s, 64000 b / 7 s = 9142.86 → 9143.
			want: PlaylistStats{Segments: 2, Duration: 7, PeakBitRate: 16000, AverageBitRate: 9143},
		},
		{
			name:     "missing segment",
			playlist: media + "#EXTINF:6.000000,\nseg_00001.m4s\n#EXTINF:6.000000,\nseg_00002.m4s\n#EXT-X-ENDLIST\n",
			files:    map[string]int{"seg_00001.m4s": 100},
			wantErr:  true,
		},
		{name: "empty file", playlist: "", wantErr: true},
		{name: "no segments", playlist: media + "#EXT-X-ENDLIST\n", wantErr: true},
		{
			name:     "zero duration",
			playlist: media + "#EXTINF:0,\nseg_00001.m4s\n#EXT-X-ENDLIST\n",
			files:    map[string]int{"seg_00001.m4s": 100},
			wantErr:  true,
		},
		{
			name:     "segment outside the folder",
			playlist: media + "#EXTINF:6.000000,\n../secret.m4s\n#EXT-X-ENDLIST\n",
			wantErr:  true,
		},
		{
			name:     "master playlist",
			playlist: "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS=\"mp4a.40.2\"\na/index.m3u8\n",
			wantErr:  true,
		},
		{name: "not a playlist", playlist: "hello\n", wantErr: true},
		{name: "no playlist file", noFile: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, size := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "index.m3u8")
			if !tt.noFile {
				if err := os.WriteFile(path, []byte(tt.playlist), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := MeasurePlaylist(path)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("MeasurePlaylist = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("MeasurePlaylist = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestHLSArgsReadOnlyTheEncodedRung runs the packager's ffmpeg on inputs
// that are not an encoded rung served over HTTP: a local file (the file
// protocol would let a crafted input read the worker's files) and an HLS
// playlist disguised as an MP4 that names a local file. Both must fail, and
// nothing may be written outside the work folder.
func TestHLSArgsReadOnlyTheEncodedRung(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg")
	clip := testenv.Clip(t, testenv.ClipSpec{Seconds: 1})
	secret := filepath.Join(t.TempDir(), "secret.mp4")
	if b, err := os.ReadFile(clip); err != nil || os.WriteFile(secret, b, 0o600) != nil {
		t.Fatal(err)
	}
	evil := "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://" + secret + "\n#EXT-X-ENDLIST\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		_, _ = w.Write([]byte(evil))
	}))
	t.Cleanup(srv.Close)
	for name, input := range map[string]string{
		"local path":               secret,
		"file URL":                 "file://" + secret,
		"playlist naming a file":   srv.URL + "/rung.mp4",
		"playlist, hls by its URL": srv.URL + "/rung.m3u8",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.CommandContext(t.Context(), "ffmpeg", append([]string{"-hide_banner", "-nostdin", "-v", "error", "-y"}, HLSArgs(input, 6, dir)...)...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("ffmpeg packaged %s:\n%s", input, out)
			}
			if _, err := os.Stat(filepath.Join(dir, "init.mp4")); err == nil {
				t.Errorf("wrote an init segment from %s", input)
			}
			t.Logf("refused: %s", strings.TrimSpace(string(out)))
		})
	}
}

func TestHLSArgs(t *testing.T) {
	got := HLSArgs("https://s3.example.com/b/k.mp4?X-Amz-Signature=s", 6, "/work/720p")
	want := []string{
		"-protocol_whitelist", "http,https,tcp,tls",
		"-format_whitelist", "mov,mp4,m4a,3gp,3g2,mj2",
		"-codec_whitelist", "h264,aac",
		"-rw_timeout", "30000000",
		"-i", "https://s3.example.com/b/k.mp4?X-Amz-Signature=s",
		"-map", "0", "-c", "copy",
		"-protocol_whitelist", "file",
		"-f", "hls", "-hls_time", "6", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
		"-hls_flags", "independent_segments", "-hls_fmp4_init_filename", "init.mp4",
		"-hls_segment_filename", "/work/720p/seg_%05d.m4s", "/work/720p/index.m3u8",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("HLSArgs =\n%q\nwant\n%q", got, want)
	}
	if got := HLSArgs("in", 4, "d"); !strings.Contains(strings.Join(got, " "), "-hls_time "+strconv.Itoa(4)) {
		t.Fatalf("segment seconds not passed: %q", got)
	}
}

func TestPreferAVCC(t *testing.T) {
	box := func(profile, compat, level byte) []byte {
		return append([]byte("\x00\x00\x00\x2fstsd....avcC\x01"), profile, compat, level, 0xff)
	}
	tests := []struct {
		name, codecs string
		init         []byte
		want         string
	}{
		{"constrained baseline from x264", "avc1.42e01e,mp4a.40.2", box(0x42, 0xc0, 0x1e), "avc1.42c01e,mp4a.40.2"},
		{"high unchanged", "avc1.64001f,mp4a.40.2", box(0x64, 0x00, 0x1f), "avc1.64001f,mp4a.40.2"},
		{"video only", "avc1.4d001f", box(0x4d, 0x40, 0x1f), "avc1.4d401f"},
		{"no avcC", "avc1.64001f,mp4a.40.2", []byte("ftypiso5"), "avc1.64001f,mp4a.40.2"},
		{"truncated box", "avc1.64001f", []byte("avcC\x01\x64"), "avc1.64001f"},
		{"audio only", "mp4a.40.2", []byte("mp4a"), "mp4a.40.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PreferAVCC(tt.codecs, tt.init); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
