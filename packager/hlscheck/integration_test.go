package hlscheck

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/testenv"
	"github.com/kilnvideo/kiln/packager"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Encoder settings of a rung (kiln's default x264 preset is veryfast: High
// profile, B-frames).
var (
	fixedGOP   = []string{"-preset", "veryfast", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0"} // kiln's: IDR every 2 s
	defaultGOP = []string{"-preset", "veryfast", "-g", "250"}                                           // x264 default, scene-cut on
	openGOP    = []string{"-preset", "veryfast", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-x264-params", "open-gop=1"}
)

// encodeRung writes a 7 s width x height HLS fMP4 rung into root/name.
func encodeRung(t *testing.T, root, name string, width, height int, video []string, hlsExtra ...string) {
	t.Helper()
	encodeHLS(t, root, name, testenv.ClipSpec{Width: width, Height: height,
		Video: append([]string{"-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", "30"}, video...)}, hlsExtra...)
}

// encodeHLS writes a 7 s HLS fMP4 rendition of spec (its sizes, encoders,
// NoVideo or NoAudio) into root/name: AAC at 64 kb/s, 6 s segments.
func encodeHLS(t *testing.T, root, name string, spec testenv.ClipSpec, hlsExtra ...string) {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	spec.Path, spec.Seconds, spec.Rate, spec.SampleRate = filepath.Join(dir, "index.m3u8"), 7, "30", 48000
	spec.Audio = []string{"-c:a", "aac", "-b:a", "64k", "-ac", "2"}
	spec.ExtraArgs = []string{"-f", "hls", "-hls_time", "6", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
		"-hls_flags", strings.Join(append([]string{"independent_segments"}, hlsExtra...), "+"),
		"-hls_fmp4_init_filename", "init.mp4",
		"-hls_segment_filename", filepath.Join(dir, "seg_%05d.m4s")}
	testenv.Clip(t, spec)
}

// rendition measures a rung the way the packager does.
func rendition(t *testing.T, root, name string, w, h int32) *kilnv1.Rendition {
	t.Helper()
	dir := filepath.Join(root, name)
	stats, err := packager.MeasurePlaylist(filepath.Join(dir, "index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	var whole []byte
	for _, f := range []string{"init.mp4", "seg_00000.m4s"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		whole = append(whole, b...)
	}
	file := filepath.Join(t.TempDir(), "first.mp4")
	if err := os.WriteFile(file, whole, 0o644); err != nil {
		t.Fatal(err)
	}
	probe, err := ffmpeg.New(ffmpeg.Config{}).Probe(t.Context(), file, ffmpeg.ProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	codecs, err := packager.Codecs(probe)
	if err != nil {
		t.Fatal(err)
	}
	return &kilnv1.Rendition{
		Name: name, Width: w, Height: h, FrameRate: 30,
		Bandwidth: stats.PeakBitRate, AverageBandwidth: stats.AverageBitRate, Codecs: codecs,
	}
}

// serve writes the master playlist of renditions into root and serves root.
func serve(t *testing.T, root string, master []byte) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, "master.m3u8"), master, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(root)))
	t.Cleanup(srv.Close)
	return srv.URL + "/master.m3u8"
}

// TestCheckMasterRealHLS runs every check, segments included, on ffmpeg's
// output: kiln's settings pass; a rung without kiln's fixed GOP, one with
// open-GOP keyframes, one cut between keyframes and a master with wrong
// attributes fail with the matching rules.
func TestCheckMasterRealHLS(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	good := t.TempDir()
	encodeRung(t, good, "90p", 160, 90, fixedGOP)
	encodeRung(t, good, "180p", 320, 180, fixedGOP)
	goodRenditions := []*kilnv1.Rendition{rendition(t, good, "90p", 160, 90), rendition(t, good, "180p", 320, 180)}

	check := func(t *testing.T, masterURI string) *Report {
		t.Helper()
		r, err := CheckMaster(t.Context(), Config{Fetcher: HTTPFetcher{}, InspectSegments: true}, masterURI)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	t.Run("kiln settings", func(t *testing.T) {
		r := check(t, serve(t, good, masterOf(goodRenditions)))
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		if r.Variants != 2 || r.Segments != 4 {
			t.Fatalf("variants %d segments %d, want 2 and 4 (6 s + 1 s each)", r.Variants, r.Segments)
		}
	})

	t.Run("local files", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(good, "local.m3u8"), masterOf(goodRenditions), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := CheckMaster(t.Context(), Config{InspectSegments: true}, filepath.Join(good, "local.m3u8"))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Err(); err != nil || r.Segments != 4 {
			t.Fatalf("segments %d: %v", r.Segments, err)
		}
	})

	// mixed serves the good 180p rung next to a 90p rung encoded with video.
	mixed := func(t *testing.T, video []string, hlsExtra ...string) *Report {
		t.Helper()
		root := t.TempDir()
		if err := os.CopyFS(filepath.Join(root, "180p"), os.DirFS(filepath.Join(good, "180p"))); err != nil {
			t.Fatal(err)
		}
		encodeRung(t, root, "90p", 160, 90, video, hlsExtra...)
		master := masterOf([]*kilnv1.Rendition{rendition(t, root, "90p", 160, 90), goodRenditions[1]})
		r := check(t, serve(t, root, master))
		t.Logf("%v", r.Err())
		return r
	}

	t.Run("default x264 GOP is not aligned", func(t *testing.T) {
		r := mixed(t, defaultGOP)
		// One 7 s segment against 6 s + 1 s.
		got := r.Rules()
		if !slices.Contains(got, RuleVariantsSegmentCount) || !slices.Contains(got, RuleVariantsTargetDuration) {
			t.Fatalf("rules = %v, want %s and %s", got, RuleVariantsSegmentCount, RuleVariantsTargetDuration)
		}
	})

	t.Run("open GOP segments do not start with an IDR", func(t *testing.T) {
		// The open-GOP I frame is a key frame for ffprobe and the packet
		// is flagged key (so ffmpeg cuts there): only the NAL type shows
		// it is not an IDR. (Its leading B frames also shift the segment
		// start and duration: the alignment rules fire too.)
		r := mixed(t, openGOP)
		got := r.Rules()
		if !slices.Contains(got, RuleSegmentIDR) || slices.Contains(got, RuleSegmentKeyframe) {
			t.Fatalf("rules = %v, want %s without %s", got, RuleSegmentIDR, RuleSegmentKeyframe)
		}
	})

	t.Run("segments cut between key frames", func(t *testing.T) {
		// split_by_time cuts at 6 s although the next key frame is at 8.3 s.
		r := mixed(t, defaultGOP, "split_by_time")
		got := r.Rules()
		if !slices.Contains(got, RuleSegmentKeyframe) || !slices.Contains(got, RuleSegmentIDR) {
			t.Fatalf("rules = %v, want %s and %s", got, RuleSegmentKeyframe, RuleSegmentIDR)
		}
	})

	t.Run("attributes that do not match the streams", func(t *testing.T) {
		bad := proto.CloneOf(goodRenditions[1])
		bad.Width, bad.Height = 640, 360
		bad.Codecs = strings.Replace(bad.Codecs, "avc1.6400", "avc1.4d00", 1)
		r := check(t, serve(t, good, masterOf([]*kilnv1.Rendition{goodRenditions[0], bad})))
		if got := r.Rules(); !slices.Equal(got, []string{RuleSegmentCodecs, RuleSegmentResolution}) {
			t.Fatalf("rules = %v, want [%s %s]\n%v", got, RuleSegmentCodecs, RuleSegmentResolution, r.Err())
		}
	})
}

// masterOf renders the master playlist of packaged renditions with kiln's
// playlist writer.
func masterOf(rs []*kilnv1.Rendition) []byte {
	vs := make([]playlist.Variant, 0, len(rs))
	for _, r := range rs {
		vs = append(vs, playlist.Variant{Name: r.Name, Width: int(r.Width), Height: int(r.Height), FrameRate: r.FrameRate,
			Bandwidth: r.Bandwidth, AverageBandwidth: r.AverageBandwidth, Codecs: r.Codecs})
	}
	return playlist.Master(vs)
}

// TestCheckMasterAudioGroup runs every check on ffmpeg's output laid out
// as kiln encodes it straight to segments: video-only rungs and one audio
// rendition, the master's audio group referenced by every variant. The
// variants' bit rates include the audio's; a master declaring them
// without it fails, and so does a master whose group is missing. While the
// asset is still encoding (EVENT playlists, renditions at different
// lengths) it passes with Config.AllowEvent, and only with it.
func TestCheckMasterAudioGroup(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	root := t.TempDir()
	video := []string{"-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", "30"}
	encodeHLS(t, root, "90p", testenv.ClipSpec{Width: 160, Height: 90, NoAudio: true, Video: append(video, fixedGOP...)})
	encodeHLS(t, root, "180p", testenv.ClipSpec{Width: 320, Height: 180, NoAudio: true, Video: append(video, fixedGOP...)})
	encodeHLS(t, root, "audio", testenv.ClipSpec{NoVideo: true})
	rs := []*kilnv1.Rendition{rendition(t, root, "90p", 160, 90), rendition(t, root, "180p", 320, 180), rendition(t, root, "audio", 0, 0)}
	for _, r := range rs {
		if strings.Contains(r.Codecs, ",") {
			t.Fatalf("rendition %s is not single-media: %s", r.Name, r.Codecs)
		}
	}
	check := func(t *testing.T, cfg Config, master []byte) *Report {
		t.Helper()
		cfg.Fetcher, cfg.InspectSegments = HTTPFetcher{}, true
		r, err := CheckMaster(t.Context(), cfg, serve(t, root, master))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	master := masterOf(rs)
	if !strings.Contains(string(master), "#EXT-X-MEDIA:TYPE=AUDIO") {
		t.Fatalf("no audio group:\n%s", master)
	}

	t.Run("kiln layout", func(t *testing.T) {
		r := check(t, Config{}, master)
		if err := r.Err(); err != nil {
			t.Fatalf("%v\n%s", err, master)
		}
		if r.Variants != 3 || r.Segments != 6 {
			t.Fatalf("variants %d segments %d, want 3 (two and the audio) and 6", r.Variants, r.Segments)
		}
		// ffmpeg follows the group: the master gives it video and audio.
		url := serve(t, root, master)
		out, err := run(t.Context(), "ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", url)
		if err != nil {
			t.Fatal(err)
		}
		if types := strings.Fields(string(out)); !slices.Contains(types, "video") || !slices.Contains(types, "audio") {
			t.Fatalf("ffprobe of the master found streams %v, want video and audio", types)
		}
	})

	t.Run("bit rates without the audio", func(t *testing.T) {
		noAudio := slices.Clone(rs)
		noAudio[2] = proto.CloneOf(rs[2])
		noAudio[2].Bandwidth, noAudio[2].AverageBandwidth = 1, 1
		r := check(t, Config{}, masterOf(noAudio))
		if got := r.Rules(); !slices.Contains(got, RuleVariantAverageBandwidth) {
			t.Fatalf("rules = %v, want %s (the 90p variant's average is mostly audio)", got, RuleVariantAverageBandwidth)
		}
	})

	t.Run("no such group", func(t *testing.T) {
		r := check(t, Config{}, []byte(strings.Replace(string(master), `GROUP-ID="audio"`, `GROUP-ID="aac"`, 1)))
		if got := r.Rules(); !slices.Equal(got, []string{RuleMasterAudioGroup}) {
			t.Fatalf("rules = %v, want [%s]", got, RuleMasterAudioGroup)
		}
	})

	t.Run("while encoding", func(t *testing.T) {
		// Every rendition's playlist as EVENT without ENDLIST; the 180p
		// one a segment behind the others.
		live := t.TempDir()
		if err := os.CopyFS(live, os.DirFS(root)); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"90p", "180p", "audio"} {
			file := filepath.Join(live, name, "index.m3u8")
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			text := strings.Replace(strings.TrimSuffix(string(b), "#EXT-X-ENDLIST\n"), "PLAYLIST-TYPE:VOD", "PLAYLIST-TYPE:EVENT", 1)
			if name == "180p" {
				text = text[:strings.LastIndex(text, "#EXTINF:")]
			}
			if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		liveCheck := func(cfg Config) *Report {
			cfg.Fetcher, cfg.InspectSegments = HTTPFetcher{}, true
			r, err := CheckMaster(t.Context(), cfg, serve(t, live, master))
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		r := liveCheck(Config{AllowEvent: true})
		if err := r.Err(); err != nil || r.Segments != 5 {
			t.Fatalf("segments %d: %v", r.Segments, err)
		}
		if got := liveCheck(Config{}).Rules(); !slices.Equal(got, []string{RuleMediaVOD, RuleMediaEndlist}) {
			t.Fatalf("without AllowEvent: rules = %v, want [%s %s]", got, RuleMediaVOD, RuleMediaEndlist)
		}
	})
}
