package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// A job runs once per attempt: attempt 1 (or 0, from producers that predate
// attempts) is the first run; POST /v1/jobs/{id}/retry starts the next one.
// Task ids and event ids of attempt 1 are unchanged; later attempts get their
// own, so a retry is neither deduplicated against the earlier run's retained
// tasks (asynq) nor its events (JetStream's duplicate window).

// normAttempt maps 0 (unset) to 1.
func normAttempt(attempt int32) int32 { return max(attempt, 1) }

// TaskID is the asynq TaskID of a stage task of one attempt of a job.
func TaskID(typ, jobID string, attempt int32) string {
	if a := normAttempt(attempt); a > 1 {
		return typ + ":" + jobID + ":a" + strconv.Itoa(int(a))
	}
	return typ + ":" + jobID
}

// Enqueue enqueues a stage task of one attempt of a job with a TaskID
// derived from the stage, job and attempt (TaskID above), so repeated
// enqueues collapse into one while a retried job gets fresh tasks. A
// duplicate is not an error.
func Enqueue(ctx context.Context, q Enqueuer, typ, queue, jobID string, attempt int32, payload proto.Message, timeout time.Duration) error {
	return enqueue(ctx, q, typ, queue, TaskID(typ, jobID, attempt), payload, timeout)
}

// enqueue enqueues payload as a task of type typ under the given TaskID; a
// duplicate is not an error.
func enqueue(ctx context.Context, q Enqueuer, typ, queue, id string, payload proto.Message, timeout time.Duration) error {
	data, err := proto.Marshal(payload)
	if err != nil {
		return fmt.Errorf("tasks: marshal %s: %w", typ, err)
	}
	_, err = q.EnqueueContext(ctx, asynq.NewTask(typ, data),
		asynq.TaskID(id),
		asynq.Queue(queue),
		asynq.MaxRetry(8),
		asynq.Timeout(timeout),
		asynq.Retention(Retention),
	)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tasks: enqueue %s: %w", id, err)
	}
	return nil
}

// Event builds a job event of one attempt of the job: the event carries the
// attempt, and its id is distinct per attempt.
func Event(jobID, assetID string, attempt int32, state kilnv1.JobState, fact string) *kilnv1.JobEvent {
	a := normAttempt(attempt)
	id := jobID + "." + fact
	if a > 1 {
		id = jobID + ".a" + strconv.Itoa(int(a)) + "." + fact
	}
	return &kilnv1.JobEvent{
		EventId: id,
		JobId:   jobID,
		AssetId: assetID,
		State:   state,
		Time:    timestamppb.Now(),
		Attempt: a,
	}
}

// taskHead reads the job, asset and attempt of any kiln task payload.
func taskHead(t *asynq.Task) *kilnv1.TaskHead {
	var head kilnv1.TaskHead
	_ = proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(t.Payload(), &head)
	return &head
}

// Attempt returns the attempt of any kiln task (1 when unset).
func Attempt(t *asynq.Task) int32 { return normAttempt(taskHead(t).GetAttempt()) }
