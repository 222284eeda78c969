package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"code.dny.dev/ssrf"
	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/tasks"
)

// TypeDeliver is the asynq task type of one delivery attempt; Queue its
// queue (one of the worker's weighted stage queues).
const (
	TypeDeliver = "kiln:webhook"
	Queue       = tasks.QueueWebhook
)

// DefaultTimeout bounds one delivery attempt (connect, send, response).
const DefaultTimeout = 15 * time.Second

// maxResponseBody is how much of a receiver's answer is read (and dropped)
// so the connection can be reused.
const maxResponseBody = 64 << 10

// taskPayload is everything one attempt needs, so the worker running it
// needs neither the catalog database nor NATS: the dispatcher builds it
// from the outbox when the attempt is due.
type taskPayload struct {
	DeliveryID string `json:"delivery_id"`
	EventID    string `json:"event_id"`
	EventType  string `json:"event_type"`
	EndpointID string `json:"endpoint_id"`
	Attempt    int    `json:"attempt"`
	URL        string `json:"url"`
	// Secrets sign the message, newest first; more than one during a
	// rotation's grace period.
	Secrets []string `json:"secrets"`
	// Body is sent byte for byte.
	Body string `json:"body"`
}

// Result is what an attempt reports back through the asynq task result; the
// dispatcher records it in the delivery log and decides what follows.
type Result struct {
	// StatusCode is the receiver's HTTP status, 0 when there was none.
	StatusCode int   `json:"status_code"`
	LatencyMS  int64 `json:"latency_ms"`
	// Error describes a failure to get a response (dial, SSRF guard,
	// timeout) or to sign.
	Error string `json:"error,omitempty"`
	// RetryAfterMS is the receiver's Retry-After (capped at 24 h) on a 429
	// or 503; -1 when none was given.
	RetryAfterMS int64 `json:"retry_after_ms"`
}

// OK reports whether the attempt succeeded: only 2xx is success.
func (r Result) OK() bool { return r.StatusCode >= 200 && r.StatusCode < 300 }

// DelivererConfig configures a Deliverer.
type DelivererConfig struct {
	// AllowLoopback lets deliveries reach 127.0.0.0/8 and ::1 (local
	// development and tests). Private, link-local, metadata and other
	// special-purpose addresses are always refused.
	AllowLoopback bool
	// Timeout bounds an attempt; default DefaultTimeout.
	Timeout time.Duration
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
}

// Deliverer runs delivery attempts: the asynq handler of TypeDeliver, in
// worker processes, so deliveries scale with the workers.
type Deliverer struct {
	client *http.Client
	log    *zap.Logger
	now    func() time.Time
}

// NewDeliverer returns a Deliverer whose HTTP client dials only through the
// SSRF guard.
func NewDeliverer(cfg DelivererConfig) *Deliverer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Deliverer{
		client: &http.Client{
			Transport: GuardedTransport(cfg.AllowLoopback),
			Timeout:   cfg.Timeout,
			// A redirect is an answer, not a success: never follow one.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		log: cfg.Logger,
		now: time.Now,
	}
}

// Guardian is the dial-time SSRF policy: tcp only, any port, every
// special-purpose address refused (private, loopback, link-local including
// 169.254.169.254, CGNAT, multicast…) unless allowLoopback lets 127.0.0.0/8
// and ::1 through.
func Guardian(allowLoopback bool) *ssrf.Guardian {
	opts := []ssrf.Option{ssrf.WithAnyPort()}
	if allowLoopback {
		opts = append(opts,
			ssrf.WithAllowedV4Prefixes(netip.MustParsePrefix("127.0.0.0/8")),
			ssrf.WithAllowedV6Prefixes(netip.MustParsePrefix("::1/128")))
	}
	return ssrf.New(opts...)
}

// GuardedTransport is an HTTP transport whose every connection is checked by
// Guardian at dial time (after DNS resolution, so a name resolving to a
// refused address is refused too) and that never uses a proxy.
func GuardedTransport(allowLoopback bool) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: Guardian(allowLoopback).Safe}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Register adds the delivery handler to an asynq mux.
func (d *Deliverer) Register(mux *asynq.ServeMux) { mux.HandleFunc(TypeDeliver, d.ProcessTask) }

// ProcessTask runs one attempt and writes its Result as the task result.
// It fails (and asynq retries the task) only when the result cannot be
// written; a receiver's failure is a result, not an error.
func (d *Deliverer) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p taskPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("webhooks: malformed task payload: %v: %w", err, asynq.SkipRetry)
	}
	res := d.Deliver(ctx, &p)
	if w := t.ResultWriter(); w != nil {
		b, _ := json.Marshal(res)
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("webhooks: write result of %s attempt %d: %w", p.DeliveryID, p.Attempt, err)
		}
	}
	return nil
}

// Deliver signs and POSTs the message once.
func (d *Deliverer) Deliver(ctx context.Context, p *taskPayload) Result {
	log := d.log.With(zap.String("delivery_id", p.DeliveryID), zap.String("event_id", p.EventID),
		zap.String("event_type", p.EventType), zap.String("endpoint_id", p.EndpointID), zap.Int("attempt", p.Attempt))
	res := d.deliver(ctx, p)
	fields := []zap.Field{zap.Int("status", res.StatusCode), zap.Int64("latency_ms", res.LatencyMS)}
	switch {
	case res.OK():
		log.Info("webhook delivered", fields...)
	case res.Error != "":
		log.Warn("webhook attempt failed", append(fields, zap.String("error", res.Error))...)
	default:
		log.Warn("webhook attempt rejected", fields...)
	}
	return res
}

func (d *Deliverer) deliver(ctx context.Context, p *taskPayload) Result {
	res := Result{RetryAfterMS: -1}
	keys := make([][]byte, 0, len(p.Secrets))
	for _, s := range p.Secrets {
		k, err := ParseSecret(s)
		if err != nil {
			res.Error = "signing secret: " + err.Error()
			return res
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		res.Error = "no signing secret"
		return res
	}
	body := []byte(p.Body)
	start := d.now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(body))
	if err != nil {
		res.Error = "request: " + err.Error()
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kiln-webhooks/1")
	req.Header.Set(HeaderID, p.EventID)
	req.Header.Set(HeaderTimestamp, fmt.Sprint(start.Unix()))
	req.Header.Set(HeaderSignature, SignatureHeader(keys, p.EventID, start, body))
	resp, err := d.client.Do(req)
	if err != nil {
		res.LatencyMS = d.now().Sub(start).Milliseconds()
		res.Error = describe(err)
		return res
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	_ = resp.Body.Close()
	res.LatencyMS = d.now().Sub(start).Milliseconds()
	res.StatusCode = resp.StatusCode
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), d.now()); ok {
			res.RetryAfterMS = ra.Milliseconds()
		}
	}
	return res
}

// describe names the failure without the URL (which may hold a token).
func describe(err error) string {
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if timeout {
		return "timeout: " + err.Error()
	}
	return err.Error()
}
