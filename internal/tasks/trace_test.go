package tasks_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/hibiken/asynq"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// stageCommands builds every stage's command from ctx, returning each
// payload message as given to its constructor.
func stageCommands(t *testing.T, ctx context.Context) map[string]struct {
	cmd     tasks.Command
	payload proto.Message
	decoded proto.Message // an empty message of the payload's type
} {
	t.Helper()
	out := map[string]struct {
		cmd     tasks.Command
		payload proto.Message
		decoded proto.Message
	}{}
	add := func(c tasks.Command, err error, p, empty proto.Message) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out[c.Task.Type()] = struct {
			cmd     tasks.Command
			payload proto.Message
			decoded proto.Message
		}{c, p, empty}
	}
	probe := &kilnv1.ProbeTask{JobId: "j1", AssetId: "a1", Attempt: 2}
	c, err := tasks.NewProbeTask(ctx, probe)
	add(c, err, probe, &kilnv1.ProbeTask{})
	transcode := &kilnv1.TranscodeTask{JobId: "j1", AssetId: "a1", Attempt: 2, Media: &kilnv1.MediaInfo{DurationSeconds: 3}}
	c, err = tasks.NewTranscodeTask(ctx, transcode)
	add(c, err, transcode, &kilnv1.TranscodeTask{})
	chunk := &kilnv1.TranscodeTask{JobId: "j1", AssetId: "a1", Attempt: 2, Chunk: 3,
		Plan: &kilnv1.Plan{FrameRate: 30, Chunking: &kilnv1.Chunking{Count: 5, LeadFrames: 180, Frames: 1800}}}
	c, err = tasks.NewTranscodeChunkTask(ctx, chunk)
	add(c, err, chunk, &kilnv1.TranscodeTask{})
	c, err = tasks.NewTranscodeTrackTask(ctx, transcode)
	add(c, err, transcode, &kilnv1.TranscodeTask{})
	pkg := &kilnv1.PackageTask{JobId: "j1", AssetId: "a1", Attempt: 2, Only: "360p", RenditionRetry: 1}
	c, err = tasks.NewPackageTask(ctx, pkg)
	add(c, err, pkg, &kilnv1.PackageTask{})
	return out
}

type traced interface {
	proto.Message
	GetTraceContext() map[string]string
}

// TestTaskTraceContext: every constructor writes the trace context of its
// ctx into the payload (the caller's message untouched), where both the
// payload's own type and the generic head read it back.
func TestTaskTraceContext(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(t.Context(), "enqueuer")
	defer span.End()
	sc := span.SpanContext()
	for typ, c := range stageCommands(t, ctx) {
		if err := proto.Unmarshal(c.cmd.Task.Payload(), c.decoded); err != nil {
			t.Fatal(err)
		}
		tc := c.decoded.(traced).GetTraceContext()
		if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"; tc["traceparent"] != want {
			t.Errorf("%s: trace_context %v, want traceparent %s", typ, tc, want)
		}
		if len(c.payload.(traced).GetTraceContext()) != 0 {
			t.Errorf("%s: the caller's payload was changed", typ)
		}
		jobID, assetID, attempt := tasks.Head(c.cmd.Task)
		got := trace.SpanContextFromContext(tasks.TraceContext(t.Context(), c.cmd.Task))
		if jobID != "j1" || assetID != "a1" || attempt != 2 || !got.IsRemote() || got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() {
			t.Errorf("%s: head %s %s %d, trace context %v, want %v", typ, jobID, assetID, attempt, got, sc)
		}
	}
}

// TestTaskWithoutTraceContext: without a span in ctx (tracing off) the
// payload is exactly the message's encoding: no trace_context.
func TestTaskWithoutTraceContext(t *testing.T) {
	for typ, c := range stageCommands(t, t.Context()) {
		want, err := proto.Marshal(c.payload)
		if err != nil {
			t.Fatal(err)
		}
		if string(c.cmd.Task.Payload()) != string(want) {
			t.Errorf("%s: payload differs from the message's encoding", typ)
		}
		if trace.SpanContextFromContext(tasks.TraceContext(t.Context(), c.cmd.Task)).IsValid() {
			t.Errorf("%s: a trace context where none was", typ)
		}
	}
}

// TestTracingMiddleware: each run is a span named by the task type, a child
// of the enqueuer's span, with the job's attributes, and the handler runs
// in it; a failed run's span says so.
func TestTracingMiddleware(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, enqueuer := tp.Tracer("test").Start(t.Context(), "enqueuer")
	enqueuer.End()
	for typ, c := range stageCommands(t, ctx) {
		var inHandler trace.SpanContext
		h := tasks.Tracing(tp)(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
			inHandler = trace.SpanContextFromContext(ctx)
			if typ == tasks.TypePackage {
				return asynq.SkipRetry
			}
			return nil
		}))
		// The worker's context knows nothing of the enqueuer.
		_ = h.ProcessTask(context.WithoutCancel(t.Context()), c.cmd.Task)
		spans := rec.Ended()
		s := spans[len(spans)-1]
		attrs := map[string]string{}
		for _, kv := range s.Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		switch {
		case s.Name() != typ:
			t.Errorf("span name %q, want %q", s.Name(), typ)
		case s.Parent().SpanID() != enqueuer.SpanContext().SpanID() || s.SpanContext().TraceID() != enqueuer.SpanContext().TraceID():
			t.Errorf("%s: parent %v, want the enqueuer %v", typ, s.Parent(), enqueuer.SpanContext())
		case inHandler.SpanID() != s.SpanContext().SpanID():
			t.Errorf("%s: the handler ran in span %v, not the task's %v", typ, inHandler, s.SpanContext())
		case attrs["kiln.job_id"] != "j1" || attrs["kiln.asset_id"] != "a1" || attrs["kiln.attempt"] != strconv.Itoa(2):
			t.Errorf("%s: attributes %v", typ, attrs)
		case (typ == tasks.TypePackage) != (s.Status().Code.String() == "Error"):
			t.Errorf("%s: status %v", typ, s.Status())
		}
	}
	if n, want := len(rec.Ended()), 1+len(tasks.Stages()); n != want { // the enqueuer and a run of each stage
		t.Fatalf("%d spans ended, want %d", n, want)
	}
}
