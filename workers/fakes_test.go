package workers_test

// Fakes of the workers' dependencies (ffmpeg, object storage, the event
// bus, the task queue, the cancel state) for the handler unit tests.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
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
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
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

// inputOf is the argument of -i.
func inputOf(args []string) string {
	for i, a := range args {
		if a == "-i" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
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

// Errors the fake ffmpeg fails with, as *ffmpeg.Runner reports them.
func exitErr(program string) error {
	return &ffmpeg.ExitError{Program: program, Err: errors.New("exit status 1"), Stderr: "Invalid data found when processing input"}
}

func signaledErr() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: errors.New("signal: killed"), Signaled: true}
}

// deadlineErr is a child killed because the task's time limit passed.
func deadlineErr() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: fmt.Errorf("%w: %w", context.DeadlineExceeded, errors.New("signal: killed")), Signaled: true}
}

// canceledExitErr is a non-zero exit while the context was canceled (not
// flagged as signaled): still not the input's fault.
func canceledExitErr() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: fmt.Errorf("%w: %w", context.Canceled, errors.New("exit status 255"))}
}

var _ workers.Objects = (*fakeObjects)(nil)

type putCall struct {
	Bucket, Key, ContentType string
	Body                     string
}

// fakeObjects presigns to a fake URL and records uploads (with the file's
// content at upload time).
type fakeObjects struct {
	mu        sync.Mutex
	presigned []string
	puts      []putCall
	// failPut decides the error of an upload of key; nil: success.
	failPut    func(key string) error
	presignErr error
}

func fakeURL(bucket, key string) string {
	return "https://objects.test/" + bucket + "/" + key + "?X-Amz-Signature=fake"
}

func (o *fakeObjects) PresignGet(_ context.Context, bucket, key string, _ time.Duration) (*url.URL, error) {
	o.mu.Lock()
	o.presigned = append(o.presigned, bucket+"/"+key)
	o.mu.Unlock()
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
	body, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("fake put %s: %w", key, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.puts = append(o.puts, putCall{bucket, key, contentType, string(body)})
	return nil
}

func (o *fakeObjects) Puts() []putCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]putCall(nil), o.puts...)
}

func (o *fakeObjects) put(key string) (putCall, bool) {
	for _, p := range o.Puts() {
		if p.Key == key {
			return p, true
		}
	}
	return putCall{}, false
}

var _ tasks.Publisher = (*fakeEvents)(nil)

// fakeEvents records the job events published.
type fakeEvents struct {
	mu     sync.Mutex
	events []*kilnv1.JobEvent
	err    error
}

func (e *fakeEvents) PublishJobEvent(_ context.Context, ev *kilnv1.JobEvent) error {
	if e.err != nil {
		return e.err
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

// IDs are the event ids published, in order.
func (e *fakeEvents) IDs() []string {
	var ids []string
	for _, ev := range e.Events() {
		ids = append(ids, ev.GetEventId())
	}
	return ids
}

var _ tasks.Enqueuer = (*fakeQueue)(nil)

type enqueued struct {
	Task *asynq.Task
	Opts []asynq.Option
}

// opt returns the value of the option of type typ, or nil.
func (e enqueued) opt(typ asynq.OptionType) any {
	for _, o := range e.Opts {
		if o.Type() == typ {
			return o.Value()
		}
	}
	return nil
}

// fakeQueue records enqueued tasks and their options.
type fakeQueue struct {
	mu  sync.Mutex
	got []enqueued
	err error
}

func (q *fakeQueue) EnqueueContext(_ context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if q.err != nil {
		return nil, q.err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.got = append(q.got, enqueued{task, opts})
	return &asynq.TaskInfo{Type: task.Type()}, nil
}

func (q *fakeQueue) Enqueued() []enqueued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]enqueued(nil), q.got...)
}

// fakeJobs is a cancel.Checker whose job gets canceled when cancel is
// called (typically from fakeFFmpeg.during: while the stage works).
type fakeJobs struct {
	mu       sync.Mutex
	canceled bool
	checks   []string // "job/attempt"
}

func (j *fakeJobs) cancel() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.canceled = true
}

func (j *fakeJobs) Check(_ context.Context, jobID string, attempt int32) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.checks = append(j.checks, fmt.Sprintf("%s/%d", jobID, attempt))
	if j.canceled {
		return failure.Permanent(failure.Canceled, failure.MessageCanceled, failure.ErrCanceled)
	}
	return nil
}

func (j *fakeJobs) Checks() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.checks...)
}

// wantPermanent fails unless err is a permanent failure (not retried) with
// code.
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

// wantRetryable fails unless err is cause (or wraps it) and is retried.
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

// wantCanceled fails unless err is the permanent canceled error.
func wantCanceled(t *testing.T, err error) {
	t.Helper()
	wantPermanent(t, err, failure.Canceled)
	if !errors.Is(err, failure.ErrCanceled) {
		t.Fatalf("error %v: want it to wrap failure.ErrCanceled", err)
	}
}
