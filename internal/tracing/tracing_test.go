package tracing_test

import (
	"context"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnvideo/kiln/internal/tracing"
)

// clearOTEL unsets every OTEL_* variable for the test (restored after it).
func clearOTEL(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "") // restores the value at the end of the test
			if err := os.Unsetenv(k); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// emit starts a span with a child and ends both, then shuts tracing down
// (which flushes whatever an exporter holds).
func emit(t *testing.T, tp trace.TracerProvider, shutdown tracing.Shutdown) (parent, child trace.SpanContext) {
	t.Helper()
	ctx, p := tp.Tracer("test").Start(t.Context(), "parent")
	_, c := tp.Tracer("test").Start(ctx, "child")
	c.End()
	p.End()
	if err := shutdown(context.WithoutCancel(t.Context())); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	return p.SpanContext(), c.SpanContext()
}

// TestOffWithoutVariables: with no OTEL_* variable asking for an exporter
// (none at all, or only ones that choose how it would export), tracing is
// a no-op: nothing records, no trace context travels, and nothing connects
// to the OTLP/HTTP default port, even when shutdown flushes.
func TestOffWithoutVariables(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:4318") // where an exporter without an endpoint would send
	if err != nil {
		t.Fatalf("listen on the OTLP/HTTP default port: %v", err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	for name, env := range map[string]map[string]string{
		"none":         {},
		"protocol":     {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "kiln-x"},
		"headers":      {"OTEL_EXPORTER_OTLP_HEADERS": "a=b", "OTEL_EXPORTER_OTLP_INSECURE": "true"},
		"empty":        {"OTEL_EXPORTER_OTLP_ENDPOINT": ""},
		"exporterNone": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
		"sdkDisabled":  {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces", "OTEL_SDK_DISABLED": "true"},
	} {
		t.Run(name, func(t *testing.T) {
			clearOTEL(t)
			for k, v := range env {
				t.Setenv(k, v)
			}
			tp, shutdown, err := tracing.Setup(t.Context(), tracing.Config{Service: "kiln-test"})
			if err != nil {
				t.Fatal(err)
			}
			if tracing.Enabled(tp) {
				t.Fatalf("tracing is on (%T)", tp)
			}
			ctx, s := tp.Tracer("test").Start(t.Context(), "work")
			if s.IsRecording() || s.SpanContext().IsValid() {
				t.Errorf("span records (%v) or has a context (%v)", s.IsRecording(), s.SpanContext())
			}
			if tc := tracing.Inject(ctx); len(tc) != 0 {
				t.Errorf("trace context injected: %v", tc)
			}
			s.End()
			emit(t, tp, shutdown)
		})
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("%d connections to the OTLP port with tracing off", n)
	}
}

// TestOnWithEndpoint: OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT)
// turns tracing on; spans reach the OTLP/HTTP receiver there, with the
// service name kiln gives (or OTEL_SERVICE_NAME's) and their parent links.
func TestOnWithEndpoint(t *testing.T) {
	for _, tt := range []struct {
		name, service string
		env           func(url string) map[string]string
	}{
		{"endpoint", "kiln-test", func(url string) map[string]string {
			return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": url}
		}},
		{"tracesEndpoint", "kiln-test", func(url string) map[string]string {
			return map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url + "/v1/traces", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
		}},
		{"serviceName", "mine", func(url string) map[string]string {
			return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_SERVICE_NAME": "mine", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clearOTEL(t)
			rcv := newReceiver(t)
			for k, v := range tt.env(rcv.URL) {
				t.Setenv(k, v)
			}
			tp, shutdown, err := tracing.Setup(t.Context(), tracing.Config{Service: "kiln-test", Version: "v1.2.3", Roles: []string{"worker"}})
			if err != nil {
				t.Fatal(err)
			}
			if !tracing.Enabled(tp) {
				t.Fatalf("tracing is off (%T)", tp)
			}
			parent, child := emit(t, tp, shutdown)
			spans := rcv.Spans()
			if len(spans) != 2 {
				t.Fatalf("received %d spans, want 2: %v", len(spans), spans)
			}
			byName := map[string]span{}
			for _, s := range spans {
				byName[s.Name] = s
				if s.Service != tt.service {
					t.Errorf("span %s: service.name %q, want %q", s.Name, s.Service, tt.service)
				}
			}
			p, c := byName["parent"], byName["child"]
			if p.TraceID != parent.TraceID().String() || c.TraceID != p.TraceID || c.SpanID != child.SpanID().String() {
				t.Errorf("trace ids: parent %v child %v", p, c)
			}
			if c.ParentID != p.SpanID || p.ParentID != "" {
				t.Errorf("parent links: parent %v child %v", p, c)
			}
		})
	}
}

// TestBadVariables: what kiln cannot honour stops it, rather than tracing
// silently off.
func TestBadVariables(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"json":   {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		"zipkin": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "zipkin"},
	} {
		t.Run(name, func(t *testing.T) {
			clearOTEL(t)
			for k, v := range env {
				t.Setenv(k, v)
			}
			if _, _, err := tracing.Setup(t.Context(), tracing.Config{Service: "kiln-test"}); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestGRPC: OTEL_EXPORTER_OTLP_PROTOCOL=grpc picks the gRPC exporter
// (which dials lazily: no server needed to set it up).
func TestGRPC(t *testing.T) {
	clearOTEL(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.Config{Service: "kiln-test"})
	if err != nil {
		t.Fatal(err)
	}
	if !tracing.Enabled(tp) {
		t.Fatal("tracing is off")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // nothing listens: do not wait for the flush
	_ = shutdown(ctx)
}

// TestInjectExtract: the map form task payloads carry round-trips a span
// context as a remote parent.
func TestInjectExtract(t *testing.T) {
	clearOTEL(t)
	rcv := newReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL)
	tp, shutdown, err := tracing.Setup(t.Context(), tracing.Config{Service: "kiln-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = shutdown(context.WithoutCancel(t.Context())) }()
	ctx, s := tp.Tracer("test").Start(t.Context(), "enqueue")
	defer s.End()
	tc := tracing.Inject(ctx)
	if !strings.Contains(tc["traceparent"], s.SpanContext().TraceID().String()) {
		t.Fatalf("injected %v", tc)
	}
	got := trace.SpanContextFromContext(tracing.Extract(t.Context(), tc))
	if !got.IsRemote() || got.TraceID() != s.SpanContext().TraceID() || got.SpanID() != s.SpanContext().SpanID() {
		t.Fatalf("extracted %v, want the span context of %v", got, s.SpanContext())
	}
	if ctx := tracing.Extract(t.Context(), nil); trace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("empty map extracted a span context")
	}
}
