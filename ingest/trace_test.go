package ingest

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/tasks"
)

// TestBucketNotificationContinuesUploadTrace: an upload leaves its
// traceparent in the object's metadata, so when its bucket notification
// (which carries no trace context of its own) starts the job, the intake
// and the probe task continue the upload's trace; the notification's own
// span is linked. Without the metadata the intake is the notification's
// child.
func TestBucketNotificationContinuesUploadTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tracer := tp.Tracer("test")
	uploadCtx, upload := tracer.Start(t.Context(), "POST /v1/uploads")
	upload.End()
	meta := uploadMeta(uploadCtx, "default", "public", "", "")
	if meta[metaTraceParent] == "" {
		t.Fatalf("upload metadata without a traceparent: %v", meta)
	}

	for _, tt := range []struct {
		name, meta string
		fromUpload bool
	}{
		{"with traceparent", `{"X-Amz-Meta-Kiln-Traceparent":"` + meta[metaTraceParent] + `"}`, true},
		{"without", `{}`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			consumerCtx, consumer := tracer.Start(t.Context(), "process kiln.s3.events")
			defer consumer.End()
			events, queue := &fakeEvents{}, &fakeQueue{}
			s := New(Config{Events: events, Queue: queue, SourcesBucket: "kiln-sources", TracerProvider: tp})
			data := event(record("s3:ObjectCreated:Put", "kiln-sources", "uploads/x/clip.mp4", "abc", tt.meta))
			if err := s.HandleMessage(consumerCtx, bus.SubjectS3Events, data); err != nil {
				t.Fatal(err)
			}
			var intake sdktrace.ReadOnlySpan
			for _, s := range rec.Ended() {
				if s.Name() == "intake" {
					intake = s
				}
			}
			if intake == nil || len(queue.tasks) != 1 {
				t.Fatalf("intake span %v, %d tasks", intake, len(queue.tasks))
			}
			parent := consumer.SpanContext()
			if tt.fromUpload {
				parent = upload.SpanContext()
				if links := intake.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != consumer.SpanContext().SpanID() {
					t.Errorf("intake links %v, want the notification's span", links)
				}
			}
			if intake.Parent().SpanID() != parent.SpanID() || intake.SpanContext().TraceID() != parent.TraceID() {
				t.Errorf("intake's parent %v, want %v", intake.Parent(), parent)
			}
			probe := trace.SpanContextFromContext(tasks.TraceContext(t.Context(), queue.tasks[0]))
			if probe.SpanID() != intake.SpanContext().SpanID() || probe.TraceID() != parent.TraceID() {
				t.Errorf("probe task's trace context %v, want the intake's %v", probe, intake.SpanContext())
			}
			rec.Reset()
		})
	}
}
