package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/tasks"
)

func TestWorkContext(t *testing.T) {
	for _, tt := range []struct{ left, margin time.Duration }{
		{2 * time.Second, time.Second},       // half of what is left
		{2 * time.Minute, 12 * time.Second},  // a tenth
		{30 * time.Second, 10 * time.Second}, // at least 10 s
		{10 * time.Hour, time.Minute},        // at most a minute
	} {
		parent, cancel := context.WithTimeout(t.Context(), tt.left)
		work, cancelWork := tasks.WorkContext(parent)
		pd, _ := parent.Deadline()
		wd, ok := work.Deadline()
		if got := pd.Sub(wd); !ok || (got-tt.margin).Abs() > 10*time.Millisecond {
			t.Errorf("%v left: margin %v, want %v", tt.left, got, tt.margin)
		}
		cancelWork()
		cancel()
	}
	if _, ok := func() (time.Time, bool) { w, c := tasks.WorkContext(t.Context()); defer c(); return w.Deadline() }(); ok {
		t.Error("a deadline without one on the task")
	}
}

// TestLimitRetries: a run out of time or memory is retried once, then
// permanent with timeout or resources_exhausted; anything else is left as
// it is.
func TestLimitRetries(t *testing.T) {
	oom := &ffmpeg.ExitError{Program: "ffmpeg", Err: errors.New("exit status 1"), Stderr: "Error while decoding stream #0:0: Cannot allocate memory\n"}
	other := errors.New("s3: connection reset")
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	killed := &ffmpeg.ExitError{Program: "ffmpeg", Err: fmt.Errorf("%w: %w", context.DeadlineExceeded, errors.New("signal: killed")), Signaled: true}
	live := context.Background()
	for _, tt := range []struct {
		name    string
		work    context.Context
		err     error
		retried int
		code    string // "": err unchanged
	}{
		{"timeout, first run", expired, killed, 0, ""},
		{"timeout, the retry", expired, killed, 1, failure.Timeout},
		{"out of memory, first run", live, oom, 0, ""},
		{"out of memory, the retry", live, oom, 3, failure.ResourcesExhausted},
		{"out of memory, wrapped", live, fmt.Errorf("package 720p: %w", oom), 1, failure.ResourcesExhausted},
		{"other error, the retry", live, other, 1, ""},
		{"nil", live, nil, 1, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tasks.LimitRetries(tt.retried, t.Context(), tt.work, tt.err)
			if tt.code == "" {
				if got != tt.err {
					t.Fatalf("got %v, want %v unchanged", got, tt.err)
				}
				return
			}
			if code, _ := failure.CodeOf(got); code != tt.code || !errors.Is(got, asynq.SkipRetry) {
				t.Fatalf("got %v (%s), want permanent %s", got, code, tt.code)
			}
		})
	}
}
