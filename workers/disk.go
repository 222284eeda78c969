package workers

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// ErrNoSpace means the work folder lacks the room a task needs right now:
// an infrastructure error, retried later (maybe on another worker).
var ErrNoSpace = errors.New("not enough free disk in the work dir")

// EncodedBytes estimates the temp disk a transcode writes: every rung at
// its maximum rate plus audio, over the duration, with 10 % container
// overhead.
func EncodedBytes(plan *kilnv1.Plan, duration float64) int64 {
	var bps float64
	for _, r := range plan.GetRungs() {
		bps += float64(r.VideoBitRate) * 1.2 // -maxrate
		if plan.HasAudio {
			bps += float64(plan.AudioBitRate)
		}
	}
	if plan.GetAudioOnly() {
		bps = float64(plan.AudioBitRate)
	}
	return int64(bps / 8 * max(duration, 1) * 1.1)
}

// checkDisk bounds a task's temp disk: over the per-task limit is a
// permanent failure; over the free space now is a retryable one.
func checkDisk(dir string, need, limit int64) error {
	if limit > 0 && need > limit {
		return tasks.Permanent(failure.TooLarge, fmt.Sprintf("encoding needs about %d bytes of temp disk; the limit is %d", need, limit), nil)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < need {
		return fmt.Errorf("%w: need %d bytes, %d free", ErrNoSpace, need, free)
	}
	return nil
}
