// Package bus carries kiln's facts over NATS JetStream: S3 bucket
// notifications, "object landed" events and job events. It owns the stream
// layout (one stream, KILN, subjects kiln.>) and protobuf encoding.
package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

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

// Config locates NATS.
type Config struct {
	// URL of the NATS server, e.g. "nats://127.0.0.1:4222".
	URL string
	// Name identifies the connection in NATS monitoring.
	Name string
	// MaxAge bounds how long events are kept; default 7 days.
	MaxAge time.Duration
	Logger *zap.Logger
}

// Bus is a JetStream connection with kiln's stream ensured.
type Bus struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *zap.Logger
}

// Connect dials NATS and creates or updates the KILN stream.
func Connect(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	log := cfg.Logger
	nc, err := nats.Connect(cfg.URL,
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") }),
	)
	if err != nil {
		return nil, fmt.Errorf("bus: connect %s: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b := &Bus{nc: nc, js: js, log: log}
	if err := b.ensureStream(ctx, cfg.MaxAge); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bus) ensureStream(ctx context.Context, maxAge time.Duration) error {
	for {
		_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:       StreamName,
			Subjects:   []string{"kiln.>"},
			Retention:  jetstream.LimitsPolicy,
			Storage:    jetstream.FileStorage,
			MaxAge:     maxAge,
			Duplicates: 10 * time.Minute,
		})
		if err == nil {
			return nil
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

func (b *Bus) publish(ctx context.Context, subject, msgID string, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("bus: marshal: %w", err)
	}
	opts := []jetstream.PublishOpt{}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := b.js.Publish(ctx, subject, data, opts...); err != nil {
		return fmt.Errorf("bus: publish %s: %w", subject, err)
	}
	return nil
}

// Handler processes one message. A nil error acks it; an error naks it for
// redelivery after a delay; a Permanent error terminates it (no redelivery).
type Handler func(ctx context.Context, subject string, data []byte) error

// ErrPermanent marks a message that can never be processed (malformed).
var ErrPermanent = errors.New("permanent")

// ConsumerConfig describes a durable consumer.
type ConsumerConfig struct {
	// Durable name; replicas of one service share it and split the work.
	Durable  string
	Subjects []string
	// MaxDeliver bounds redeliveries; default 20.
	MaxDeliver int
	// AckWait is how long a message may be in processing; default 30s.
	AckWait time.Duration
}

// Consume runs handler for every message of a durable consumer until ctx ends.
func (b *Bus) Consume(ctx context.Context, cfg ConsumerConfig, handler Handler) error {
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = 20
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		FilterSubjects: cfg.Subjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxDeliver:     cfg.MaxDeliver,
		AckWait:        cfg.AckWait,
		BackOff:        nil,
	})
	if err != nil {
		return fmt.Errorf("bus: consumer %s: %w", cfg.Durable, err)
	}
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
		herr := handler(ctx, msg.Subject(), msg.Data())
		switch {
		case herr == nil:
			err = msg.Ack()
		case errors.Is(herr, ErrPermanent):
			log.Error("dropping message", zap.String("subject", msg.Subject()), zap.Error(herr))
			err = msg.Term()
		default:
			log.Warn("message failed; will be redelivered", zap.String("subject", msg.Subject()), zap.Error(herr))
			err = msg.NakWithDelay(2 * time.Second)
		}
		if err != nil {
			log.Warn("ack", zap.Error(err))
		}
	}
}
