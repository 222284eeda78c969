package workers_test

// The fake ffmpeg of the handler unit tests; the fakes of the other
// dependencies (object storage, the event bus, the task queue, the cancel
// state) are in internal/fakes.

import (
	"context"
	"sync"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/workers"
)

var _ workers.FFmpeg = (*fakeFFmpeg)(nil)

// fakeFFmpeg stands in for *ffmpeg.Runner where ffmpeg fails, or is not
// expected to run: Run writes nothing (the transcode's outputs are tested
// with the real ffmpeg, transcode_test.go) and returns fail's error.
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
