// Package webhooks delivers Standard Webhooks (https://www.standardwebhooks.com)
// for job and asset events, from a transactional outbox in the catalog's
// database:
//
//   - Service (catalog role) owns the tables: endpoints registered by API,
//     per-upload endpoints, events, deliveries and the attempt log. Its
//     OnApply hook runs inside the catalog's job-event transaction and records
//     an event plus one pending delivery per matching endpoint, atomically
//     with the state change. Its dispatcher (Run) enqueues one asynq task per
//     due delivery attempt on queue "webhook", reads each attempt's result
//     back from asynq, writes the delivery log and schedules the retry.
//   - Deliverer (worker role) is the asynq handler: it signs and POSTs one
//     attempt through an SSRF-guarded client and returns the outcome as the
//     asynq task result. It needs neither the catalog database nor NATS, so
//     deliveries scale with the workers.
package webhooks

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/sqldialect"
)

// Enqueuer is the part of *asynq.Client the dispatcher uses.
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// TaskResults is the part of *asynq.Inspector the dispatcher uses to read
// attempt results.
type TaskResults interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
	DeleteTask(queue, id string) error
}

var (
	_ Enqueuer    = (*asynq.Client)(nil)
	_ TaskResults = (*asynq.Inspector)(nil)
)

// Defaults of Config.
const (
	DefaultPollInterval = 500 * time.Millisecond
	// RotationGrace is how long a rotated-out secret keeps signing.
	RotationGrace = 24 * time.Hour
	// taskRetention keeps a finished attempt's result in Redis until the
	// dispatcher has read it (it deletes the task then).
	taskRetention = 24 * time.Hour
	batch         = 200
)

// Config configures a Service.
type Config struct {
	// DB is the catalog's database (the store's DB()). Required.
	DB *sql.DB
	// Dialect is DB's kind (the store's Dialect()); default SQLite.
	Dialect sqldialect.Dialect
	// Queue enqueues attempts and Tasks reads their results. Required for
	// Run.
	Queue Enqueuer
	Tasks TaskResults
	// APIKeys guards the HTTP API. Required for Handler.
	APIKeys *httpapi.Keys
	// PublicURL is the catalog's base URL, for playback URLs in job.ready.
	PublicURL string
	// DefaultSecret ("whsec_…") is the key of per-upload webhooks: each
	// upload's deliveries are signed with UploadSecret(DefaultSecret, job
	// id), which ingest returned in the upload answer. When empty, their
	// deliveries fail without being sent (and an error is logged).
	DefaultSecret string
	// RetrySchedule is the delay before each retry; default
	// DefaultRetrySchedule. Each delay is jittered ±20 %.
	RetrySchedule []time.Duration
	// AttemptTimeout is the deliverer's per-attempt timeout, used to bound
	// the asynq task; default DefaultTimeout.
	AttemptTimeout time.Duration
	// PollInterval is how often the dispatcher looks at the outbox (it is
	// also woken by new events); default DefaultPollInterval.
	PollInterval time.Duration
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Metrics registers the attempt and give-up counters
	// (kiln_webhook_*); nil counts nothing.
	Metrics prometheus.Registerer
}

// Service is the catalog side of webhooks: outbox hook, dispatcher, API.
type Service struct {
	db            sqldialect.DB
	queue         Enqueuer
	tasks         TaskResults
	keys          *httpapi.Keys
	public        string
	defaultSecret string
	schedule      []time.Duration
	timeout       time.Duration
	poll          time.Duration
	log           *zap.Logger
	wake          chan struct{}
	now           func() time.Time
	rnd           func() float64
	metrics       *serviceMetrics
}

// New validates cfg, migrates the webhook tables and returns a Service.
// Register s.OnApply with the catalog store before it applies events.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DB == nil {
		return nil, errors.New("webhooks: Config.DB is required")
	}
	if cfg.DefaultSecret != "" {
		if _, err := ParseSecret(cfg.DefaultSecret); err != nil {
			return nil, fmt.Errorf("webhooks: Config.DefaultSecret: %w", err)
		}
	}
	if cfg.PublicURL != "" {
		if u, err := url.Parse(cfg.PublicURL); err != nil || u.Host == "" {
			return nil, fmt.Errorf("webhooks: Config.PublicURL %q is not an absolute URL", cfg.PublicURL)
		}
	}
	s := &Service{
		db: sqldialect.DB{DB: cfg.DB, Dialect: cfg.Dialect}, queue: cfg.Queue, tasks: cfg.Tasks, keys: cfg.APIKeys,
		public: strings.TrimRight(cfg.PublicURL, "/"), defaultSecret: cfg.DefaultSecret,
		schedule: cfg.RetrySchedule, timeout: cfg.AttemptTimeout, poll: cfg.PollInterval,
		log: cfg.Logger, wake: make(chan struct{}, 1), now: time.Now, rnd: rand.Float64,
	}
	var err error
	if s.metrics, err = newServiceMetrics(cfg.Metrics); err != nil {
		return nil, fmt.Errorf("webhooks: metrics: %w", err)
	}
	if s.schedule == nil {
		s.schedule = DefaultRetrySchedule
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.poll <= 0 {
		s.poll = DefaultPollInterval
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if err := migrate(ctx, s.db); err != nil {
		return nil, err
	}
	return s, nil
}

// nudge wakes the dispatcher (new deliveries). It never blocks.
func (s *Service) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run is the dispatcher: until ctx ends it reads finished attempts' results
// into the delivery log and enqueues due attempts. Every catalog replica
// runs one on the shared database: an attempt is claimed before it is
// enqueued (enqueue) and its result recorded only by the first to read it
// (record), so each attempt is made and logged once.
func (s *Service) Run(ctx context.Context) error {
	if s.queue == nil || s.tasks == nil {
		return errors.New("webhooks: Config.Queue and Config.Tasks are required to dispatch")
	}
	if s.defaultSecret == "" {
		s.log.Warn("no default webhook secret (KILN_WEBHOOK_SECRET): per-upload webhooks will not be delivered")
	}
	t := time.NewTicker(s.poll)
	defer t.Stop()
	for {
		if err := s.Dispatch(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("webhook dispatch", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.wake:
		}
	}
}

// Dispatch runs one dispatcher pass: collect results, then enqueue due
// attempts.
func (s *Service) Dispatch(ctx context.Context) error {
	if err := s.collect(ctx); err != nil {
		return err
	}
	return s.enqueueDue(ctx)
}

// due is a delivery whose next attempt is due.
type due struct {
	id, eventID, endpointID, typ, body, url string
	attempts                                int
	secret, previous                        string
	previousExpires                         sql.NullString
	disabled                                bool
	jobID                                   sql.NullString // a per-upload endpoint's job
	derived                                 bool           // signed with UploadSecret(default, job)
}

func (s *Service) enqueueDue(ctx context.Context) error {
	now := s.now().UTC()
	list, err := s.due(ctx, now)
	if err != nil {
		return err
	}
	for _, d := range list {
		if err := s.enqueue(ctx, d, now); err != nil {
			return err
		}
	}
	return nil
}

// due reads up to batch deliveries whose next attempt is due at now.
func (s *Service) due(ctx context.Context, now time.Time) ([]due, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT d.id, d.event_id, d.endpoint_id, d.attempts, e.type, e.body,
			p.url, p.secret, p.previous_secret, p.previous_expires_at, p.disabled_at IS NOT NULL, p.job_id, p.derived_secret
		FROM webhook_deliveries d
		JOIN webhook_events e ON e.id = d.event_id
		JOIN webhook_endpoints p ON p.id = d.endpoint_id
		WHERE d.status = 'pending' AND d.next_attempt_at <= ?
		ORDER BY d.next_attempt_at LIMIT ?`, fmtTime(now), batch)
	if err != nil {
		return nil, fmt.Errorf("webhooks: due deliveries: %w", err)
	}
	defer rows.Close()
	var list []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.id, &d.eventID, &d.endpointID, &d.attempts, &d.typ, &d.body,
			&d.url, &d.secret, &d.previous, &d.previousExpires, &d.disabled, &d.jobID, &d.derived); err != nil {
			return nil, fmt.Errorf("webhooks: due deliveries: %w", err)
		}
		list = append(list, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhooks: due deliveries: %w", err)
	}
	return list, nil // the rows are closed before anything writes: SQLite runs on one connection
}

func (s *Service) enqueue(ctx context.Context, d due, now time.Time) error {
	log := s.log.With(zap.String("delivery_id", d.id), zap.String("event_id", d.eventID), zap.String("endpoint_id", d.endpointID))
	if d.disabled {
		if err := s.giveUp(ctx, d.id, "endpoint disabled", now); err != nil {
			return err
		}
		s.metrics.giveUp(GiveUpDisabled)
		return nil
	}
	var secrets []string
	switch {
	case d.secret != "":
		secrets = append(secrets, d.secret)
		if d.previous != "" && d.previousExpires.Valid {
			if exp, err := parseTime(d.previousExpires.String); err == nil && now.Before(exp) {
				secrets = append(secrets, d.previous)
			}
		}
	case s.defaultSecret != "" && d.derived && d.jobID.Valid:
		sec, err := UploadSecret(s.defaultSecret, d.jobID.String)
		if err != nil { // New checked the default secret
			return fmt.Errorf("webhooks: upload secret of %s: %w", d.jobID.String, err)
		}
		secrets = append(secrets, sec)
	case s.defaultSecret != "": // a per-upload endpoint from before upload secrets
		secrets = append(secrets, s.defaultSecret)
	default:
		log.Error("per-upload webhook not delivered: no default webhook secret configured (KILN_WEBHOOK_SECRET)")
		if err := s.giveUp(ctx, d.id, "no default webhook secret configured (KILN_WEBHOOK_SECRET)", now); err != nil {
			return err
		}
		s.metrics.giveUp(GiveUpNoSecret)
		return nil
	}
	attempt := d.attempts + 1
	// Claim the delivery for this attempt before making it: another replica
	// of the catalog may have read the same row, and a read may be stale (the
	// attempt already made, recorded and its task deleted). The claim holds
	// until the row is marked enqueued, so each attempt is enqueued once.
	return inTx(ctx, s.db, func(tx sqldialect.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM webhook_deliveries
			WHERE id = ? AND status = 'pending' AND attempts = ? AND next_attempt_at <= ?`+s.db.Dialect.ClaimRow(),
			d.id, d.attempts, fmtTime(now)).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			log.Debug("webhook attempt claimed elsewhere or already made", zap.Int("attempt", attempt))
			return nil
		}
		if err != nil {
			return fmt.Errorf("webhooks: claim %s: %w", d.id, err)
		}
		return s.enqueueAttempt(ctx, tx, d, attempt, secrets, now, log)
	})
}

// enqueueAttempt enqueues attempt of the claimed delivery d and marks it
// enqueued in tx.
func (s *Service) enqueueAttempt(ctx context.Context, tx sqldialect.Tx, d due, attempt int, secrets []string, now time.Time, log *zap.Logger) error {
	payload, err := json.Marshal(taskPayload{
		DeliveryID: d.id, EventID: d.eventID, EventType: d.typ, EndpointID: d.endpointID,
		Attempt: attempt, URL: d.url, Secrets: secrets, Body: d.body,
	})
	if err != nil {
		return fmt.Errorf("webhooks: task payload: %w", err)
	}
	// One task id per attempt: a repeated enqueue of the same attempt (a
	// crash before the row below was written) collapses into one.
	taskID := fmt.Sprintf("%s:%s:%d", TypeDeliver, d.id, attempt)
	_, err = s.queue.EnqueueContext(ctx, asynq.NewTask(TypeDeliver, payload),
		asynq.TaskID(taskID), asynq.Queue(Queue), asynq.MaxRetry(3),
		asynq.Timeout(s.timeout+15*time.Second), asynq.Retention(taskRetention))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) && !errors.Is(err, asynq.ErrDuplicateTask) {
		return fmt.Errorf("webhooks: enqueue %s: %w", taskID, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'enqueued', task_id = ?, updated_at = ?
		WHERE id = ? AND status = 'pending'`, taskID, fmtTime(now), d.id); err != nil {
		return fmt.Errorf("webhooks: mark %s enqueued: %w", d.id, err)
	}
	log.Debug("webhook attempt enqueued", zap.Int("attempt", attempt))
	return nil
}

// giveUp fails a delivery without an attempt.
func (s *Service) giveUp(ctx context.Context, id, reason string, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'failed', last_error = ?, updated_at = ?
		WHERE id = ? AND status = 'pending'`, reason, fmtTime(now), id)
	if err != nil {
		return fmt.Errorf("webhooks: fail %s: %w", id, err)
	}
	return nil
}

// inflight is a delivery whose attempt is with asynq.
type inflight struct {
	id, eventID, endpointID, typ, taskID string
	attempts                             int
}

func (s *Service) collect(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT d.id, d.event_id, d.endpoint_id, d.attempts, d.task_id, e.type
		FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
		WHERE d.status = 'enqueued' ORDER BY d.updated_at LIMIT ?`, batch)
	if err != nil {
		return fmt.Errorf("webhooks: in-flight deliveries: %w", err)
	}
	var list []inflight
	for rows.Next() {
		var f inflight
		if err := rows.Scan(&f.id, &f.eventID, &f.endpointID, &f.attempts, &f.taskID, &f.typ); err != nil {
			rows.Close()
			return fmt.Errorf("webhooks: in-flight deliveries: %w", err)
		}
		list = append(list, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("webhooks: in-flight deliveries: %w", err)
	}
	for _, f := range list {
		info, err := s.tasks.GetTaskInfo(Queue, f.taskID)
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			// Lost (Redis data gone): send the same attempt again — unless
			// another replica recorded it (and deleted its task) meanwhile.
			res, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'pending', task_id = '',
				next_attempt_at = ?, updated_at = ? WHERE id = ? AND status = 'enqueued' AND task_id = ?`,
				fmtTime(s.now()), fmtTime(s.now()), f.id, f.taskID)
			if err != nil {
				return fmt.Errorf("webhooks: requeue %s: %w", f.id, err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				s.log.Warn("webhook attempt task lost; re-sending", zap.String("delivery_id", f.id), zap.String("task_id", f.taskID))
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("webhooks: task %s: %w", f.taskID, err)
		}
		var res Result
		switch info.State {
		case asynq.TaskStateCompleted:
			if err := json.Unmarshal(info.Result, &res); err != nil {
				res = Result{Error: "unreadable attempt result", RetryAfterMS: -1}
			}
		case asynq.TaskStateArchived:
			res = Result{Error: "delivery task failed: " + info.LastErr, RetryAfterMS: -1}
		default:
			continue // pending, active, retry, scheduled: not done yet
		}
		if err := s.record(ctx, f, res); err != nil {
			return err
		}
		if err := s.tasks.DeleteTask(Queue, f.taskID); err != nil {
			s.log.Debug("delete finished webhook task", zap.String("task_id", f.taskID), zap.Error(err))
		}
	}
	return nil
}

// record writes one attempt's result into the delivery log and moves the
// delivery on: succeeded (2xx), failed and endpoint disabled (410 Gone),
// failed (schedule exhausted), or pending again after the next delay (the
// receiver's Retry-After on 429/503, else the jittered schedule).
func (s *Service) record(ctx context.Context, f inflight, res Result) error {
	now := s.now().UTC()
	attempt := f.attempts + 1
	log := s.log.With(zap.String("delivery_id", f.id), zap.String("event_id", f.eventID), zap.String("event_type", f.typ),
		zap.String("endpoint_id", f.endpointID), zap.Int("attempt", attempt), zap.Int("status", res.StatusCode),
		zap.Int64("latency_ms", res.LatencyMS), zap.String("error", res.Error))
	recorded, gaveUp := false, "" // counted once the transaction commits
	err := inTx(ctx, s.db, func(tx sqldialect.Tx) error {
		recorded, gaveUp = false, ""
		r, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET attempts = ?, updated_at = ?
			WHERE id = ? AND status = 'enqueued' AND task_id = ?`, attempt, fmtTime(now), f.id, f.taskID)
		if err != nil {
			return fmt.Errorf("webhooks: record %s: %w", f.id, err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return nil // already recorded, or the endpoint was deleted
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_attempts (delivery_id, event_id, event_type, endpoint_id,
				attempt, status_code, latency_ms, error, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			f.id, f.eventID, f.typ, f.endpointID, attempt, res.StatusCode, res.LatencyMS, res.Error, fmtTime(now)); err != nil {
			return fmt.Errorf("webhooks: log attempt of %s: %w", f.id, err)
		}
		recorded = true
		summary := res.Error
		if summary == "" {
			summary = fmt.Sprintf("HTTP %d", res.StatusCode)
		}
		setStatus := func(status, lastErr string, next time.Time) error {
			_, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = ?, last_error = ?, next_attempt_at = ?, task_id = ''
				WHERE id = ?`, status, lastErr, fmtTime(next), f.id)
			if err != nil {
				return fmt.Errorf("webhooks: update %s: %w", f.id, err)
			}
			return nil
		}
		switch {
		case res.OK():
			log.Info("webhook attempt succeeded")
			return setStatus("succeeded", "", now)
		case res.StatusCode == 410:
			log.Warn("webhook endpoint answered 410 Gone: disabling it")
			if _, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET disabled_at = ?, disabled_reason = ?, updated_at = ?
				WHERE id = ? AND disabled_at IS NULL`, fmtTime(now), "receiver answered 410 Gone", fmtTime(now), f.endpointID); err != nil {
				return fmt.Errorf("webhooks: disable %s: %w", f.endpointID, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled', updated_at = ?
				WHERE endpoint_id = ? AND status = 'pending'`, fmtTime(now), f.endpointID); err != nil {
				return fmt.Errorf("webhooks: disable %s: %w", f.endpointID, err)
			}
			gaveUp = GiveUpGone
			return setStatus("failed", "410 Gone: endpoint disabled", now)
		}
		delay, ok := retryDelay(s.schedule, attempt, s.rnd)
		if !ok {
			log.Warn("webhook delivery given up")
			gaveUp = GiveUpExhausted
			return setStatus("failed", fmt.Sprintf("gave up after %d attempts: %s", attempt, summary), now)
		}
		if (res.StatusCode == 429 || res.StatusCode == 503) && res.RetryAfterMS >= 0 {
			delay = min(time.Duration(res.RetryAfterMS)*time.Millisecond, MaxRetryAfter)
		}
		log.Warn("webhook attempt failed; will retry", zap.Duration("retry_in", delay))
		return setStatus("pending", summary, now.Add(delay))
	})
	if err == nil && recorded {
		s.metrics.attempt(res)
		s.metrics.giveUp(gaveUp)
	}
	return err
}
