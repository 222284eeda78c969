package fakes

import (
	"context"
	"fmt"
	"sync"

	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/tasks"
)

var _ cancel.Checker = (*Jobs)(nil)

// Jobs is the cancel state (a cancel.Checker): every job runs until Cancel
// is called (typically from a fake ffmpeg's hook: while the stage works),
// then every check reports it canceled.
type Jobs struct {
	mu       sync.Mutex
	canceled bool
	checks   []string
}

// Cancel cancels every job.
func (j *Jobs) Cancel() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.canceled = true
}

// Check records the check and returns the permanent canceled error once
// Cancel was called, nil before.
func (j *Jobs) Check(_ context.Context, jobID string, attempt int32) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.checks = append(j.checks, fmt.Sprintf("%s/%d", jobID, attempt))
	if j.canceled {
		return tasks.Permanent(failure.Canceled, failure.MessageCanceled, failure.ErrCanceled)
	}
	return nil
}

// Checks are the checks so far ("job/attempt"), in order.
func (j *Jobs) Checks() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.checks...)
}
