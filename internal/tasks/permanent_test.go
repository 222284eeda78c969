package tasks_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/tasks"
)

func TestPermanent(t *testing.T) {
	cause := errors.New("moov atom not found")
	err := tasks.Permanent("invalid_media", "the file is not a video", cause)
	if !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("Permanent does not wrap asynq.SkipRetry: %v", err)
	}
	if !errors.Is(err, cause) {
		t.Errorf("Permanent does not wrap its cause: %v", err)
	}
	var te *failure.Error
	if !errors.As(err, &te) {
		t.Fatalf("Permanent does not wrap *failure.Error: %v", err)
	}
	if te.Code != "invalid_media" || te.Message != "the file is not a video" || te.Err != cause {
		t.Errorf("*failure.Error = %+v", te)
	}
	if got, want := te.Error(), "invalid_media: the file is not a video: moov atom not found"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	// Still permanent and classified when wrapped again by a caller.
	wrapped := fmt.Errorf("probe: %w", tasks.Permanent("too_long", "over the limit", nil))
	if !errors.Is(wrapped, asynq.SkipRetry) || !errors.As(wrapped, &te) || te.Code != "too_long" {
		t.Errorf("wrapped Permanent lost its classification: %v", wrapped)
	}
	if got, want := te.Error(), "too_long: over the limit"; got != want {
		t.Errorf("Error() without cause = %q, want %q", got, want)
	}
	// A canceled job is permanent and recognisable.
	canceled := tasks.Permanent("canceled", "the job was canceled", failure.ErrCanceled)
	if !errors.Is(canceled, failure.ErrCanceled) || !errors.Is(canceled, asynq.SkipRetry) {
		t.Errorf("tasks.Permanent(failure.ErrCanceled) = %v", canceled)
	}
}
