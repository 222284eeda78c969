package tasks_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// flakyBus fails its first failures publishes, like a NATS server that is
// restarting, then records.
type flakyBus struct {
	failures int32
	calls    atomic.Int32
	got      []*kilnv1.JobEvent
}

func (b *flakyBus) PublishJobEvent(_ context.Context, ev *kilnv1.JobEvent) error {
	if b.calls.Add(1) <= b.failures {
		return errors.New("nats: connection closed")
	}
	b.got = append(b.got, ev)
	return nil
}

// A job's FAILED event is published even when the bus is down for a
// moment when the task fails for good: the failure handler retries.
func TestFailureHandlerWaitsForTheBus(t *testing.T) {
	bus := &flakyBus{failures: 2}
	h := &tasks.FailureHandler{Events: bus, Logger: zaptest.NewLogger(t)}
	task := asynq.NewTask(tasks.TypeProbe, mustMarshal(t, fakes.ProbeTask("job-bus", 1)))
	h.HandleError(t.Context(), task, tasks.Permanent("invalid_media", "no decodable video stream", errors.New("moov atom not found")))
	if len(bus.got) != 1 || bus.got[0].GetError().GetCode() != "invalid_media" {
		t.Fatalf("published %v after %d calls, want the FAILED with invalid_media", bus.got, bus.calls.Load())
	}
}
