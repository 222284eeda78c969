package bus_test

import (
	"context"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestTraceContextInHeaders: a traced bus sends each message's trace
// context in its NATS headers ("traceparent", as W3C spells it) from a
// producer span, and runs the handler in a consumer span that is the
// producer's child, with the messaging attributes; an untraced bus sends
// none.
func TestTraceContextInHeaders(t *testing.T) {
	e := startNATS(t, testenv.FreeAddr(t), t.TempDir())
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := bus.Connect(ctx, bus.Config{URL: e.ClientURL(), User: admin, Password: testPassword, Logger: zap.NewNop(), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	plain := connect(t, e.ClientURL())
	js := inspect(t, e.ClientURL())

	pctx, upload := tp.Tracer("test").Start(t.Context(), "upload")
	if err := b.PublishJobEvent(pctx, jobEvent("job1", "job1.probing")); err != nil {
		t.Fatal(err)
	}
	upload.End()
	if err := plain.PublishJobEvent(t.Context(), jobEvent("job2", "job2.probing")); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(t.Context(), bus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for job, want := range map[string]bool{"job1": true, "job2": false} {
		m, err := stream.GetLastMsgForSubject(t.Context(), bus.JobSubject(job))
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get("traceparent") != ""; got != want {
			t.Errorf("%s: traceparent header %q (headers %v), want one: %v", job, m.Header.Get("traceparent"), m.Header, want)
		}
	}

	var mu sync.Mutex
	handled := map[string]trace.SpanContext{}
	stop := runConsume(t, b, bus.ConsumerConfig{Durable: "tracetest", Subjects: []string{bus.SubjectJobs}},
		func(ctx context.Context, subject string, _ []byte) error {
			mu.Lock()
			defer mu.Unlock()
			handled[subject] = trace.SpanContextFromContext(ctx)
			return nil
		})
	waitFor(t, 10*time.Second, "both messages handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 2
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.Name() == "process kiln.jobs.{job_id}" {
			for _, kv := range s.Attributes() {
				if kv.Key == "messaging.destination.name" {
					spans["process "+kv.Value.AsString()] = s
				}
			}
			continue
		}
		spans[s.Name()] = s
	}
	send, p1, p2 := spans["send kiln.jobs.{job_id}"], spans["process "+bus.JobSubject("job1")], spans["process "+bus.JobSubject("job2")]
	if send == nil || p1 == nil || p2 == nil {
		t.Fatalf("spans %v", spans)
	}
	switch {
	case send.Parent().SpanID() != upload.SpanContext().SpanID() || send.SpanKind() != trace.SpanKindProducer:
		t.Errorf("send span: parent %v kind %v", send.Parent(), send.SpanKind())
	case p1.Parent().SpanID() != send.SpanContext().SpanID() || p1.SpanContext().TraceID() != upload.SpanContext().TraceID() ||
		!p1.Parent().IsRemote() || p1.SpanKind() != trace.SpanKindConsumer:
		t.Errorf("process span of job1: parent %v kind %v, want the send span %v", p1.Parent(), p1.SpanKind(), send.SpanContext())
	case handled[bus.JobSubject("job1")].SpanID() != p1.SpanContext().SpanID():
		t.Errorf("job1's handler ran in %v, not its process span", handled[bus.JobSubject("job1")])
	case p2.Parent().IsValid():
		t.Errorf("job2 came without a trace context, yet its process span has a parent %v", p2.Parent())
	}
	attrs := map[string]string{}
	for _, kv := range p1.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["messaging.system"] != "nats" || attrs["messaging.consumer.group.name"] != "tracetest" ||
		attrs["messaging.operation.type"] != "process" || attrs["kiln.job_id"] != "job1" {
		t.Errorf("process span attributes %v", attrs)
	}
}
