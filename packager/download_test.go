package packager_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/testenv"
	"github.com/kilnvideo/kiln/packager"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// storeHLS stores an HLS fMP4 rendition of clip, made by ffmpeg's HLS
// muxer as the transcode makes them (streams: ffmpeg -map arguments),
// under name: init, segments and a media playlist.
func storeHLS(t *testing.T, objects *fakes.Objects, clip, name string, streams ...string) {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"-v", "error", "-i", clip}, streams...)
	args = append(args, "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac", "-f", "hls", "-hls_time", "1",
		"-hls_playlist_type", "vod", "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", layout.InitFile,
		"-hls_segment_filename", filepath.Join(dir, layout.SegmentPattern), filepath.Join(dir, layout.PlaylistFile))
	if out, err := exec.CommandContext(t.Context(), "ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		key := layout.SegmentKey(assetID, name, e.Name())
		if e.Name() == layout.PlaylistFile {
			key = layout.PlaylistKey(assetID, name)
		}
		if err := objects.PutFile(t.Context(), outputsBucket, key, filepath.Join(dir, e.Name()), ""); err != nil {
			t.Fatal(err)
		}
	}
}

func downloadTask(audioOnly bool) *kilnv1.PackageTask {
	p := &kilnv1.PackageTask{JobId: jobID, AssetId: assetID, Attempt: attempt, Download: true,
		Plan: &kilnv1.Plan{Rungs: rungs(), FrameRate: 30, GopFrames: 30, SegmentSeconds: 1, HasAudio: true, AudioBitRate: 128_000}}
	if audioOnly {
		p.Plan = &kilnv1.Plan{SegmentSeconds: 1, HasAudio: true, AudioOnly: true, AudioBitRate: 128_000}
	}
	return p
}

// TestPackageDownload remuxes the stored segments of the top rung and of
// the audio into one faststart MP4 with both streams, whole, without
// re-encoding, and publishes its key as a partial READY.
func TestPackageDownload(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	clip := testenv.Clip(t, testenv.ClipSpec{Seconds: 3, Width: 320, Height: 180, Audio: []string{"-c:a", "aac"}})
	for _, tt := range []struct {
		name      string
		audioOnly bool
		key       string
		streams   string
	}{
		{"video and audio", false, layout.EncodedKey(assetID, "360p"), "h264,video\naac,audio"},
		{"audio only", true, layout.EncodedKey(assetID, layout.AudioRendition), "aac,audio"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objects, events, jobs := &fakes.Objects{}, &fakes.Events{}, &fakes.Jobs{}
			if !tt.audioOnly {
				storeHLS(t, objects, clip, "360p", "-map", "0:v")
				storeHLS(t, objects, clip, "240p", "-map", "0:v") // not the download's
			}
			storeHLS(t, objects, clip, layout.AudioRendition, "-map", "0:a")
			work := t.TempDir()
			h := packager.New(packager.Config{FFmpeg: ffmpeg.New(ffmpeg.Config{Logger: zaptest.NewLogger(t)}), Objects: objects,
				Events: events, Jobs: jobs, OutputsBucket: outputsBucket, WorkDir: work})
			if err := h.Package(t.Context(), asTask(t, downloadTask(tt.audioOnly))); err != nil {
				t.Fatal(err)
			}
			evs := events.Events()
			if len(evs) != 1 || evs[0].GetEventId() != eventID("mp4") || evs[0].GetState() != kilnv1.JobState_JOB_STATE_READY {
				t.Fatalf("events %q, want the partial READY mp4", events.IDs())
			}
			if out := evs[0].GetOutputs(); !out.GetPartial() || out.GetMp4Key() != tt.key || len(out.GetRenditions()) > 0 || out.GetBucket() != outputsBucket {
				t.Errorf("outputs %v", out)
			}
			put, ok := objects.Latest(tt.key)
			if !ok {
				t.Fatalf("%s not stored", tt.key)
			}
			file := filepath.Join(t.TempDir(), "download.mp4")
			if err := os.WriteFile(file, []byte(put.Body), 0o644); err != nil {
				t.Fatal(err)
			}
			probe := func(args ...string) string {
				out, err := exec.CommandContext(t.Context(), "ffprobe", append(append([]string{"-v", "error"}, args...), "-of", "csv=p=0", file)...).Output()
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(out))
			}
			if got := probe("-show_entries", "stream=codec_name,codec_type"); got != tt.streams {
				t.Errorf("streams %q, want %q", got, tt.streams)
			}
			if d := probe("-show_entries", "format=duration"); !strings.HasPrefix(d, "3.0") && !strings.HasPrefix(d, "2.9") {
				t.Errorf("duration %s, want 3 s", d)
			}
			// Faststart: the index before the media data.
			if m, d := strings.Index(put.Body, "moov"), strings.Index(put.Body, "mdat"); m < 0 || d < 0 || m > d {
				t.Errorf("moov at %d, mdat at %d: not faststart", m, d)
			}
			if left, _ := os.ReadDir(work); len(left) > 0 {
				t.Errorf("work dir not cleaned up: %v", left)
			}
		})
	}
	t.Run("segments deleted", func(t *testing.T) {
		objects := &fakes.Objects{}
		h := packager.New(packager.Config{FFmpeg: ffmpeg.New(ffmpeg.Config{}), Objects: objects, Events: &fakes.Events{},
			OutputsBucket: outputsBucket, WorkDir: t.TempDir()})
		fakes.WantPermanent(t, h.Package(t.Context(), asTask(t, downloadTask(false))), failure.PackageFailed)
	})
}
