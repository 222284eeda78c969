package workers_test

// The fake ffmpeg of the handler unit tests; the fakes of the other
// dependencies (object storage, the event bus, the task queue, the cancel
// state) are in internal/fakes.

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/workers"
)

var _ workers.FFmpeg = (*fakeFFmpeg)(nil)

// fakeFFmpeg stands in for *ffmpeg.Runner. Run writes the outputs ffmpeg
// would (it reads them from the args: the word after "-f <format>"), unless
// fail returns an error for those args.
type fakeFFmpeg struct {
	mu     sync.Mutex
	runs   [][]string
	probes []fakeProbeCall

	probeResult *ffmpeg.ProbeResult
	probeErr    error
	// fail decides the error of a Run from its args; nil: success.
	fail func(args []string) error
	// during runs inside every Run and Probe (e.g. a cancel arriving while
	// ffmpeg works).
	during func()
	// progress is reported to a Run's progress callback, if it has one.
	progress []ffmpeg.Progress
	// frame is the picture of a JPEG output; default a lively gradient; nil
	// writes a file that is not a JPEG.
	frame func(out string) image.Image
	// thumbnails is how many t_%05d.jpg a storyboard run writes; default 3.
	// Negative: the storyboard writes nothing (a source of a few frames).
	thumbnails int
}

type fakeProbeCall struct {
	URL  string
	Opts ffmpeg.ProbeOptions
}

func (f *fakeFFmpeg) Run(ctx context.Context, args []string, progress func(ffmpeg.Progress)) error {
	f.mu.Lock()
	f.runs = append(f.runs, args)
	f.mu.Unlock()
	if f.during != nil {
		f.during()
	}
	if f.fail != nil {
		if err := f.fail(args); err != nil {
			return err
		}
	}
	if progress != nil {
		for _, p := range f.progress {
			progress(p)
		}
	}
	for _, out := range outputs(args) {
		if err := f.write(out); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeFFmpeg) Probe(ctx context.Context, input string, opts ffmpeg.ProbeOptions) (*ffmpeg.ProbeResult, error) {
	f.mu.Lock()
	f.probes = append(f.probes, fakeProbeCall{input, opts})
	f.mu.Unlock()
	if f.during != nil {
		f.during()
	}
	return f.probeResult, f.probeErr
}

func (f *fakeFFmpeg) Runs() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.runs...)
}

// outputs are the output files of an ffmpeg command line: every output is
// written with an explicit "-f <format>" right before it.
func outputs(args []string) []string {
	var out []string
	for i, a := range args {
		if a == "-f" && i+2 < len(args) {
			out = append(out, args[i+2])
		}
	}
	return out
}

func (f *fakeFFmpeg) write(out string) error {
	switch {
	case strings.Contains(filepath.Base(out), "%05d"):
		n := f.thumbnails
		if n == 0 {
			n = 3
		}
		for i := 1; i <= n; i++ {
			if err := f.write(filepath.Join(filepath.Dir(out), fmt.Sprintf(filepath.Base(out), i))); err != nil {
				return err
			}
		}
		return nil
	case f.thumbnails < 0 && filepath.Base(out) == "sprite.jpg":
		return nil
	case strings.HasSuffix(out, ".jpg"):
		img := livelyFrame()
		if f.frame != nil {
			img = f.frame(out)
		}
		if img == nil {
			return os.WriteFile(out, []byte("not a jpeg"), 0o644)
		}
		var b bytes.Buffer
		if err := jpeg.Encode(&b, img, nil); err != nil {
			return err
		}
		return os.WriteFile(out, b.Bytes(), 0o644)
	default:
		return os.WriteFile(out, []byte("encoded "+filepath.Base(out)), 0o644)
	}
}

// livelyFrame is a horizontal gradient: a good poster.
func livelyFrame() image.Image {
	img := image.NewGray(image.Rect(0, 0, 64, 36))
	for y := range 36 {
		for x := range 64 {
			img.SetGray(x, y, color.Gray{Y: uint8(x * 4)})
		}
	}
	return img
}

// blackFrame is a bad poster (a fade to black).
func blackFrame() image.Image { return image.NewGray(image.Rect(0, 0, 64, 36)) }
