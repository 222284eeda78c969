// Package bus carries kiln's facts over NATS JetStream: S3 bucket
// notifications, "object landed" events and job events. It owns the stream
// layout (the stream KILN, subjects kiln.>, and the dead letters' stream
// KILN_DLQ, subjects kiln_dlq.<consumer>) and protobuf encoding.
package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/tracing"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Stream layout.
const (
	StreamName = "KILN"
	// SubjectS3Events receives MinIO bucket notifications (JSON, S3 event format).
	SubjectS3Events = "kiln.s3.events"
	// SubjectObjectLanded receives kilnv1.ObjectLanded from the ingest API.
	SubjectObjectLanded = "kiln.objects.landed"
	// SubjectJobs is the wildcard of every kilnv1.JobEvent (kiln.jobs.<job_id>).
	SubjectJobs = "kiln.jobs.>"
)

// JobSubject is the subject of one job's events.
func JobSubject(jobID string) string { return "kiln.jobs." + jobID }

// Config locates NATS and says who connects.
type Config struct {
	// URL of the NATS server, e.g. "nats://127.0.0.1:4222" (tls://… for
	// TLS).
	URL string
	// Name identifies the connection in NATS monitoring.
	Name string
	// Credentials, at most one kind: User and Password, a Token, or a
	// CredsFile (a JWT and NKey seed, for servers with decentralised
	// auth). A token is one identity for every process: only users or
	// creds carry per-role permissions (Permissions).
	User, Password string
	Token          string
	CredsFile      string
	// TLS of the connection: CAFile verifies the server's certificate
	// (default: the system's roots); CertFile and KeyFile, both or neither,
	// are a client certificate. Setting one of them requires TLS.
	CAFile, CertFile, KeyFile string
	// InboxPrefix is the prefix of the connection's reply subjects
	// (InboxPrefix of its user; NATS's "_INBOX" when empty): a user's
	// permissions let it subscribe only under its own.
	InboxPrefix string
	// WaitForStreams: Connect neither creates nor updates the streams, it
	// waits until the KILN stream exists (a worker: its user may not manage
	// streams; ingest or the catalog creates them).
	WaitForStreams bool
	// MaxAge bounds how long events are kept; default 7 days.
	MaxAge time.Duration
	// DeadLetterMaxAge bounds how long dead letters are kept; default 30
	// days.
	DeadLetterMaxAge time.Duration
	// StreamReplicas is the number of copies a NATS cluster keeps of each
	// stream (KILN and KILN_DLQ), 1 to 5; default 1 (a single server).
	// Connect sets it on every start, so set it here rather than by hand.
	StreamReplicas int
	Logger         *zap.Logger
	// TracerProvider traces publishes (producer spans) and handled
	// messages (consumer spans); the trace context travels in the
	// messages' NATS headers. Nil traces nothing.
	TracerProvider trace.TracerProvider
}

// Bus is a JetStream connection with kiln's stream ensured.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *zap.Logger
	tracer trace.Tracer
	traced bool // tracer records: spans and trace context headers
	// consumers are the durables this process consumes (their dead-letter
	// counts are reported even when zero).
	consumers sync.Map
}

// Connect dials NATS and creates or updates the KILN stream.
func Connect(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	if cfg.DeadLetterMaxAge == 0 {
		cfg.DeadLetterMaxAge = 30 * 24 * time.Hour
	}
	log := cfg.Logger
	opts, err := cfg.options(log)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("bus: connect %s: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b := &Bus{nc: nc, js: js, log: log, tracer: tracing.Provider(cfg.TracerProvider).Tracer("github.com/kilnvideo/kiln/internal/bus"),
		traced: tracing.Enabled(cfg.TracerProvider)}
	if cfg.WaitForStreams {
		err = b.waitForStream(ctx)
	} else {
		err = b.ensureStreams(ctx, cfg.MaxAge, cfg.DeadLetterMaxAge, max(cfg.StreamReplicas, 1))
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

// options are the connection options of cfg.
func (cfg Config) options(log *zap.Logger) ([]nats.Option, error) {
	kinds := 0
	for _, set := range []bool{cfg.User != "" || cfg.Password != "", cfg.Token != "", cfg.CredsFile != ""} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		return nil, errors.New("bus: NATS credentials: set a user and password, a token or a creds file, not several")
	case (cfg.User == "") != (cfg.Password == ""):
		return nil, errors.New("bus: NATS credentials: a user needs a password and a password a user")
	case (cfg.CertFile == "") != (cfg.KeyFile == ""):
		return nil, errors.New("bus: NATS TLS: a client certificate needs its key and a key its certificate")
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") }),
		// Asynchronous errors: a permissions violation (a subject this
		// user may not use) is reported only here.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("nats error", zap.Error(err))
		}),
	}
	switch {
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	if cfg.CAFile != "" || cfg.CertFile != "" {
		opts = append(opts, nats.Secure())
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	return opts, nil
}

// closed is the error of a connection the client gave up on (it was
// refused: bad credentials, a TLS failure), nil while it is up or
// reconnecting.
func (b *Bus) closed() error {
	if !b.nc.IsClosed() {
		return nil
	}
	return fmt.Errorf("bus: connection to NATS closed: %w", cmp.Or(b.nc.LastError(), nats.ErrConnectionClosed))
}

// waitForStream waits until the KILN stream exists (WaitForStreams).
func (b *Bus) waitForStream(ctx context.Context) error {
	for {
		_, err := b.js.Stream(ctx, StreamName)
		if err == nil {
			return nil
		}
		if cerr := b.closed(); cerr != nil {
			return errors.Join(cerr, err)
		}
		b.log.Warn("waiting for the KILN stream", zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus: stream %s: %w", StreamName, errors.Join(err, ctx.Err()))
		case <-time.After(time.Second):
		}
	}
}

func (b *Bus) ensureStreams(ctx context.Context, maxAge, deadLetterMaxAge time.Duration, replicas int) error {
	for {
		_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:       StreamName,
			Subjects:   []string{"kiln.>"},
			Retention:  jetstream.LimitsPolicy,
			Storage:    jetstream.FileStorage,
			MaxAge:     maxAge,
			Duplicates: 10 * time.Minute,
			Replicas:   replicas,
		})
		if err == nil {
			// Outside kiln.> (streams may not overlap), so no consumer of
			// the KILN stream ever sees a dead letter.
			_, err = b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
				Name:       DeadLetterStream,
				Subjects:   []string{deadLetterPrefix + ">"},
				Retention:  jetstream.LimitsPolicy,
				Storage:    jetstream.FileStorage,
				MaxAge:     deadLetterMaxAge,
				Duplicates: 10 * time.Minute,
				Replicas:   replicas,
			})
		}
		if err == nil {
			return nil
		}
		if cerr := b.closed(); cerr != nil {
			return errors.Join(cerr, err)
		}
		b.log.Warn("waiting for JetStream", zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus: create stream: %w", errors.Join(err, ctx.Err()))
		case <-time.After(time.Second):
		}
	}
}

// Close drains the connection.
func (b *Bus) Close() { _ = b.nc.Drain() }

// Ping reports whether the connection is up.
func (b *Bus) Ping(context.Context) error {
	if !b.nc.IsConnected() {
		return errors.New("bus: not connected to NATS")
	}
	return nil
}

// PublishJobEvent publishes ev on its job's subject, deduplicated by EventId.
func (b *Bus) PublishJobEvent(ctx context.Context, ev *kilnv1.JobEvent) error {
	return b.publish(ctx, JobSubject(ev.GetJobId()), ev.GetEventId(), ev)
}

// PublishObjectLanded publishes ev, deduplicated by bucket/key/etag.
func (b *Bus) PublishObjectLanded(ctx context.Context, ev *kilnv1.ObjectLanded) error {
	o := ev.GetObject()
	return b.publish(ctx, SubjectObjectLanded, "landed:"+o.GetBucket()+"/"+o.GetKey()+"@"+o.GetEtag(), ev)
}

func (b *Bus) publish(ctx context.Context, subject, msgID string, m proto.Message) (err error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("bus: marshal: %w", err)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if b.traced {
		var span trace.Span
		ctx, span = b.tracer.Start(ctx, "send "+subjectTemplate(subject), trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(messagingAttrs(subject, msgID, len(data), semconv.MessagingOperationTypeSend)...))
		defer func() { endSpan(span, err) }()
		tracing.Propagator().Inject(ctx, headerCarrier(msg.Header))
	}
	opts := []jetstream.PublishOpt{}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	// One attempt waits at most publishAttemptTimeout for the stream's
	// acknowledgement, then the message is sent again (the message id makes
	// the copies one): a publish caught by a disconnect may have its
	// request or its ack lost, and would otherwise wait for ctx's end (a
	// task's deadline, many minutes) while the server is back in seconds.
	for wait := publishRetryDelay; ; wait = min(2*wait, 2*time.Second) {
		actx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
		_, err = b.js.PublishMsg(actx, msg, opts...)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !retryablePublish(err) {
			return fmt.Errorf("bus: publish %s: %w", subject, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bus: publish %s: %w", subject, err)
		case <-time.After(wait):
		}
	}
}

// Publish attempts: how long one waits for its acknowledgement, and the
// first pause before the next.
const (
	publishAttemptTimeout = 5 * time.Second
	publishRetryDelay     = 100 * time.Millisecond
)

// retryablePublish reports whether a failed publish may succeed when sent
// again: its acknowledgement did not come in time, or no server answered
// (between a disconnect and the reconnect).
func retryablePublish(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// subjectTemplate is a subject without its job id (kiln.jobs.{job_id}):
// span names stay few.
func subjectTemplate(subject string) string {
	if strings.HasPrefix(subject, "kiln.jobs.") {
		return "kiln.jobs.{job_id}"
	}
	return subject
}

// messagingAttrs are the messaging semantic conventions' attributes of a
// message on subject.
func messagingAttrs(subject, msgID string, size int, op attribute.KeyValue) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"), op, semconv.MessagingOperationName(op.Value.AsString()),
		semconv.MessagingDestinationName(subject), semconv.MessagingMessageBodySize(size),
	}
	if msgID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(msgID))
	}
	if jobID, ok := strings.CutPrefix(subject, "kiln.jobs."); ok {
		attrs = append(attrs, tracing.AttrJobID.String(jobID))
	}
	return attrs
}

// endSpan records err (when there is one) on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// headerCarrier reads and writes a trace context in NATS headers, whose
// keys (unlike HTTP's) are case-sensitive: "traceparent" stays as is.
type headerCarrier nats.Header

func (h headerCarrier) Get(key string) string { return nats.Header(h).Get(key) }
func (h headerCarrier) Set(key, value string) { nats.Header(h).Set(key, value) }
func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Handler processes one message. A nil error acks it; an error naks it for
// redelivery after a growing delay, for as long as it takes; an
// ErrPermanent error dead-letters it (see DeadLetterSubject), then
// terminates it.
type Handler func(ctx context.Context, subject string, data []byte) error

// ErrPermanent marks a message that can never be processed (malformed).
var ErrPermanent = errors.New("permanent")

// Redelivery defaults of ConsumerConfig.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
	DefaultAckWait    = 30 * time.Second
)

// ConsumerConfig describes a durable consumer. Deliveries are unlimited: a
// message failing transiently (NATS, Redis or the catalog's database down)
// is redelivered with an exponential backoff until it succeeds.
type ConsumerConfig struct {
	// Durable name; replicas of one service share it and split the work.
	// It names the consumer's dead letters too (kiln_dlq.<durable>).
	Durable  string
	Subjects []string
	// AckWait is how long a message may go without news from its handler
	// before the server redelivers it; default 30s. A running handler
	// reports progress every AckWait/3, so handlers may run longer.
	AckWait time.Duration
	// MinBackoff is the delay before the first redelivery, doubling with
	// each failure (±20 % jitter) up to MaxBackoff; defaults 1s and 1 min.
	MinBackoff, MaxBackoff time.Duration
}

// Backoff is the delay before redelivering a message that failed on its
// delivered-th delivery (1 for the first): min doubling up to max, ±20 %
// jitter, never above max.
func Backoff(delivered uint64, minDelay, maxDelay time.Duration) time.Duration {
	d := minDelay
	for i := uint64(1); i < delivered && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	jittered := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(jittered, maxDelay)
}

// Consume runs handler for every message of a durable consumer until ctx ends.
func (b *Bus) Consume(ctx context.Context, cfg ConsumerConfig, handler Handler) error {
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		FilterSubjects: cfg.Subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxDeliver:     -1, // never drop: failures back off (NakWithDelay), bad input is dead-lettered
		AckWait:        cfg.AckWait,
	})
	if err != nil {
		return fmt.Errorf("bus: consumer %s: %w", cfg.Durable, err)
	}
	b.consumers.Store(cfg.Durable, true)
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("bus: consumer %s: %w", cfg.Durable, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	log := b.log.With(zap.String("consumer", cfg.Durable))
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			log.Warn("consume", zap.Error(err))
			continue
		}
		b.settle(ctx, log, cfg, msg, b.handle(ctx, cfg, msg, handler))
	}
}

// handle runs handler on msg, telling the server the message is in progress
// every AckWait/3 so that a slow handler is not redelivered meanwhile.
func (b *Bus) handle(ctx context.Context, cfg ConsumerConfig, msg jetstream.Msg, handler Handler) error {
	done := make(chan struct{})
	beat := make(chan struct{})
	go func() {
		defer close(beat)
		t := time.NewTicker(cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	defer func() { close(done); <-beat }()
	if !b.traced {
		return handler(ctx, msg.Subject(), msg.Data())
	}
	// The message's trace context (its publisher's span) is the parent of
	// this consumer span, which is the parent of what the handler does.
	ctx = tracing.Propagator().Extract(ctx, headerCarrier(msg.Headers()))
	attrs := messagingAttrs(msg.Subject(), msg.Headers().Get(nats.MsgIdHdr), len(msg.Data()), semconv.MessagingOperationTypeProcess)
	attrs = append(attrs, semconv.MessagingConsumerGroupName(cfg.Durable))
	if md, err := msg.Metadata(); err == nil {
		attrs = append(attrs, attribute.Int64("messaging.nats.delivered", int64(md.NumDelivered)))
	}
	ctx, span := b.tracer.Start(ctx, "process "+subjectTemplate(msg.Subject()), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrs...))
	err := handler(ctx, msg.Subject(), msg.Data())
	endSpan(span, err)
	return err
}

// settle acks, naks (with backoff) or dead-letters msg after its handler
// returned herr.
func (b *Bus) settle(ctx context.Context, log *zap.Logger, cfg ConsumerConfig, msg jetstream.Msg, herr error) {
	var delivered, seq uint64 = 1, 0
	if md, err := msg.Metadata(); err == nil {
		delivered, seq = md.NumDelivered, md.Sequence.Stream
	}
	fields := []zap.Field{zap.String("subject", msg.Subject()), zap.Uint64("stream_seq", seq), zap.Uint64("delivered", delivered)}
	var err error
	switch {
	case herr == nil:
		err = msg.Ack()
	case errors.Is(herr, ErrPermanent):
		if derr := b.deadLetter(ctx, cfg.Durable, msg, seq, delivered, herr); derr != nil {
			// Not terminated: it comes back and is dead-lettered then.
			delay := Backoff(delivered, cfg.MinBackoff, cfg.MaxBackoff)
			log.Error("dead-lettering failed; will be redelivered", append(fields, zap.NamedError("reason", herr), zap.Error(derr), zap.Duration("delay", delay))...)
			err = msg.NakWithDelay(delay)
			break
		}
		log.Error("message dead-lettered", append(fields, zap.Error(herr))...)
		err = msg.Term()
	default:
		delay := Backoff(delivered, cfg.MinBackoff, cfg.MaxBackoff)
		log.Warn("message failed; will be redelivered", append(fields, zap.Duration("delay", delay), zap.Error(herr))...)
		err = msg.NakWithDelay(delay)
	}
	if err != nil {
		log.Warn("ack", append(fields, zap.Error(err))...)
	}
}
