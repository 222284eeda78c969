package webhooks

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/sqldialect"
)

// Error codes of the webhook API (besides httpapi's).
const (
	CodeInvalidURL       = "invalid_url"
	CodeInvalidSecret    = "invalid_secret"
	CodeInvalidEventType = "invalid_event_type"
	CodeDefaultSecret    = "uses_default_secret"
)

// maxRequest bounds request bodies.
const maxRequest = 16 << 10

// Handler returns the HTTP API (every route needs an API key):
//
//	POST   /v1/webhooks                          register an endpoint → 201 (with its secret)
//	GET    /v1/webhooks[?job_id=]                registered endpoints (or one job's per-upload ones)
//	GET    /v1/webhooks/{id}                     one endpoint
//	DELETE /v1/webhooks/{id}                     delete it, its deliveries and log → 204
//	POST   /v1/webhooks/{id}/rotate-secret       new secret; the old one signs too for 24 h
//	GET    /v1/webhooks/{id}/deliveries          delivery log, newest first (?event_id=, ?limit=)
//	POST   /v1/webhook-events/{event_id}/replay  deliver an event to its endpoints again → 202
func (s *Service) Handler() http.Handler { return httpapi.Handler(s.keys, s.Routes()) }

// Routes lists the webhook API; every route needs an API key.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		httpapi.Authed("POST /v1/webhooks", s.create),
		httpapi.Authed("GET /v1/webhooks", s.list),
		httpapi.Authed("GET /v1/webhooks/{id}", s.get),
		httpapi.Authed("DELETE /v1/webhooks/{id}", s.delete),
		httpapi.Authed("POST /v1/webhooks/{id}/rotate-secret", s.rotate),
		httpapi.Authed("POST /v1/webhooks/{id}/enable", s.enable),
		httpapi.Authed("GET /v1/webhooks/{id}/deliveries", s.deliveries),
		httpapi.Authed("POST /v1/webhook-events/{id}/replay", s.replay),
	}
}

// endpointJSON is an endpoint as the API shows it. Secret is only shown when
// it is created or rotated.
type endpointJSON struct {
	ID             string     `json:"id"`
	URL            string     `json:"url"`
	EventTypes     []string   `json:"event_types"`
	JobID          string     `json:"job_id,omitempty"`
	Secret         string     `json:"secret,omitempty"`
	PreviousExpiry *time.Time `json:"previous_secret_expires_at,omitempty"`
	Disabled       bool       `json:"disabled"`
	DisabledAt     *time.Time `json:"disabled_at,omitempty"`
	DisabledReason string     `json:"disabled_reason,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

// attemptJSON is one delivery log entry.
type attemptJSON struct {
	DeliveryID string    `json:"delivery_id"`
	EventID    string    `json:"event_id"`
	EventType  string    `json:"event_type"`
	Attempt    int       `json:"attempt"`
	StatusCode int       `json:"status_code"`
	LatencyMS  int64     `json:"latency_ms"`
	Error      string    `json:"error,omitempty"`
	At         time.Time `json:"at"`
}

func (s *Service) create(w http.ResponseWriter, r *http.Request) {
	var req struct {
		URL        string    `json:"url"`
		Secret     *string   `json:"secret"`
		EventTypes *[]string `json:"event_types"`
	}
	if !httpapi.DecodeJSON(w, r, &req, maxRequest, true) {
		return
	}
	if err := validURL(req.URL); err != nil {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidURL, err.Error())
		return
	}
	secret := NewSecret()
	if req.Secret != nil {
		if _, err := ParseSecret(*req.Secret); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidSecret,
				"secret must be whsec_ followed by base64 of 24 to 64 bytes")
			return
		}
		secret = *req.Secret
	}
	types := DefaultEventTypes
	if req.EventTypes != nil {
		var err error
		if types, err = normaliseTypes(*req.EventTypes); err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidEventType, err.Error())
			return
		}
	}
	now := s.now().UTC()
	id := jobid.Random(endpointPrefix)
	_, err := s.db.ExecContext(r.Context(), `INSERT INTO webhook_endpoints (id, url, secret, event_types, created_at, updated_at, tenant_id)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, id, req.URL, secret, strings.Join(types, ","), fmtTime(now), fmtTime(now), httpapi.Tenant(r.Context()))
	if err != nil {
		s.internal(w, r, fmt.Errorf("insert endpoint: %w", err))
		return
	}
	s.log.Info("webhook endpoint registered", zap.String("endpoint_id", id), zap.Strings("event_types", types),
		zap.String("key", httpapi.KeyName(r.Context())))
	ep, err := s.endpoint(r.Context(), id)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	ep.Secret = secret
	w.Header().Set("Location", s.public+"/v1/webhooks/"+id)
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusCreated, ep)
}

// normaliseTypes checks types against EventTypes, dropping duplicates; at
// least one is needed.
func normaliseTypes(types []string) ([]string, error) {
	if len(types) == 0 {
		return nil, errors.New("event_types must list at least one type (omit it for the default)")
	}
	var out []string
	for _, t := range types {
		if !slices.Contains(EventTypes, t) {
			return nil, fmt.Errorf("unknown event type %q; known: %s", t, strings.Join(EventTypes, ", "))
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

const endpointColumns = `id, url, event_types, COALESCE(job_id, ''), previous_expires_at, disabled_at, disabled_reason, created_at, updated_at`

type scanner interface{ Scan(dest ...any) error }

func scanEndpoint(sc scanner) (*endpointJSON, error) {
	var (
		ep                          endpointJSON
		types, created, updated     string
		previousExpires, disabledAt sql.NullString
	)
	if err := sc.Scan(&ep.ID, &ep.URL, &types, &ep.JobID, &previousExpires, &disabledAt, &ep.DisabledReason, &created, &updated); err != nil {
		return nil, err
	}
	ep.EventTypes = strings.Split(types, ",")
	var err error
	if ep.CreatedAt, err = parseTime(created); err != nil {
		return nil, err
	}
	if ep.UpdatedAt, err = parseTime(updated); err != nil {
		return nil, err
	}
	if previousExpires.Valid {
		if t, err := parseTime(previousExpires.String); err == nil {
			ep.PreviousExpiry = &t
		}
	}
	if disabledAt.Valid {
		if t, err := parseTime(disabledAt.String); err == nil {
			ep.Disabled, ep.DisabledAt = true, &t
		}
	}
	return &ep, nil
}

var errNotFound = errors.New("webhooks: not found")

// endpoint is endpoint id of the request's tenant (errNotFound for another
// tenant's: it is not there for this key).
func (s *Service) endpoint(ctx context.Context, id string) (*endpointJSON, error) {
	ep, err := scanEndpoint(s.db.QueryRowContext(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints WHERE id = ? AND tenant_id = ?`,
		id, httpapi.Tenant(ctx)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", id, err)
	}
	return ep, nil
}

func (s *Service) list(w http.ResponseWriter, r *http.Request) {
	where, args := `tenant_id = ? AND job_id IS NULL`, []any{httpapi.Tenant(r.Context())}
	if j := r.URL.Query().Get("job_id"); j != "" {
		if !jobid.ValidJob(j) {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed job id")
			return
		}
		where, args = `tenant_id = ? AND job_id = ?`, append(args, j)
	}
	rows, err := s.db.QueryContext(r.Context(), `SELECT `+endpointColumns+` FROM webhook_endpoints WHERE `+where+` ORDER BY created_at, id`, args...)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer rows.Close()
	out := []*endpointJSON{}
	for rows.Next() {
		ep, err := scanEndpoint(rows)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		out = append(out, ep)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"webhooks": out})
}

// pathEndpoint loads the endpoint named by {id}, answering the request
// itself when it is malformed or unknown.
func (s *Service) pathEndpoint(w http.ResponseWriter, r *http.Request) (*endpointJSON, bool) {
	id := r.PathValue("id")
	if !jobid.Valid(id, endpointPrefix) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed webhook id")
		return nil, false
	}
	ep, err := s.endpoint(r.Context(), id)
	if errors.Is(err, errNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "webhook not found")
		return nil, false
	}
	if err != nil {
		s.internal(w, r, err)
		return nil, false
	}
	return ep, true
}

// enable turns a disabled endpoint (410 Gone) back on; later events are
// delivered to it again (the ones in between are not: replay them).
func (s *Service) enable(w http.ResponseWriter, r *http.Request) {
	ep, ok := s.pathEndpoint(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	if _, err := s.db.ExecContext(ctx, `UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = '', updated_at = ?
		WHERE id = ?`, fmtTime(s.now().UTC()), ep.ID); err != nil {
		s.internal(w, r, fmt.Errorf("enable endpoint %s: %w", ep.ID, err))
		return
	}
	s.log.Info("webhook endpoint enabled", zap.String("endpoint_id", ep.ID), zap.String("key", httpapi.KeyName(ctx)))
	if ep, ok = s.pathEndpoint(w, r); ok {
		httpapi.WriteJSON(w, http.StatusOK, ep)
	}
}

func (s *Service) get(w http.ResponseWriter, r *http.Request) {
	if ep, ok := s.pathEndpoint(w, r); ok {
		httpapi.WriteJSON(w, http.StatusOK, ep)
	}
}

func (s *Service) delete(w http.ResponseWriter, r *http.Request) {
	ep, ok := s.pathEndpoint(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	err := inTx(ctx, s.db, func(tx sqldialect.Tx) error {
		for _, q := range []string{
			`DELETE FROM webhook_attempts WHERE endpoint_id = ?`,
			`DELETE FROM webhook_deliveries WHERE endpoint_id = ?`,
			`DELETE FROM webhook_endpoints WHERE id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, ep.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.internal(w, r, fmt.Errorf("delete endpoint %s: %w", ep.ID, err))
		return
	}
	s.log.Info("webhook endpoint deleted", zap.String("endpoint_id", ep.ID), zap.String("key", httpapi.KeyName(ctx)))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) rotate(w http.ResponseWriter, r *http.Request) {
	ep, ok := s.pathEndpoint(w, r)
	if !ok {
		return
	}
	if ep.JobID != "" {
		httpapi.WriteError(w, http.StatusConflict, CodeDefaultSecret,
			"a per-upload webhook is signed with the server's default secret (KILN_WEBHOOK_SECRET)")
		return
	}
	now := s.now().UTC()
	secret := NewSecret()
	_, err := s.db.ExecContext(r.Context(), `UPDATE webhook_endpoints
		SET previous_secret = secret, previous_expires_at = ?, secret = ?, updated_at = ? WHERE id = ?`,
		fmtTime(now.Add(RotationGrace)), secret, fmtTime(now), ep.ID)
	if err != nil {
		s.internal(w, r, fmt.Errorf("rotate %s: %w", ep.ID, err))
		return
	}
	s.log.Info("webhook secret rotated", zap.String("endpoint_id", ep.ID), zap.String("key", httpapi.KeyName(r.Context())))
	if ep, err = s.endpoint(r.Context(), ep.ID); err != nil {
		s.internal(w, r, err)
		return
	}
	ep.Secret = secret
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, ep)
}

func (s *Service) deliveries(w http.ResponseWriter, r *http.Request) {
	ep, ok := s.pathEndpoint(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, "limit must be 1 to 1000")
			return
		}
		limit = n
	}
	where, args := `endpoint_id = ?`, []any{ep.ID}
	if e := q.Get("event_id"); e != "" {
		if !jobid.Valid(e, eventPrefix) {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed event id")
			return
		}
		where, args = where+` AND event_id = ?`, append(args, e)
	}
	rows, err := s.db.QueryContext(r.Context(), `SELECT delivery_id, event_id, event_type, attempt, status_code, latency_ms, error, at
		FROM webhook_attempts WHERE `+where+` ORDER BY id DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer rows.Close()
	out := []attemptJSON{}
	for rows.Next() {
		var a attemptJSON
		var at string
		if err := rows.Scan(&a.DeliveryID, &a.EventID, &a.EventType, &a.Attempt, &a.StatusCode, &a.LatencyMS, &a.Error, &at); err != nil {
			s.internal(w, r, err)
			return
		}
		if a.At, err = parseTime(at); err != nil {
			s.internal(w, r, err)
			return
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"deliveries": out})
}

// replay delivers an event again, now, to every still-enabled endpoint that
// it was delivered (or due) to: a new delivery each, attempts from 1, the
// same body and webhook-id (receivers dedupe).
func (s *Service) replay(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !jobid.Valid(id, eventPrefix) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed event id")
		return
	}
	ctx := r.Context()
	var created []string
	err := inTx(ctx, s.db, func(tx sqldialect.Tx) error {
		var typ string
		if err := tx.QueryRowContext(ctx, `SELECT type FROM webhook_events WHERE id = ? AND tenant_id = ?`, id, httpapi.Tenant(ctx)).Scan(&typ); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return errNotFound
			}
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT DISTINCT d.endpoint_id FROM webhook_deliveries d
			JOIN webhook_endpoints p ON p.id = d.endpoint_id
			WHERE d.event_id = ? AND p.disabled_at IS NULL ORDER BY d.endpoint_id`, id)
		if err != nil {
			return err
		}
		var endpoints []string
		for rows.Next() {
			var e string
			if err := rows.Scan(&e); err != nil {
				rows.Close()
				return err
			}
			endpoints = append(endpoints, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		now := s.now().UTC()
		for _, e := range endpoints {
			d := jobid.Random(deliveryPrefix)
			if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (id, event_id, endpoint_id, status, next_attempt_at, created_at, updated_at)
				VALUES (?, ?, ?, 'pending', ?, ?, ?)`, d, id, e, fmtTime(now), fmtTime(now), fmtTime(now)); err != nil {
				return err
			}
			created = append(created, d)
		}
		return nil
	})
	if errors.Is(err, errNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "webhook event not found")
		return
	}
	if err != nil {
		s.internal(w, r, fmt.Errorf("replay %s: %w", id, err))
		return
	}
	s.nudge()
	s.log.Info("webhook event replayed", zap.String("event_id", id), zap.Int("deliveries", len(created)),
		zap.String("key", httpapi.KeyName(ctx)))
	if created == nil {
		created = []string{}
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"event_id": id, "deliveries": created})
}

func (s *Service) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("webhooks request failed", zap.String("path", r.URL.Path), zap.Error(err))
	httpapi.WriteError(w, http.StatusInternalServerError, httpapi.CodeInternal, "internal error")
}
