package packager_test

// The fake ffmpeg of the handler unit tests; the fakes of the other
// dependencies (object storage, the event bus, the cancel state) are in
// internal/fakes.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/packager"
)

var _ packager.FFmpeg = (*fakeFFmpeg)(nil)

// fakeFFmpeg stands in for *ffmpeg.Runner. Run writes the HLS output of
// packager.HLSArgs (the playlist is the last argument; init and segments go
// next to it); Probe describes an encoded rung (H.264 High 3.0 + AAC-LC, or
// AAC-LC alone for an .m4a).
type fakeFFmpeg struct {
	mu     sync.Mutex
	runs   []string // inputs
	probes []string

	// fail and failProbe decide the error of a Run or Probe of input; nil:
	// success.
	fail      func(input string) error
	failProbe func(input string) error
	// streams, when set, replaces the probed streams of input.
	streams func(input string) []ffmpeg.ProbeStream
	// during runs inside every Run (e.g. a cancel arriving meanwhile).
	during func()
}

// The fake HLS output: 6 s of 6000 bytes and 4 s of 2000 bytes.
const (
	fakePeak     = 6000 * 8 / 6
	fakeAverage  = (6000 + 2000) * 8 / 10
	fakePlaylist = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init.mp4"
#EXTINF:6.000000,
seg_00001.m4s
#EXTINF:4.000000,
seg_00002.m4s
#EXT-X-ENDLIST
`
)

// fakeInit is an init segment whose avcC box says High (0x64), no
// constraint flags, level 3.1 (0x1f).
var fakeInit = []byte("\x00\x00\x00\x18ftypiso6\x00\x00\x00\x00\x00\x00\x00\x13avcC\x01\x64\x00\x1f\xff")

func (f *fakeFFmpeg) Run(_ context.Context, args []string, _ func(ffmpeg.Progress)) error {
	in := fakes.Input(args)
	f.mu.Lock()
	f.runs = append(f.runs, in)
	f.mu.Unlock()
	if f.during != nil {
		f.during()
	}
	if f.fail != nil {
		if err := f.fail(in); err != nil {
			return err
		}
	}
	dir := filepath.Dir(args[len(args)-1])
	files := map[string][]byte{
		layout.InitFile:     fakeInit,
		"seg_00001.m4s":     bytes.Repeat([]byte{1}, 6000),
		"seg_00002.m4s":     bytes.Repeat([]byte{2}, 2000),
		layout.PlaylistFile: []byte(fakePlaylist),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeFFmpeg) Probe(_ context.Context, input string, _ ffmpeg.ProbeOptions) (*ffmpeg.ProbeResult, error) {
	f.mu.Lock()
	f.probes = append(f.probes, input)
	f.mu.Unlock()
	if f.failProbe != nil {
		if err := f.failProbe(input); err != nil {
			return nil, err
		}
	}
	aac := ffmpeg.ProbeStream{CodecType: "audio", CodecName: "aac", Profile: "LC", Channels: 2, SampleRate: 48000}
	streams := []ffmpeg.ProbeStream{{CodecType: "video", CodecName: "h264", Profile: "High", Level: 30, Width: 640, Height: 360}, aac}
	if strings.Contains(input, ".m4a") {
		streams = streams[1:]
	}
	if f.streams != nil {
		streams = f.streams(input)
	}
	return &ffmpeg.ProbeResult{Streams: streams}, nil
}

func (f *fakeFFmpeg) Runs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.runs...)
}
