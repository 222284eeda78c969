package cancel_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

type cancelAll struct{ checked []string }

func (c *cancelAll) Check(_ context.Context, jobID string, attempt int32) error {
	c.checked = append(c.checked, fmt.Sprintf("%s@%d", jobID, attempt))
	return tasks.Permanent("canceled", "the job was canceled", failure.ErrCanceled)
}

func TestCancelMiddleware(t *testing.T) {
	c := &cancelAll{}
	ran := 0
	h := cancel.Middleware(c)(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { ran++; return nil }))
	payload, _ := proto.Marshal(&kilnv1.TranscodeTask{JobId: "job-m", AssetId: "ast-m", Attempt: 2,
		Plan: &kilnv1.Plan{Rungs: []*kilnv1.Rung{{Name: "360p"}}}})
	if err := h.ProcessTask(t.Context(), asynq.NewTask(tasks.TypeTranscode, payload)); !errors.Is(err, failure.ErrCanceled) || !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("canceled stage task: err = %v", err)
	}
	if ran != 0 || len(c.checked) != 1 || c.checked[0] != "job-m@2" {
		t.Fatalf("handler ran %d times, checked %v", ran, c.checked)
	}
	// Other task types (webhook deliveries) are not stage tasks.
	if err := h.ProcessTask(t.Context(), asynq.NewTask("kiln:webhook", []byte(`{"x":1}`))); err != nil || ran != 1 || len(c.checked) != 1 {
		t.Fatalf("non-stage task: err %v, ran %d, checked %v", err, ran, c.checked)
	}
}
