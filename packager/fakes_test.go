package packager_test

// Fakes of the packager's dependencies (ffmpeg, object storage, the event
// bus, the cancel state) for the handler unit tests.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/packager"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
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

func inputOf(args []string) string {
	for i, a := range args {
		if a == "-i" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func (f *fakeFFmpeg) Run(_ context.Context, args []string, _ func(ffmpeg.Progress)) error {
	in := inputOf(args)
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

// Errors the fake ffmpeg fails with, as *ffmpeg.Runner reports them.
func exitErr(program string) error {
	return &ffmpeg.ExitError{Program: program, Err: errors.New("exit status 1"), Stderr: "Invalid data found when processing input"}
}

func signaledErr() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: errors.New("signal: killed"), Signaled: true}
}

func deadlineErr() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: fmt.Errorf("%w: %w", context.DeadlineExceeded, errors.New("signal: killed")), Signaled: true}
}

// canceledExitErr is a non-zero exit while the context was canceled (not
// flagged as signaled): still not the rendition's fault.
func canceledExitErr() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: fmt.Errorf("%w: %w", context.Canceled, errors.New("exit status 255"))}
}

var _ packager.Objects = (*fakeObjects)(nil)

type putCall struct {
	Bucket, Key, ContentType string
	Size                     int
}

// fakeObjects presigns to a fake URL and records uploads.
type fakeObjects struct {
	mu   sync.Mutex
	puts []putCall
	// failPut decides the error of an upload of key; nil: success.
	failPut    func(key string) error
	presignErr error
}

func fakeURL(bucket, key string) string {
	return "https://objects.test/" + bucket + "/" + key + "?X-Amz-Signature=fake"
}

func (o *fakeObjects) PresignGet(_ context.Context, bucket, key string, _ time.Duration) (*url.URL, error) {
	if o.presignErr != nil {
		return nil, o.presignErr
	}
	return url.Parse(fakeURL(bucket, key))
}

func (o *fakeObjects) PutFile(_ context.Context, bucket, key, path, contentType string) error {
	if o.failPut != nil {
		if err := o.failPut(key); err != nil {
			return err
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("fake put %s: %w", key, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.puts = append(o.puts, putCall{bucket, key, contentType, int(fi.Size())})
	return nil
}

func (o *fakeObjects) Puts() []putCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]putCall(nil), o.puts...)
}

var _ tasks.Publisher = (*fakeEvents)(nil)

// fakeEvents records the job events published; fail decides the error of
// publishing ev (nil: success).
type fakeEvents struct {
	mu     sync.Mutex
	events []*kilnv1.JobEvent
	fail   func(ev *kilnv1.JobEvent) error
}

func (e *fakeEvents) PublishJobEvent(_ context.Context, ev *kilnv1.JobEvent) error {
	if e.fail != nil {
		if err := e.fail(ev); err != nil {
			return err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
	return nil
}

func (e *fakeEvents) Events() []*kilnv1.JobEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*kilnv1.JobEvent(nil), e.events...)
}

func (e *fakeEvents) IDs() []string {
	var ids []string
	for _, ev := range e.Events() {
		ids = append(ids, ev.GetEventId())
	}
	return ids
}

// fakeJobs is a cancel.Checker whose job gets canceled when cancel is
// called (typically from fakeFFmpeg.during: while the stage works).
type fakeJobs struct {
	mu       sync.Mutex
	canceled bool
	checks   int
}

func (j *fakeJobs) cancel() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.canceled = true
}

func (j *fakeJobs) Check(context.Context, string, int32) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.checks++
	if j.canceled {
		return failure.Permanent(failure.Canceled, failure.MessageCanceled, failure.ErrCanceled)
	}
	return nil
}

func wantPermanent(t *testing.T, err error, code string) {
	t.Helper()
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("error %v: want permanent (asynq.SkipRetry)", err)
	}
	var fe *failure.Error
	if !errors.As(err, &fe) || fe.Code != code {
		t.Fatalf("error %v: want code %q", err, code)
	}
}

func wantRetryable(t *testing.T, err, cause error) {
	t.Helper()
	if err == nil {
		t.Fatal("no error, want one")
	}
	if !errors.Is(err, cause) {
		t.Fatalf("error %v: want it to be %v", err, cause)
	}
	if errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("error %v: permanent, want retryable", err)
	}
	var fe *failure.Error
	if errors.As(err, &fe) {
		t.Fatalf("error %v: carries failure code %q, want none", err, fe.Code)
	}
}
