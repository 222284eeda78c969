package workers

import (
	"errors"
	"testing"

	"github.com/hibiken/asynq"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func TestEncodedBytes(t *testing.T) {
	plan := &kilnv1.Plan{HasAudio: true, AudioBitRate: 128_000, Rungs: []*kilnv1.Rung{{VideoBitRate: 1_000_000}, {VideoBitRate: 500_000}}}
	// (1.2 M + 128 k + 0.6 M + 128 k) b/s / 8 × 10 s × 1.1
	if got, want := EncodedBytes(plan, 10), int64(2_056_000.0/8*10*1.1); got != want {
		t.Errorf("EncodedBytes = %d, want %d", got, want)
	}
	audio := &kilnv1.Plan{AudioOnly: true, HasAudio: true, AudioBitRate: 128_000}
	if got := EncodedBytes(audio, 0); got != int64(128_000.0/8*1*1.1) {
		t.Errorf("audio-only, zero duration: %d", got)
	}
}

func TestCheckDisk(t *testing.T) {
	dir := t.TempDir()
	if err := checkDisk(dir, 1<<10, 1<<20); err != nil {
		t.Fatalf("small task refused: %v", err)
	}
	err := checkDisk(dir, 2<<20, 1<<20)
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("over the per-task limit: %v, want a permanent error", err)
	}
	err = checkDisk(dir, 1<<62, 0)
	if !errors.Is(err, ErrNoSpace) || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("more than the disk: %v, want a retryable ErrNoSpace", err)
	}
}
