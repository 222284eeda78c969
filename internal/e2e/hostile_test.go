package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// hostileCase is one odd or hostile source: how to make it, and what kiln
// must do with it.
type hostileCase struct {
	name string
	make func(t *testing.T, dir string) string // returns the file to upload
	// wantCodes: the job must fail with one of these; empty means ready.
	wantCodes []string
	// check inspects a ready asset.
	check func(t *testing.T, s stack, job map[string]any, hls string)
}

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func hostileCases() []hostileCase {
	return []hostileCase{
		{name: "text file", wantCodes: []string{"invalid_media"},
			make: func(t *testing.T, d string) string {
				return write(t, d, "notes.mp4", []byte("hello, this is not a video\n"))
			}},
		{name: "random bytes", wantCodes: []string{"invalid_media"},
			make: func(t *testing.T, d string) string {
				b := bytes.Repeat([]byte{0x00, 0x00, 0x01, 0xba, 0x47, 0x13, 0x37}, 20000)
				return write(t, d, "random.mp4", b)
			}},
		{name: "truncated mp4 (moov at end, cut)", wantCodes: []string{"invalid_media"},
			make: func(t *testing.T, d string) string {
				full := testenv.Clip(t, testenv.ClipSpec{Name: "full.mp4", Seconds: 3})
				b, _ := os.ReadFile(full)
				return write(t, d, "truncated.mp4", b[:len(b)/2])
			}},
		{name: "hls playlist disguised as mp4 pointing at a local file", wantCodes: []string{"invalid_media"},
			make: func(t *testing.T, d string) string {
				return write(t, d, "evil.mp4", []byte("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"))
			}},
		{name: "concat script disguised as mp4", wantCodes: []string{"invalid_media"},
			make: func(t *testing.T, d string) string {
				return write(t, d, "concat.mp4", []byte("ffconcat version 1.0\nfile '/etc/passwd'\n"))
			}},
		{name: "absurd declared dimensions", wantCodes: []string{"invalid_media", "too_large", "transcode_failed"},
			make: func(t *testing.T, d string) string {
				p := testenv.Clip(t, testenv.ClipSpec{Name: "mj.avi", Seconds: 1, Width: 320, Height: 240, NoAudio: true,
					Video: []string{"-c:v", "mjpeg", "-q:v", "5"}})
				b, _ := os.ReadFile(p)
				for k := bytes.Index(b, []byte{0xff, 0xc0}); k >= 0 && k+9 < len(b); {
					copy(b[k+5:], []byte{0xc3, 0x50, 0xea, 0x60}) // SOF0 height 50000, width 60000
					next := bytes.Index(b[k+2:], []byte{0xff, 0xc0})
					if next < 0 {
						break
					}
					k += 2 + next
				}
				// …and the same in the AVI headers (avih and the stream's strf).
				if i := bytes.Index(b, []byte("avih")); i >= 0 {
					copy(b[i+40:], []byte{0x60, 0xea, 0, 0, 0x50, 0xc3, 0, 0})
				}
				if i := bytes.Index(b, []byte("strf")); i >= 0 {
					copy(b[i+12:], []byte{0x60, 0xea, 0, 0, 0x50, 0xc3, 0, 0})
				}
				return write(t, d, "absurd.avi", b)
			}},
		{name: "wider than the limit", wantCodes: []string{"too_large"},
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "wide.mp4", Source: "color=c=blue", Width: 8200, Height: 64, Rate: "1", Seconds: 1, NoAudio: true})
			}},
		{name: "unsupported codec", wantCodes: []string{"unsupported_codec"},
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "ffv.mkv", Seconds: 3, NoAudio: true, Video: []string{"-c:v", "huffyuv"}})
			}},
		// The probe checks the 320x180 stream behind a 2000x2000 PNG cover;
		// the renditions must be that stream (they used to be the cover's
		// attempt: no video at all).
		{name: "png cover before the video",
			make: func(t *testing.T, d string) string { return testenv.CoverFirstMP4(t) },
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantVideo(t, hls, "320x180", "256x144")
			}},
		// Headers claim 1 s of a 12 s file: the encode stops at the probed
		// duration (and its tolerance), and the asset's duration is the one
		// measured, which the playlist agrees with (it used to be a 12 s
		// asset recorded as lasting 1 s).
		{name: "headers claim 1 s of 12 s",
			make: func(t *testing.T, d string) string { return testenv.LyingMP4(t, 12, 1) },
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				var asset assetView
				s.do(t, http.MethodGet, "/v1/assets/"+job["asset_id"].(string), nil, "", &asset)
				out, err := exec.CommandContext(t.Context(), "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", hls).Output()
				played, perr := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
				if err != nil || perr != nil {
					t.Fatalf("ffprobe %s: %v %v", hls, err, perr)
				}
				if played > 2.5 {
					t.Errorf("the asset plays %.2f s: the encode was not bounded to the probed 1 s", played)
				}
				if math.Abs(asset.DurationSeconds-played) > 0.3 {
					t.Errorf("the catalog records %.2f s, the asset plays %.2f s", asset.DurationSeconds, played)
				}
			}},
		{name: "moov at end",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "moovend.mp4", Seconds: 3})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantVideo(t, hls, "320x180", "256x144")
			}},
		{name: "one frame",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "one.mp4", Frames: 1, NoAudio: true, Video: []string{"-c:v", "libx264", "-pix_fmt", "yuv420p"}})
			}},
		{name: "odd dimensions",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "odd.mkv", Seconds: 2, Width: 321, Height: 179, NoAudio: true,
					Video: []string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"}})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				for _, st := range ffprobeStreams(t, hls) {
					if st.CodecType == "video" && (st.Width%2 != 0 || st.Height%2 != 0) {
						t.Errorf("odd output %dx%d", st.Width, st.Height)
					}
				}
			}},
		{name: "rotated 90 (portrait phone video)",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "rot.mp4", Seconds: 2, NoAudio: true, Rotate: 90})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantNorm(t, job, "rotate", float64(90))
				for _, st := range ffprobeStreams(t, hls) {
					if st.CodecType == "video" && st.Width >= st.Height {
						t.Errorf("rotated source gave landscape output %dx%d", st.Width, st.Height)
					}
				}
			}},
		{name: "variable frame rate",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "vfr.mp4", Seconds: 4, NoAudio: true,
					ExtraArgs: []string{"-vf", "select='if(lt(t,2),1,not(mod(n,3)))'", "-vsync", "vfr"}})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantNorm(t, job, "constant_frame_rate", true)
			}},
		{name: "interlaced",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "int.mkv", Seconds: 2, Rate: "60", NoAudio: true,
					Video:     []string{"-c:v", "libx264", "-preset", "ultrafast", "-flags", "+ilme+ildct", "-x264opts", "tff=1", "-pix_fmt", "yuv420p"},
					ExtraArgs: []string{"-vf", "interlace"}})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantNorm(t, job, "deinterlace", true)
			}},
		{name: "10-bit HEVC HDR (PQ)",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "hdr.mp4", Seconds: 2, NoAudio: true,
					Video: []string{"-c:v", "libx265", "-x265-params", "log-level=error",
						"-pix_fmt", "yuv420p10le", "-color_trc", "smpte2084", "-color_primaries", "bt2020", "-colorspace", "bt2020nc"}})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantNorm(t, job, "tone_map", true)
				wantNorm(t, job, "eight_bit", true)
				wantVideo(t, hls, "320x180", "256x144")
			}},
		{name: "non-square pixels",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "anamorphic.mp4", Seconds: 2, Width: 240, Height: 180, NoAudio: true,
					ExtraArgs: []string{"-vf", "setsar=4/3"}})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantNorm(t, job, "square_pixels", true)
				wantVideo(t, hls, "320x180", "256x144")
			}},
		{name: "5.1 audio",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "surround.mp4", Seconds: 3, Tone: 300, Audio: []string{"-c:a", "aac", "-ac", "6"}})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantNorm(t, job, "downmix", true)
				if ch := audioChannels(t, hls); ch != 2 {
					t.Errorf("audio channels %d, want 2", ch)
				}
			}},
		{name: "audio only",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "song.m4a", Seconds: 3, NoVideo: true, Tone: 500})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				wantVideo(t, hls)
				if ch := audioChannels(t, hls); ch != 2 {
					t.Errorf("audio channels %d, want 2", ch)
				}
			}},
		{name: "video only",
			make: func(t *testing.T, d string) string {
				return testenv.Clip(t, testenv.ClipSpec{Name: "silent.mp4", Seconds: 3, NoAudio: true})
			},
			check: func(t *testing.T, s stack, job map[string]any, hls string) {
				if ch := audioChannels(t, hls); ch != 0 {
					t.Errorf("video-only source has audio in the output (%d channels)", ch)
				}
			}},
	}
}

// TestHostileAndOddInputs uploads every case and checks each ends as it
// must: bad input fails fast with a reason code and is not retried, odd but
// valid input comes out normalised and playable, and the workers keep going.
func TestHostileAndOddInputs(t *testing.T) {
	s := needStack(t)
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := tc.make(t, t.TempDir())
			code, up, e := s.upload(t, openFile(t, file), "application/octet-stream", "?filename="+filepath.Base(file))
			if code != http.StatusAccepted {
				t.Fatalf("upload: %d %+v", code, e)
			}
			start := time.Now()
			job := s.waitJob(t, up.JobID, 2*time.Minute)
			raw := jobJSON(t, s, up.JobID)
			if len(tc.wantCodes) > 0 {
				if job.State != "failed" || job.Error == nil {
					t.Fatalf("state %q, want failed with %v", job.State, tc.wantCodes)
				}
				if !contains(tc.wantCodes, job.Error.Code) || job.Error.Message == "" {
					t.Fatalf("failed with %q (%s), want one of %v", job.Error.Code, job.Error.Message, tc.wantCodes)
				}
				if took := time.Since(start); took > time.Minute {
					t.Errorf("bad input took %s to fail", took)
				}
				t.Logf("failed as expected: %s: %s", job.Error.Code, job.Error.Message)
				return
			}
			if job.State != "ready" {
				t.Fatalf("state %q (%+v), want ready", job.State, job.Error)
			}
			var asset assetView
			s.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset)
			if asset.Playback == nil {
				t.Fatal("ready asset without playback URLs")
			}
			decode(t, asset.Playback.HLS, "-map", "0")
			if tc.check != nil {
				tc.check(t, s, raw, asset.Playback.HLS)
			}
		})
	}
}

// TestZeroByteSources: the API refuses an empty body; an empty object put
// straight into the bucket becomes a failed job, not a stuck one.
func TestZeroByteSources(t *testing.T) {
	s := needStack(t)
	if c, _, e := s.upload(t, strings.NewReader(""), "video/mp4", ""); c != http.StatusBadRequest || e.Error.Code != "empty_upload" {
		t.Fatalf("empty upload: %d %+v", c, e)
	}
	objects, err := objstore.New(s.S3)
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("direct/empty-%d.mp4", time.Now().UnixNano())
	info, err := objects.Put(t.Context(), s.Sources, key, strings.NewReader(""), 0, "video/mp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	jobID, _ := jobid.FromObject(s.Sources, key, info.ETag)
	job := s.waitJob(t, jobID, time.Minute)
	if job.State != "failed" || job.Error == nil || job.Error.Code != "invalid_media" {
		t.Fatalf("empty object: %+v %+v", job, job.Error)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func jobJSON(t *testing.T, s stack, id string) map[string]any {
	t.Helper()
	var raw map[string]any
	if c := s.do(t, http.MethodGet, "/v1/jobs/"+id, nil, "", &raw); c != http.StatusOK {
		t.Fatalf("GET job: %d", c)
	}
	return raw
}

// wantNorm checks plan.normalisation.<field> of the job JSON.
func wantNorm(t *testing.T, job map[string]any, field string, want any) {
	t.Helper()
	plan, _ := job["plan"].(map[string]any)
	norm, _ := plan["normalisation"].(map[string]any)
	if got := norm[field]; fmt.Sprint(got) != fmt.Sprint(want) {
		b, _ := json.Marshal(plan)
		t.Errorf("plan.normalisation.%s = %v, want %v (plan %s)", field, got, want, b)
	}
}

// wantVideo checks the video sizes the HLS output offers (any order).
func wantVideo(t *testing.T, hls string, sizes ...string) {
	t.Helper()
	var got []string
	for _, st := range ffprobeStreams(t, hls) {
		if st.CodecType == "video" {
			got = append(got, fmt.Sprintf("%dx%d", st.Width, st.Height))
		}
	}
	if len(got) != len(sizes) {
		t.Errorf("video streams %v, want %v", got, sizes)
		return
	}
	for _, w := range sizes {
		if !contains(got, w) {
			t.Errorf("video streams %v, want %v", got, sizes)
		}
	}
}

func audioChannels(t *testing.T, url string) int {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "stream=channels", "-of", "csv=p=0", url).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", url, err)
	}
	var ch int
	fmt.Sscan(strings.TrimSpace(string(out)), &ch)
	return ch
}
