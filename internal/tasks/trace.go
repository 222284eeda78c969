package tasks

import (
	"context"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnvideo/kiln/internal/tracing"
)

// Tracing is the worker middleware that gives every task run a span,
// named by its task type (kiln:probe…): for a stage task it is a child of
// the span that enqueued the task (its payload's trace_context), with the
// job, asset and attempt as attributes, so each stage continues the
// upload's trace. Put it first, so that what the other middlewares drop
// (a canceled job, a held lease) is traced too. tp nil or a no-op
// provider: next as is.
func Tracing(tp trace.TracerProvider) asynq.MiddlewareFunc {
	if !tracing.Enabled(tp) {
		return func(next asynq.Handler) asynq.Handler { return next }
	}
	tracer := tp.Tracer("github.com/kilnvideo/kiln/internal/tasks")
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			attrs := []attribute.KeyValue{attribute.String("kiln.task.type", t.Type())}
			if id, ok := asynq.GetTaskID(ctx); ok {
				attrs = append(attrs, attribute.String("kiln.task.id", id))
			}
			if q, ok := asynq.GetQueueName(ctx); ok {
				attrs = append(attrs, attribute.String("kiln.task.queue", q))
			}
			if n, ok := asynq.GetRetryCount(ctx); ok {
				attrs = append(attrs, attribute.Int("kiln.task.retried", n))
			}
			if _, stage := StageOf(t.Type()); stage {
				jobID, assetID, attempt := Head(t)
				attrs = append(attrs, tracing.AttrJobID.String(jobID), tracing.AttrAssetID.String(assetID),
					tracing.AttrAttempt.Int(int(attempt)))
			}
			ctx, span := tracer.Start(TraceContext(ctx, t), t.Type(), trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(attrs...))
			defer span.End()
			err := next.ProcessTask(ctx, t)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		})
	}
}
