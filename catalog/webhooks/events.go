package webhooks

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/sqldialect"
	"github.com/kilnvideo/kiln/internal/tenant"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Event types.
const (
	EventJobCreated   = "job.created"
	EventJobProgress  = "job.progress" // opt-in: only endpoints that list it
	EventJobPlayable  = "job.playable" // the asset plays before READY, once per attempt
	EventJobReady     = "job.ready"
	EventJobFailed    = "job.failed"
	EventJobCanceled  = "job.canceled"
	EventAssetDeleted = "asset.deleted"
)

// EventTypes are every event type, in documentation order.
var EventTypes = []string{EventJobCreated, EventJobProgress, EventJobPlayable, EventJobReady, EventJobFailed, EventJobCanceled, EventAssetDeleted}

// DefaultEventTypes are what an endpoint registered without event_types
// (and every per-upload webhook) receives: everything but job.progress.
var DefaultEventTypes = []string{EventJobCreated, EventJobPlayable, EventJobReady, EventJobFailed, EventJobCanceled, EventAssetDeleted}

// Payload is the JSON body of every delivery. Its shape is stable: fields
// are only ever added.
type Payload struct {
	Type      string    `json:"type"`
	ID        string    `json:"id"` // the event id, also the webhook-id header
	CreatedAt time.Time `json:"created_at"`
	Data      Data      `json:"data"`
}

// Data is the subject of an event.
type Data struct {
	JobID   string `json:"job_id"`
	AssetID string `json:"asset_id"`
	// State is the job's state: queued, probing, transcoding, packaging,
	// ready, failed, canceled; "deleted" for asset.deleted.
	State string `json:"state"`
	// Progress in [0,1] within State: job.progress only.
	Progress *float64 `json:"progress,omitempty"`
	// Error: job.failed and job.canceled.
	Error *ErrorData `json:"error,omitempty"`
	// Playback: job.playable and job.ready only (job.playable's has no
	// MP4: the download is built after READY).
	Playback *Playback `json:"playback,omitempty"`
}

// ErrorData is a job's failure reason.
type ErrorData struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Playback are a playable or ready asset's URLs. A signed asset's need a ?token= (mint
// one with POST /v1/assets/{id}/playback-token).
type Playback struct {
	HLS    string `json:"hls"`
	MP4    string `json:"mp4,omitempty"`
	Poster string `json:"poster,omitempty"`
}

// Id prefixes.
const (
	endpointPrefix = "whe_"
	eventPrefix    = "evt_"
	deliveryPrefix = "whd_"
)

// validURL reports whether u can be an endpoint: an absolute http(s) URL
// without credentials or fragment, at most 2048 bytes. Where it may be
// dialled is decided at delivery time (the SSRF guard).
func validURL(u string) error {
	if u == "" || len(u) > 2048 {
		return fmt.Errorf("url must be 1 to 2048 bytes")
	}
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Errorf("url: %v", err)
	case p.Scheme != "http" && p.Scheme != "https":
		return fmt.Errorf("url must be http or https")
	case p.Host == "" || p.Hostname() == "":
		return fmt.Errorf("url has no host")
	case p.User != nil:
		return fmt.Errorf("url must not carry credentials")
	case p.Fragment != "" || strings.Contains(u, "#"):
		return fmt.Errorf("url must not have a fragment")
	}
	return nil
}

// eventOf maps a job event that changed the job to a webhook event type and
// the job state it reports; ok is false for events that make none.
func eventOf(ev *kilnv1.JobEvent) (typ, state string, ok bool) {
	switch ev.GetState() {
	case kilnv1.JobState_JOB_STATE_QUEUED:
		return EventJobCreated, "queued", true
	case kilnv1.JobState_JOB_STATE_PROBING:
		return EventJobProgress, "probing", true
	case kilnv1.JobState_JOB_STATE_TRANSCODING:
		if ev.GetPlayable() {
			// Changed only the first time in an attempt (the store's
			// playable time), so recorded once per attempt.
			return EventJobPlayable, "transcoding", true
		}
		return EventJobProgress, "transcoding", true
	case kilnv1.JobState_JOB_STATE_PACKAGING:
		return EventJobProgress, "packaging", true
	case kilnv1.JobState_JOB_STATE_READY:
		if ev.GetOutputs().GetPartial() {
			return "", "", false // a rendition retry: the job was ready already
		}
		return EventJobReady, "ready", true
	case kilnv1.JobState_JOB_STATE_FAILED:
		if ev.GetError().GetCode() == failure.Canceled {
			return EventJobCanceled, "canceled", true
		}
		return EventJobFailed, "failed", true
	case kilnv1.JobState_JOB_STATE_CANCELED:
		return EventJobCanceled, "canceled", true
	}
	return "", "", false
}

// OnApply is the sqlite.ApplyHook of the transactional outbox: inside the
// transaction that applies a job event, when the event changed the job, it
// records the webhook event and one pending delivery per matching endpoint.
// A per-upload webhook_url (on the QUEUED event) first becomes an implicit
// endpoint of that job. An error rolls the job event back with it.
func (s *Service) OnApply(ctx context.Context, raw *sql.Tx, ev *kilnv1.JobEvent, changed bool) error {
	tx := sqldialect.Tx{Tx: raw, Dialect: s.db.Dialect}
	jobID, assetID := ev.GetJobId(), ev.GetAssetId()
	if assetID == "" {
		assetID = jobid.AssetOf(jobID)
	}
	now := s.now().UTC()
	// The per-upload endpoint is registered even when QUEUED changes nothing:
	// it can arrive after the job's PROBING (ingest enqueues the probe
	// first), and the job's later events must still reach it. Registering
	// is idempotent.
	if u := ev.GetWebhookUrl(); u != "" && ev.GetState() == kilnv1.JobState_JOB_STATE_QUEUED {
		if err := s.addJobEndpoint(ctx, tx, jobID, tenant.OfEvent(ev.GetTenantId()), u, now); err != nil {
			return err
		}
	}
	// The QUEUED names the job's tenant: what was held until it is known
	// goes out now, to that tenant's endpoints.
	if ev.GetState() == kilnv1.JobState_JOB_STATE_QUEUED {
		if err := s.adopt(ctx, tx, jobID, now); err != nil {
			return err
		}
	}
	if !changed {
		return nil
	}
	typ, state, ok := eventOf(ev)
	if !ok {
		return nil
	}
	if typ != EventJobCreated && ev.GetAttempt() <= 1 {
		// The job's QUEUED may come after its first stage's events (ingest
		// enqueues the probe before it announces the job; a catalog replica
		// that dies holding the QUEUED leaves it to be redelivered later),
		// and then changes nothing: the job is created by this event.
		if err := s.emitCreated(ctx, tx, jobID, assetID, now); err != nil {
			return err
		}
	}
	data := Data{JobID: jobID, AssetID: assetID, State: state}
	switch typ {
	case EventJobProgress:
		p := ev.GetProgress()
		data.Progress = &p
	case EventJobFailed, EventJobCanceled:
		code, msg := ev.GetError().GetCode(), ev.GetError().GetMessage()
		if code == "" {
			code = failure.Internal
		}
		data.Error = &ErrorData{Code: code, Message: msg}
	case EventJobReady, EventJobPlayable:
		data.Playback = s.playback(assetID, ev.GetOutputs())
	}
	return s.emit(ctx, tx, typ, data, now)
}

// emitCreated records the job.created of a job that has none.
func (s *Service) emitCreated(ctx context.Context, tx sqldialect.Tx, jobID, assetID string, now time.Time) error {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM webhook_events WHERE job_id = ? AND type = ? LIMIT 1`, jobID, EventJobCreated).Scan(&one)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("webhooks: job.created of %s: %w", jobID, err)
	}
	return s.emit(ctx, tx, EventJobCreated, Data{JobID: jobID, AssetID: assetID, State: "queued"}, now)
}

// AssetDeleted records an asset.deleted event for every matching endpoint
// (registered endpoints and the job's per-upload one). Call it inside the
// transaction that deletes the asset so the event commits (or not) with
// the deletion; with a nil tx it runs in its own transaction.
func (s *Service) AssetDeleted(ctx context.Context, raw *sql.Tx, jobID, assetID string) error {
	data := Data{JobID: jobID, AssetID: assetID, State: "deleted"}
	tx := sqldialect.Tx{Tx: raw, Dialect: s.db.Dialect}
	if raw == nil {
		return inTx(ctx, s.db, func(tx sqldialect.Tx) error { return s.emit(ctx, tx, EventAssetDeleted, data, s.now().UTC()) })
	}
	return s.emit(ctx, tx, EventAssetDeleted, data, s.now().UTC())
}

func (s *Service) playback(assetID string, o *kilnv1.AssetOutputs) *Playback {
	base := s.public + "/v1/play/" + assetID
	p := &Playback{HLS: base + "/master.m3u8"}
	if o.GetMp4Key() != "" {
		p.MP4 = base + "/download.mp4"
	}
	if o.GetPosterKey() != "" {
		p.Poster = base + "/poster.jpg"
	}
	return p
}

// addJobEndpoint records a per-upload webhook as an implicit endpoint of
// jobID, signed with its own secret (UploadSecret of the default secret and
// jobID). Its id is derived from job and URL
// so a repeat is a no-op.
func (s *Service) addJobEndpoint(ctx context.Context, tx sqldialect.Tx, jobID, tenantID, u string, now time.Time) error {
	if err := validURL(u); err != nil {
		s.log.Warn("per-upload webhook_url ignored", zap.String("job_id", jobID), zap.Error(err))
		return nil
	}
	id := jobid.Derived(endpointPrefix, jobID+"\x00"+u)
	_, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (id, url, secret, event_types, job_id, created_at, updated_at, derived_secret, tenant_id)
		VALUES (?, ?, '', ?, ?, ?, ?, 1, ?) ON CONFLICT DO NOTHING`,
		id, u, strings.Join(DefaultEventTypes, ","), jobID, fmtTime(now), fmtTime(now), tenantID)
	if err != nil {
		return fmt.Errorf("webhooks: job %s: per-upload endpoint: %w", jobID, err)
	}
	return nil
}

// emit inserts the event and a pending delivery per matching endpoint; it
// records nothing when no endpoint wants the event.
func (s *Service) emit(ctx context.Context, tx sqldialect.Tx, typ string, data Data, now time.Time) error {
	owner, err := jobTenant(ctx, tx, data.JobID)
	if err != nil {
		return err
	}
	var endpoints []string
	if owner != "" {
		if endpoints, err = matching(ctx, tx, typ, data.JobID, owner); err != nil {
			return err
		}
		if len(endpoints) == 0 {
			return nil
		}
	}
	// A job whose tenant is not known yet (its QUEUED comes late) has its
	// events held, of no tenant and with no delivery, until adopt.
	p := Payload{Type: typ, ID: jobid.Random(eventPrefix), CreatedAt: now, Data: data}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("webhooks: marshal %s: %w", typ, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_events (id, type, job_id, asset_id, body, created_at, tenant_id)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, p.ID, typ, data.JobID, data.AssetID, string(body), fmtTime(now), owner); err != nil {
		return fmt.Errorf("webhooks: insert event %s: %w", typ, err)
	}
	for _, ep := range endpoints {
		if err := insertDelivery(ctx, tx, p.ID, ep, now); err != nil {
			return err
		}
	}
	s.nudge()
	return nil
}

// adopt delivers the events held for jobID (recorded while its tenant was
// not known) to the endpoints of its tenant, now known, oldest first.
func (s *Service) adopt(ctx context.Context, tx sqldialect.Tx, jobID string, now time.Time) error {
	owner, err := jobTenant(ctx, tx, jobID)
	if err != nil || owner == "" {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, type FROM webhook_events WHERE job_id = ? AND tenant_id = '' ORDER BY created_at, CASE WHEN type = 'job.created' THEN 0 ELSE 1 END, id`, jobID)
	if err != nil {
		return fmt.Errorf("webhooks: held events of %s: %w", jobID, err)
	}
	type held struct{ id, typ string }
	var events []held
	for rows.Next() {
		var h held
		if err := rows.Scan(&h.id, &h.typ); err != nil {
			rows.Close()
			return fmt.Errorf("webhooks: held events of %s: %w", jobID, err)
		}
		events = append(events, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("webhooks: held events of %s: %w", jobID, err)
	}
	if len(events) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_events SET tenant_id = ? WHERE job_id = ? AND tenant_id = ''`, owner, jobID); err != nil {
		return fmt.Errorf("webhooks: adopt events of %s: %w", jobID, err)
	}
	for _, h := range events {
		endpoints, err := matching(ctx, tx, h.typ, jobID, owner)
		if err != nil {
			return err
		}
		for _, ep := range endpoints {
			if err := insertDelivery(ctx, tx, h.id, ep, now); err != nil {
				return err
			}
		}
	}
	s.nudge()
	return nil
}

func insertDelivery(ctx context.Context, tx sqldialect.Tx, eventID, endpointID string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (id, event_id, endpoint_id, status, next_attempt_at, created_at, updated_at)
		VALUES (?, ?, ?, 'pending', ?, ?, ?)`, jobid.Random(deliveryPrefix), eventID, endpointID, fmtTime(now), fmtTime(now), fmtTime(now))
	if err != nil {
		return fmt.Errorf("webhooks: insert delivery of %s: %w", eventID, err)
	}
	return nil
}

// jobTenant is the tenant of jobID as the catalog recorded it in this
// transaction ("" when its QUEUED, which alone names it, is not recorded
// yet, or there is no such job).
func jobTenant(ctx context.Context, tx sqldialect.Tx, jobID string) (string, error) {
	var t string
	err := tx.QueryRowContext(ctx, `SELECT tenant_id FROM jobs WHERE id = ?`, jobID).Scan(&t)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("webhooks: tenant of job %s: %w", jobID, err)
	}
	return t, nil
}

// matching lists the enabled endpoints that want typ for jobID of tenant
// owner: owner's registered ones and the job's per-upload ones. A job of
// no tenant yet ("") reaches no registered endpoint: none may see it.
func matching(ctx context.Context, tx sqldialect.Tx, typ, jobID, owner string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, event_types FROM webhook_endpoints
		WHERE disabled_at IS NULL AND ((job_id IS NULL AND tenant_id = ? AND tenant_id <> '') OR job_id = ?) ORDER BY id`, owner, jobID)
	if err != nil {
		return nil, fmt.Errorf("webhooks: match endpoints: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id, types string
		if err := rows.Scan(&id, &types); err != nil {
			return nil, fmt.Errorf("webhooks: match endpoints: %w", err)
		}
		if slices.Contains(strings.Split(types, ","), typ) {
			ids = append(ids, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhooks: match endpoints: %w", err)
	}
	return ids, nil
}
