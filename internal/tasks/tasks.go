// Package tasks declares kiln's commands: the asynq task of each pipeline
// stage (type, queue, time limit, retry policy) in one table, a constructor
// per task in the style of asynq's README (TypeX, NewXTask), the decoding of
// any task's head, the retry backoff and the failure handler every stage
// shares.
package tasks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/tracing"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Task types of the pipeline stages.
const (
	TypeProbe     = "kiln:probe"
	TypeTranscode = "kiln:transcode"
	TypePackage   = "kiln:package"
	// A chunked transcode (Plan.chunking) is many tasks: one per chunk of
	// the video, and the track (the audio and the stills) beside them.
	TypeTranscodeChunk = "kiln:transcode:chunk"
	TypeTranscodeTrack = "kiln:transcode:track"
)

// Queues, one per stage, so a long transcode cannot starve short stages.
const (
	QueueProbe     = "probe"
	QueueTranscode = "transcode"
	QueuePackage   = "package"
	// QueueWebhook carries webhook deliveries (catalog/webhooks).
	QueueWebhook = "webhook"
)

// Stage is one pipeline stage's command: everything an enqueue needs
// besides the payload.
type Stage struct {
	Type  string
	Queue string
	// Timeout is the time limit of one run; the transcode's grows with the
	// source (TranscodeTimeout).
	Timeout time.Duration
	// MaxRetry is how often a failed run is retried (RetryDelay apart)
	// before the job fails.
	MaxRetry int
}

// Time limits of the stages with a fixed one.
const (
	ProbeTimeout   = 2 * time.Minute
	PackageTimeout = 15 * time.Minute
)

// stageRetries is every stage's MaxRetry.
const stageRetries = 8

// stages is the table of pipeline stages, in pipeline order.
var stages = [...]Stage{
	{Type: TypeProbe, Queue: QueueProbe, Timeout: ProbeTimeout, MaxRetry: stageRetries},
	{Type: TypeTranscode, Queue: QueueTranscode, Timeout: 10 * time.Minute, MaxRetry: stageRetries},
	{Type: TypePackage, Queue: QueuePackage, Timeout: PackageTimeout, MaxRetry: stageRetries},
	// The parts of a chunked transcode, in its queue.
	{Type: TypeTranscodeChunk, Queue: QueueTranscode, Timeout: 10 * time.Minute, MaxRetry: stageRetries},
	{Type: TypeTranscodeTrack, Queue: QueueTranscode, Timeout: 10 * time.Minute, MaxRetry: stageRetries},
}

// Stages returns the pipeline stages in pipeline order.
func Stages() []Stage { return stages[:] }

// StageOf returns the stage whose task type is typ.
func StageOf(typ string) (Stage, bool) {
	for _, s := range stages {
		if s.Type == typ {
			return s, true
		}
	}
	return Stage{}, false
}

// QueueWeights are the asynq priorities of the queues: short stages that
// unblock a job's next step win over long transcodes.
func QueueWeights() map[string]int {
	return map[string]int{QueueProbe: 6, QueueWebhook: 5, QueuePackage: 4, QueueTranscode: 2}
}

// Retention keeps a finished task's id for deduplication of repeated
// enqueues (at-least-once event delivery).
const Retention = 24 * time.Hour

// TranscodeTimeout bounds a transcode by the source duration.
func TranscodeTimeout(m *kilnv1.MediaInfo) time.Duration {
	return 10*time.Minute + time.Duration(m.GetDurationSeconds()*20*float64(time.Second))
}

// A job runs once per attempt: attempt 1 (or 0, from producers that predate
// attempts) is the first run; POST /v1/jobs/{id}/retry starts the next one.
// Task ids of attempt 1 are unchanged; later attempts get their own, so a
// retry is not deduplicated against the earlier run's retained tasks.

// NormAttempt maps 0 (unset) to 1.
func NormAttempt(attempt int32) int32 { return max(attempt, 1) }

// TaskID is the asynq TaskID of a stage task of one attempt of a job:
// repeated enqueues of the same stage of the same attempt collapse into one.
func TaskID(typ, jobID string, attempt int32) string {
	if a := NormAttempt(attempt); a > 1 {
		return typ + ":" + jobID + ":a" + strconv.Itoa(int(a))
	}
	return typ + ":" + jobID
}

// The constructors take the context of the code that enqueues: its trace
// context, when it has one, goes into the payload (trace_context), so the
// stage's span is a child of the enqueuer's (Tracing).

// NewProbeTask is the probe of one attempt of a job.
func NewProbeTask(ctx context.Context, p *kilnv1.ProbeTask) (Command, error) {
	return newStageTask(ctx, stages[0], TaskID(TypeProbe, p.GetJobId(), p.GetAttempt()), p, 0)
}

// NewTranscodeTask is the transcode of one attempt of a job; its time limit
// follows the probed duration.
func NewTranscodeTask(ctx context.Context, p *kilnv1.TranscodeTask) (Command, error) {
	return newStageTask(ctx, stages[1], TaskID(TypeTranscode, p.GetJobId(), p.GetAttempt()), p, TranscodeTimeout(p.GetMedia()))
}

// NewTranscodeChunkTask is chunk p.Chunk of one attempt's chunked
// transcode; its time limit follows the chunk's length.
func NewTranscodeChunkTask(ctx context.Context, p *kilnv1.TranscodeTask) (Command, error) {
	id := ChunkTaskID(p.GetJobId(), p.GetAttempt(), int(p.GetChunk()))
	c := p.GetPlan().GetChunking()
	seconds := float64(max(c.GetFrames(), c.GetLeadFrames())) / max(p.GetPlan().GetFrameRate(), 1)
	return newStageTask(ctx, stages[3], id, p, TranscodeTimeout(&kilnv1.MediaInfo{DurationSeconds: seconds}))
}

// ChunkTaskID is the TaskID of chunk i of one attempt's chunked transcode.
func ChunkTaskID(jobID string, attempt int32, i int) string {
	return TaskID(TypeTranscodeChunk, jobID, attempt) + ":" + strconv.Itoa(i)
}

// NewTranscodeTrackTask is the track (the audio and the stills, the whole
// length) of one attempt's chunked transcode.
func NewTranscodeTrackTask(ctx context.Context, p *kilnv1.TranscodeTask) (Command, error) {
	return newStageTask(ctx, stages[4], TaskID(TypeTranscodeTrack, p.GetJobId(), p.GetAttempt()), p, TranscodeTimeout(p.GetMedia()))
}

// NewPackageTask is the MP4 download of one attempt of a job, or — when p.Only
// names a rendition — retry number p.RenditionRetry of that one rendition:
// each rendition retry has its own TaskID, and repeating the same retry
// collapses into one task.
func NewPackageTask(ctx context.Context, p *kilnv1.PackageTask) (Command, error) {
	id := TaskID(TypePackage, p.GetJobId(), p.GetAttempt())
	if p.GetOnly() != "" {
		if p.GetRenditionRetry() < 1 {
			return Command{}, errors.New("tasks: rendition retry: a retry number is required")
		}
		id = fmt.Sprintf("%s:r:%s:%d", id, p.GetOnly(), p.GetRenditionRetry())
	}
	return newStageTask(ctx, stages[2], id, p, 0)
}

// Command is a task with the options it is enqueued with: its TaskID,
// queue, time limit, retries and retention, all from the stage table.
type Command struct {
	Task    *asynq.Task
	Options []asynq.Option
}

func newStageTask(ctx context.Context, st Stage, id string, payload proto.Message, timeout time.Duration) (Command, error) {
	payload, err := withTraceContext(ctx, payload)
	if err != nil {
		return Command{}, fmt.Errorf("tasks: %s: %w", st.Type, err)
	}
	data, err := proto.Marshal(payload)
	if err != nil {
		return Command{}, fmt.Errorf("tasks: marshal %s: %w", st.Type, err)
	}
	return Command{Task: asynq.NewTask(st.Type, data), Options: []asynq.Option{
		asynq.TaskID(id),
		asynq.Queue(st.Queue),
		asynq.MaxRetry(st.MaxRetry),
		asynq.Timeout(cmp.Or(timeout, st.Timeout)),
		asynq.Retention(Retention),
	}}, nil
}

// traceContextField is the number of trace_context in every task payload
// (and TaskHead).
const traceContextField = 14

// withTraceContext returns payload with the trace context of ctx in its
// trace_context field: a copy when there is one to add (the caller's
// message is left alone), payload itself when ctx carries none.
func withTraceContext(ctx context.Context, payload proto.Message) (proto.Message, error) {
	tc := tracing.Inject(ctx)
	if len(tc) == 0 {
		return payload, nil
	}
	fd := payload.ProtoReflect().Descriptor().Fields().ByNumber(traceContextField)
	if fd == nil || !fd.IsMap() || fd.Name() != "trace_context" {
		return nil, fmt.Errorf("payload %s has no trace_context = %d", payload.ProtoReflect().Descriptor().FullName(), traceContextField)
	}
	payload = proto.Clone(payload)
	m := payload.ProtoReflect().Mutable(fd).Map()
	for k, v := range tc {
		m.Set(protoreflect.ValueOfString(k).MapKey(), protoreflect.ValueOfString(v))
	}
	return payload, nil
}

// Enqueuer is the part of *asynq.Client that producers use.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

var _ Enqueuer = (*asynq.Client)(nil)

// Enqueue enqueues a command made by a NewXTask constructor. A duplicate
// (the same TaskID enqueued before: at-least-once delivery) is not an error.
func Enqueue(ctx context.Context, q Enqueuer, c Command) error {
	_, err := q.EnqueueContext(ctx, c.Task, c.Options...)
	if errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tasks: enqueue %s: %w", c.Task.Type(), err)
	}
	return nil
}

// Permanent is a failure that retrying cannot fix (bad input): the task is
// not retried (it wraps asynq.SkipRetry) and the job fails with code (one
// of the failure package's).
func Permanent(code, message string, err error) error {
	return fmt.Errorf("%w: %w", &failure.Error{Code: code, Message: message, Err: err}, asynq.SkipRetry)
}

// Decode unmarshals a task payload, classifying a malformed payload as
// permanent.
func Decode(t *asynq.Task, m proto.Message) error {
	if err := proto.Unmarshal(t.Payload(), m); err != nil {
		return Permanent(failure.Internal, "malformed task payload", err)
	}
	return nil
}

// Head reads the job, asset and attempt of any kiln stage task: every stage
// payload message begins with the fields of kilnv1.TaskHead. The attempt is
// normalised (1 when unset); a malformed payload reads as empty.
func Head(t *asynq.Task) (jobID, assetID string, attempt int32) {
	head := decodeHead(t)
	return head.GetJobId(), head.GetAssetId(), NormAttempt(head.GetAttempt())
}

func decodeHead(t *asynq.Task) *kilnv1.TaskHead {
	var head kilnv1.TaskHead
	_ = proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(t.Payload(), &head)
	return &head
}

// TraceContext returns ctx with the trace context a stage task carries (of
// the span that enqueued it) as the remote parent of the spans started from
// it; ctx as is when the task carries none or is no stage task.
func TraceContext(ctx context.Context, t *asynq.Task) context.Context {
	if _, ok := StageOf(t.Type()); !ok {
		return ctx
	}
	return tracing.Extract(ctx, decodeHead(t).GetTraceContext())
}

// RetryDelay is the asynq RetryDelayFunc of every stage: 10 s doubling per
// attempt up to 10 min, with ±20 % jitter. Media tasks fail for transient
// reasons (S3 or Redis blips, a worker lost) that clear in seconds, not the
// minutes of asynq's default n⁴ backoff. A task whose worker died (its
// lease expired, which asynq notices a minute or more later) runs again at
// once: its time was lost already.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if errors.Is(err, asynq.ErrLeaseExpired) {
		return time.Second
	}
	d := 10 * time.Second << min(n, 6)
	d = min(d, 10*time.Minute)
	jitter := time.Duration(rand.Int64N(int64(d)/5*2)) - d/5
	return d + jitter
}
