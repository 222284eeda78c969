// Package tasks defines kiln's asynq commands: task types, queues, payload
// constructors, failure classification and the job-event helper shared by
// the stages that run them (workers, packager).
package tasks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Task types.
const (
	TypeProbe     = "kiln:probe"
	TypeTranscode = "kiln:transcode"
	TypeThumbnail = "kiln:thumbnail"
	TypePackage   = "kiln:package"
)

// Queues, one per stage, so a long transcode cannot starve short stages.
const (
	QueueProbe     = "probe"
	QueueTranscode = "transcode"
	QueueThumbnail = "thumbnail"
	QueuePackage   = "package"
	// QueueWebhook carries webhook deliveries (catalog/webhooks).
	QueueWebhook = "webhook"
)

// QueueWeights are the asynq priorities of the stage queues: short stages
// that unblock a job's next step win over long transcodes.
func QueueWeights() map[string]int {
	return map[string]int{QueueProbe: 6, QueueWebhook: 5, QueuePackage: 4, QueueThumbnail: 3, QueueTranscode: 2}
}

// Retention keeps a finished task's id for deduplication of repeated
// enqueues (at-least-once event delivery).
const Retention = 24 * time.Hour

// Enqueuer is the part of *asynq.Client that stages use.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

var _ Enqueuer = (*asynq.Client)(nil)

// Decode unmarshals a task payload, classifying a malformed payload as
// permanent.
func Decode(t *asynq.Task, m proto.Message) error {
	if err := proto.Unmarshal(t.Payload(), m); err != nil {
		return Permanent("internal", "malformed task payload", err)
	}
	return nil
}

// Job returns the job and asset ids of any kiln task. Every task payload
// message begins with the fields of kilnv1.TaskHead, so one decoder reads them all.
func Job(t *asynq.Task) (jobID, assetID string) {
	head := taskHead(t)
	return head.GetJobId(), head.GetAssetId()
}

// Error is a job failure with a machine-readable reason code.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Code + ": " + e.Message
	}
	return e.Code + ": " + e.Message + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Permanent is a failure that retrying cannot fix (bad input): the task is
// not retried and the job fails with code.
func Permanent(code, message string, err error) error {
	return fmt.Errorf("%w: %w", &Error{Code: code, Message: message, Err: err}, asynq.SkipRetry)
}

// Publisher publishes job events (the bus).
type Publisher interface {
	PublishJobEvent(ctx context.Context, ev *kilnv1.JobEvent) error
}

// RetryDelay is the asynq RetryDelayFunc of every stage: 10 s doubling per
// attempt up to 10 min, with ±20 % jitter. Media tasks fail for transient
// reasons (S3 or Redis blips, a worker lost) that clear in seconds, not the
// minutes of asynq's default n⁴ backoff.
func RetryDelay(n int, _ error, _ *asynq.Task) time.Duration {
	d := 10 * time.Second << min(n, 6)
	d = min(d, 10*time.Minute)
	jitter := time.Duration(rand.Int64N(int64(d)/5*2)) - d/5
	return d + jitter
}
