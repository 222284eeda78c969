package workers_test

// The probe's two windows: the quick read answers for files whose streams
// it completes; the full window is read only when the quick one left the
// job's streams incomplete.

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/testenv"
	"github.com/kilnvideo/kiln/workers"
)

// windowFFmpeg answers a probe by its window: quick for the quick window,
// full for any other; it records the windows asked for.
type windowFFmpeg struct {
	quick, full *ffmpeg.ProbeResult
	err         error
	windows     []ffmpeg.ProbeOptions
}

func (f *windowFFmpeg) Run(context.Context, []string, func(ffmpeg.Progress)) error {
	return errors.New("windowFFmpeg: no ffmpeg runs in a probe")
}

func (f *windowFFmpeg) Probe(_ context.Context, _ string, opts ffmpeg.ProbeOptions) (*ffmpeg.ProbeResult, error) {
	f.windows = append(f.windows, opts)
	if opts.ProbeSize == workers.QuickProbeSize && opts.AnalyzeDuration == workers.QuickAnalyzeDuration {
		return f.quick, f.err
	}
	return f.full, f.err
}

func TestProbeReadsTheFullWindowOnlyWhenTheQuickOneFallsShort(t *testing.T) {
	full := probeResult(10)
	with := func(edit func(*ffmpeg.ProbeResult)) *ffmpeg.ProbeResult {
		r := probeResult(10)
		r.Streams = append([]ffmpeg.ProbeStream(nil), r.Streams...)
		edit(r)
		return r
	}
	cover := ffmpeg.ProbeStream{Index: 2, CodecType: "video", CodecName: "png", AttachedPic: true}
	for _, tc := range []struct {
		name      string
		quick     *ffmpeg.ProbeResult
		wantFull  bool
		wantAudio int32 // sample rate of the probed event's audio
	}{
		{"complete", full, false, 48000},
		{"video only", with(func(r *ffmpeg.ProbeResult) { r.Streams = r.Streams[:1] }), false, 0},
		{"audio only", with(func(r *ffmpeg.ProbeResult) { r.Streams = r.Streams[1:] }), false, 48000},
		{"cover art without parameters", with(func(r *ffmpeg.ProbeResult) { r.Streams = append(r.Streams, cover) }), false, 48000},
		{"duration of a stream", with(func(r *ffmpeg.ProbeResult) { r.Format.Duration, r.Streams[0].Duration = 0, 10 }), false, 48000},
		{"no streams yet", with(func(r *ffmpeg.ProbeResult) { r.Streams = nil }), true, 48000},
		{"no picture size", with(func(r *ffmpeg.ProbeResult) { r.Streams[0].Width, r.Streams[0].Height = 0, 0 }), true, 48000},
		{"no pixel format", with(func(r *ffmpeg.ProbeResult) { r.Streams[0].PixFmt = "" }), true, 48000},
		{"no frame rate", with(func(r *ffmpeg.ProbeResult) { r.Streams[0].RFrameRate, r.Streams[0].AvgFrameRate = "0/0", "0/0" }), true, 48000},
		{"audio not started", with(func(r *ffmpeg.ProbeResult) { r.Streams[1].SampleRate, r.Streams[1].Channels = 0, 0 }), true, 48000},
		{"no channels", with(func(r *ffmpeg.ProbeResult) { r.Streams[1].Channels = 0 }), true, 48000},
		{"audio not decoded", with(func(r *ffmpeg.ProbeResult) { r.Streams[1].SampleFmt = "" }), true, 48000},
		{"no duration", with(func(r *ffmpeg.ProbeResult) { r.Format.Duration = 0 }), true, 48000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ff := &windowFFmpeg{quick: tc.quick, full: full}
			x := newHarness(t, func(c *workers.Config) { c.FFmpeg = ff })
			if err := x.h.Probe(t.Context(), probeTask(t, "")); err != nil {
				t.Fatal(err)
			}
			want := []ffmpeg.ProbeOptions{{ProbeSize: workers.QuickProbeSize, AnalyzeDuration: workers.QuickAnalyzeDuration}}
			if tc.wantFull {
				want = append(want, ffmpeg.ProbeOptions{ProbeSize: workers.ProbeSize, AnalyzeDuration: workers.AnalyzeDuration})
			}
			if len(ff.windows) != len(want) {
				t.Fatalf("%d probes, want %d", len(ff.windows), len(want))
			}
			for i, o := range ff.windows {
				if o.ProbeSize != want[i].ProbeSize || o.AnalyzeDuration != want[i].AnalyzeDuration {
					t.Errorf("probe %d window %d bytes, %v; want %d bytes, %v", i, o.ProbeSize, o.AnalyzeDuration, want[i].ProbeSize, want[i].AnalyzeDuration)
				}
				if o.FormatWhitelist != workers.FormatWhitelist || o.ProtocolWhitelist != workers.ProtocolWhitelist ||
					o.ReadTimeout != workers.ReadTimeout || o.Headers != workers.PinHeaders("") {
					t.Errorf("probe %d options %+v: want the untrusted-input bounds", i, o)
				}
			}
			evs := x.events.Events()
			if got := evs[len(evs)-1].GetMedia().GetAudio().GetSampleRate(); got != tc.wantAudio {
				t.Errorf("probed audio at %d Hz, want %d", got, tc.wantAudio)
			}
		})
	}
}

// A failed quick read is the probe's failure: no second read of a source
// that does not open.
func TestProbeFailureReadsOnce(t *testing.T) {
	ff := &windowFFmpeg{err: errors.New("ffprobe: start: no such file")}
	x := newHarness(t, func(c *workers.Config) { c.FFmpeg = ff })
	if err := x.h.Probe(t.Context(), probeTask(t, "")); err == nil {
		t.Fatal("probe of a failing source succeeded")
	}
	if len(ff.windows) != 1 {
		t.Errorf("%d probes of a failing source, want 1", len(ff.windows))
	}
}

// TestProbeLateAudio: sources whose audio starts 7 s in, after the quick
// window (5 s). ffprobe in the quick window reports the audio from the
// container alone: an MPEG-TS or MPEG-PS lists the stream at 0 Hz and 0
// channels, an FLV claims 44.1 kHz stereo for 48 kHz mono AAC. The probe
// must read on and report the decoded stream.
func TestProbeLateAudio(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	for _, tc := range []struct{ name, video, audio string }{
		{"late.ts", "libx264", "aac"},
		{"late.mpg", "mpeg2video", "mp2"},
		{"late.flv", "libx264", "aac"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), tc.name)
			run(t, "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y",
				"-f", "lavfi", "-i", "testsrc2=s=160x90:r=25:d=10", "-itsoffset", "7", "-f", "lavfi", "-i", "sine=sample_rate=48000:d=3",
				"-map", "0:v", "-map", "1:a", "-c:v", tc.video, "-pix_fmt", "yuv420p", "-c:a", tc.audio, file)
			quick := ffprobeOut(t, file, "-probesize", strconv.Itoa(workers.QuickProbeSize),
				"-analyzeduration", strconv.FormatInt(workers.QuickAnalyzeDuration.Microseconds(), 10),
				"-select_streams", "a", "-show_entries", "stream=sample_rate,channels")
			if strings.Contains(quick, "48000,1") {
				t.Fatalf("the quick window already decodes the audio (%q): the clip does not test the full window", quick)
			}
			events := &fakes.Events{}
			h := workers.New(workers.Config{
				FFmpeg:  ffmpeg.New(ffmpeg.Config{Logger: zaptest.NewLogger(t)}),
				Objects: presignTo{&fakes.Objects{}, serve(t, file)}, Events: events, Queue: &fakes.Queue{},
				HTTPClient: &http.Client{Timeout: 5 * time.Second}, OutputsBucket: outputsBucket, WorkDir: t.TempDir(),
			})
			if err := h.Probe(t.Context(), probeTask(t, "")); err != nil {
				t.Fatal(err)
			}
			evs := events.Events()
			media := evs[len(evs)-1].GetMedia()
			if a := media.GetAudio(); a.GetSampleRate() != 48000 || a.GetChannels() != 1 || a.GetIndex() != 1 {
				t.Errorf("probed audio %v, want stream 1, 48000 Hz mono (the quick window said %q)", a, quick)
			}
			if v := media.GetVideo(); v.GetWidth() != 160 || v.GetHeight() != 90 || v.GetIndex() != 0 {
				t.Errorf("probed video %v, want stream 0, 160x90", v)
			}
		})
	}
}
