package fakes

import (
	"context"
	"errors"
	"fmt"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
)

// Errors a fake ffmpeg fails with, as *ffmpeg.Runner reports them.

// ExitError is program (ffmpeg, ffprobe) exiting non-zero on input it
// cannot read: the input's fault.
func ExitError(program string) error {
	return &ffmpeg.ExitError{Program: program, Err: errors.New("exit status 1"), Stderr: "Invalid data found when processing input"}
}

// SignaledError is ffmpeg killed by a signal (e.g. the OOM killer).
func SignaledError() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: errors.New("signal: killed"), Signaled: true}
}

// DeadlineError is ffmpeg killed because the task's time limit passed.
func DeadlineError() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: fmt.Errorf("%w: %w", context.DeadlineExceeded, errors.New("signal: killed")), Signaled: true}
}

// CanceledExitError is a non-zero exit while the context was canceled (not
// flagged as signaled): still not the input's fault.
func CanceledExitError() error {
	return &ffmpeg.ExitError{Program: "ffmpeg", Err: fmt.Errorf("%w: %w", context.Canceled, errors.New("exit status 255"))}
}
