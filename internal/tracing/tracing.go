// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables, and holds the one contract every role shares
// about it: how a trace context travels (W3C trace context and baggage, in
// NATS headers, task payloads, HTTP headers and source object metadata).
//
// Tracing is opt-in: it is on only when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (and neither
// OTEL_TRACES_EXPORTER=none nor OTEL_SDK_DISABLED=true says otherwise).
// Otherwise Setup returns a no-op provider: no exporter, no connection, no
// span recorded. The exporters and the SDK read the rest of the OTEL_*
// variables themselves (headers, timeout, TLS, sampler, batching).
package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
)

// Config says who traces.
type Config struct {
	// Service is the default service.name, e.g. "kiln-ingest";
	// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins.
	Service string
	// Version is service.version, when known.
	Version string
	// Roles are the roles of the process (resource attribute kiln.roles).
	Roles  []string
	Logger *zap.Logger
}

// Shutdown flushes the spans not exported yet and stops the exporter.
type Shutdown func(context.Context) error

// Protocols of OTEL_EXPORTER_OTLP_PROTOCOL (and _TRACES_PROTOCOL) kiln
// speaks.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// Setup returns the process's tracer provider: an OTLP exporter behind a
// batching SDK provider when the environment asks for tracing, else a no-op
// provider (and a no-op shutdown).
func Setup(ctx context.Context, cfg Config) (trace.TracerProvider, Shutdown, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	on, protocol, err := enabled(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	if !on {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	var exp sdktrace.SpanExporter
	switch protocol {
	case ProtocolHTTP:
		exp, err = otlptracehttp.New(ctx)
	case ProtocolGRPC:
		exp, err = otlptracegrpc.New(ctx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP exporter (%s): %w", protocol, err)
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.Service), attribute.StringSlice("kiln.roles", cfg.Roles)}
	if cfg.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.Version))
	}
	// Later options win: the environment's service name and attributes
	// override kiln's defaults.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("tracing: resource: %w", err)
	}
	// The sampler (OTEL_TRACES_SAMPLER) and the batching (OTEL_BSP_*) come
	// from the environment too.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info("tracing on: exporting spans over OTLP", zap.String("protocol", protocol),
		zap.String("service", serviceName(res, cfg.Service)))
	return tp, tp.Shutdown, nil
}

func serviceName(res *resource.Resource, def string) string {
	if v, ok := res.Set().Value(semconv.ServiceNameKey); ok {
		return v.AsString()
	}
	return def
}

// enabled reads the OTEL_* variables that decide whether spans are
// exported, and over which protocol. An empty variable counts as unset.
func enabled(getenv func(string) string) (on bool, protocol string, err error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, "", nil
	}
	switch exporter := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exporter {
	case "none":
		return false, "", nil
	case "", "otlp":
	default:
		return false, "", fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q: kiln exports traces over otlp only (or none)", exporter)
	}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return false, "", nil
	}
	protocol = getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch protocol {
	case "", ProtocolHTTP:
		return true, ProtocolHTTP, nil
	case ProtocolGRPC:
		return true, ProtocolGRPC, nil
	}
	return false, "", fmt.Errorf("tracing: OTLP protocol %q: want %s or %s (http/json is not supported)", protocol, ProtocolHTTP, ProtocolGRPC)
}

// Propagator is how every role writes and reads a trace context: W3C
// traceparent/tracestate and baggage. It is part of the wire format (NATS
// headers, task payloads, HTTP headers, source metadata), the same in
// every process, so it is fixed here rather than configured.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Provider returns tp, or a no-op provider when tp is nil (a Config
// without one: tests, tracing off).
func Provider(tp trace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return noop.NewTracerProvider()
	}
	return tp
}

// Enabled reports whether tp records spans (not nil, not a no-op
// provider): instrumentation that costs something even without spans
// (wrapping HTTP handlers) is left out when it does not.
func Enabled(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case nil, noop.TracerProvider:
		return false
	}
	return true
}

// Inject returns the trace context of ctx as a map (empty when ctx carries
// none), the form task payloads carry it in.
func Inject(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return nil // tracing off: nothing to carry, nothing allocated
	}
	c := propagation.MapCarrier{}
	Propagator().Inject(ctx, c)
	return c
}

// Extract returns ctx with the remote trace context of m (Inject's form)
// as the parent of the spans started from it; m empty leaves ctx as is.
func Extract(ctx context.Context, m map[string]string) context.Context {
	if len(m) == 0 {
		return ctx
	}
	return Propagator().Extract(ctx, propagation.MapCarrier(m))
}

// Job attributes of kiln's spans.
const (
	AttrJobID   = attribute.Key("kiln.job_id")
	AttrAssetID = attribute.Key("kiln.asset_id")
	AttrAttempt = attribute.Key("kiln.attempt")
)
