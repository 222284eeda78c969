// Package tenants is the tenant and key API of the catalog: an admin key
// (scope admin, from KILN_API_KEYS) creates, lists and disables tenants and
// creates, lists and revokes their API keys. Keys are kept in the catalog's
// database as SHA-256 digests (the secret is shown once, at creation) and
// mirrored into the key directory on Redis (apikeys.Directory), which every
// HTTP role consults: a new key works on ingest and the catalog at once, a
// revoked one stops within httpapi.DefaultDirectoryTTL.
//
//	POST   /v1/tenants                {"name"} → 201 tenant
//	GET    /v1/tenants                every tenant, oldest first
//	GET    /v1/tenants/{id}           one tenant
//	DELETE /v1/tenants/{id}           disable it and revoke its keys → 204
//	POST   /v1/tenants/{id}/keys      {"name","scope"} → 201 key, with its secret (once)
//	GET    /v1/tenants/{id}/keys      its keys (never their secrets)
//	DELETE /v1/keys/{id}              revoke a key → 204
//	PUT    /v1/tenants/{id}/quotas    set its quotas → 200 tenant
//	GET    /v1/tenants/{id}/usage     its usage against its quotas
//	GET    /v1/usage                  the usage of the key's own tenant (any read or write key)
package tenants

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"regexp"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/sqldialect"
	"github.com/kilnvideo/kiln/internal/tenant"
)

// Error codes of the tenant API (besides httpapi's).
const (
	// CodeInvalidName (400): a tenant or key name that is not 1 to 64
	// letters, digits, '.', '_' or '-' (starting with a letter or digit).
	CodeInvalidName = "invalid_name"
	// CodeInvalidScope (400): a key scope other than read or write.
	CodeInvalidScope = "invalid_scope"
	// CodeConflict (409): the default tenant cannot be deleted; a deleted
	// tenant gets no new keys.
	CodeConflict = "conflict"
)

// keyPrefix and secretPrefix begin key ids and key secrets.
const (
	keyPrefix    = "key_"
	secretPrefix = "kiln_"
)

// Directory is where key records go for every HTTP role to find
// (apikeys.Directory).
type Directory interface {
	Put(ctx context.Context, hexDigest string, rec httpapi.KeyRecord) error
	Remove(ctx context.Context, hexDigests ...string) error
}

// Config configures a Service.
type Config struct {
	DB      *sql.DB
	Dialect sqldialect.Dialect
	// Directory receives every key record; required.
	Directory Directory
	// SyncInterval is how often Run writes every key record to the
	// directory again (a write that failed, a directory that lost its
	// data); DefaultSyncInterval when 0.
	SyncInterval time.Duration
	// Usage counts what tenants use (catalog.Store) and Quotas keeps
	// limits and usage where ingest checks them (quota.Store); without
	// them the quota routes answer 503 and RunUsage does nothing.
	Usage  UsageSource
	Quotas QuotaStore
	// UsageInterval is how often RunUsage publishes limits and usage;
	// DefaultUsageInterval when 0.
	UsageInterval time.Duration
	Logger        *zap.Logger
}

// DefaultSyncInterval is how often Run mirrors the keys into the directory.
const DefaultSyncInterval = time.Minute

// Service is the tenant and key API.
type Service struct {
	db   sqldialect.DB
	dir  Directory
	sync time.Duration
	log  *zap.Logger
	now  func() time.Time
	*quotaState
}

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationFiles embed.FS

// versionTable records the migrations of this package, apart from the
// catalog's and the webhooks' in the same database.
const versionTable = "tenants_schema_version"

// New migrates the tenant tables and returns a Service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DB == nil || cfg.Directory == nil {
		return nil, errors.New("tenants: Config.DB and Config.Directory are required")
	}
	s := &Service{db: sqldialect.DB{DB: cfg.DB, Dialect: cfg.Dialect}, dir: cfg.Directory, sync: cfg.SyncInterval,
		log: cfg.Logger, now: time.Now, quotaState: newQuotaState(cfg)}
	if s.sync <= 0 {
		s.sync = DefaultSyncInterval
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	files, err := fs.Sub(migrationFiles, "migrations/"+cfg.Dialect.String())
	if err != nil {
		return nil, fmt.Errorf("tenants: migrate: %w", err)
	}
	if err := cfg.Dialect.Migrate(ctx, cfg.DB, versionTable, files); err != nil {
		return nil, fmt.Errorf("tenants: migrate: %w", err)
	}
	return s, nil
}

// Routes lists the API; every route but GET /v1/usage needs an admin key.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		httpapi.AdminOnly("POST /v1/tenants", s.createTenant),
		httpapi.AdminOnly("GET /v1/tenants", s.listTenants),
		httpapi.AdminOnly("GET /v1/tenants/{id}", s.getTenant),
		httpapi.AdminOnly("DELETE /v1/tenants/{id}", s.deleteTenant),
		httpapi.AdminOnly("POST /v1/tenants/{id}/keys", s.createKey),
		httpapi.AdminOnly("GET /v1/tenants/{id}/keys", s.listKeys),
		httpapi.AdminOnly("DELETE /v1/keys/{id}", s.revokeKey),
		httpapi.AdminOnly("PUT /v1/tenants/{id}/quotas", s.setQuotas),
		httpapi.AdminOnly("GET /v1/tenants/{id}/usage", s.tenantUsage),
		httpapi.Authed("GET /v1/usage", s.ownUsage),
	}
}

// Run mirrors every key into the directory at once and then every
// SyncInterval, until ctx ends: active keys are written, revoked ones
// removed, so a directory write that failed (or a Redis that lost its
// data) is repaired within SyncInterval.
func (s *Service) Run(ctx context.Context) error {
	s.pass(ctx, "key directory sync", s.Sync)
	return s.every(ctx, s.sync, "key directory sync", s.Sync)
}

// every runs pass every d until ctx ends, logging its errors as what.
func (s *Service) every(ctx context.Context, d time.Duration, what string, pass func(context.Context) error) error {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.pass(ctx, what, pass)
		}
	}
}

// pass runs pass once, logging its error as what.
func (s *Service) pass(ctx context.Context, what string, pass func(context.Context) error) {
	if err := pass(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn(what, zap.Error(err))
	}
}

// Sync writes every active key to the directory and removes every revoked
// one (see Run).
func (s *Service) Sync(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT `+keyColumns+`, digest FROM api_keys`)
	if err != nil {
		return fmt.Errorf("tenants: sync: %w", err)
	}
	type rec struct {
		k      *keyJSON
		digest string
	}
	var all []rec
	for rows.Next() {
		var r rec
		var err error
		if r.k, err = scanKey(rows, &r.digest); err != nil {
			rows.Close()
			return fmt.Errorf("tenants: sync: %w", err)
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("tenants: sync: %w", err)
	}
	var revoked []string
	for _, r := range all {
		if r.k.RevokedAt != nil {
			revoked = append(revoked, r.digest)
			continue
		}
		if err := s.dir.Put(ctx, r.digest, r.k.record()); err != nil {
			return fmt.Errorf("tenants: sync: %w", err)
		}
	}
	if err := s.dir.Remove(ctx, revoked...); err != nil {
		return fmt.Errorf("tenants: sync: %w", err)
	}
	return nil
}

// JSON shapes.
type (
	tenantJSON struct {
		ID        string     `json:"id"`
		Name      string     `json:"name"`
		CreatedAt time.Time  `json:"created_at"`
		Disabled  bool       `json:"disabled"`
		DeletedAt *time.Time `json:"deleted_at,omitempty"`
		// Quotas are its limits (quotas.go).
		Quotas quota.Limits `json:"quotas"`
	}
	keyJSON struct {
		ID        string        `json:"id"`
		TenantID  string        `json:"tenant_id"`
		Name      string        `json:"name"`
		Scope     httpapi.Scope `json:"scope"`
		Secret    string        `json:"secret,omitempty"`
		CreatedAt time.Time     `json:"created_at"`
		Revoked   bool          `json:"revoked"`
		RevokedAt *time.Time    `json:"revoked_at,omitempty"`
	}
)

func (k *keyJSON) record() httpapi.KeyRecord {
	return httpapi.KeyRecord{ID: k.ID, Tenant: k.TenantID, Name: k.Name, Scope: k.Scope}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

const (
	tenantColumns = `id, name, created_at, deleted_at, quota_concurrent_jobs, quota_stored_bytes, quota_encoded_minutes`
	keyColumns    = `id, tenant_id, name, scope, created_at, revoked_at`
	maxBody       = 16 << 10
)

type scanner interface{ Scan(dest ...any) error }

func scanTenant(sc scanner) (*tenantJSON, error) {
	var t tenantJSON
	var created string
	var deleted sql.NullString
	if err := sc.Scan(&t.ID, &t.Name, &created, &deleted, &t.Quotas.ConcurrentJobs, &t.Quotas.StoredBytes,
		&t.Quotas.EncodedMinutesPerMonth); err != nil {
		return nil, err
	}
	var err error
	if t.CreatedAt, err = parseTime(created); err != nil {
		return nil, err
	}
	if deleted.Valid {
		at, err := parseTime(deleted.String)
		if err != nil {
			return nil, err
		}
		t.Disabled, t.DeletedAt = true, &at
	}
	return &t, nil
}

func scanKey(sc scanner, extra ...any) (*keyJSON, error) {
	var k keyJSON
	var created string
	var revoked sql.NullString
	if err := sc.Scan(append([]any{&k.ID, &k.TenantID, &k.Name, &k.Scope, &created, &revoked}, extra...)...); err != nil {
		return nil, err
	}
	var err error
	if k.CreatedAt, err = parseTime(created); err != nil {
		return nil, err
	}
	if revoked.Valid {
		at, err := parseTime(revoked.String)
		if err != nil {
			return nil, err
		}
		k.Revoked, k.RevokedAt = true, &at
	}
	return &k, nil
}

func (s *Service) createTenant(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name   string       `json:"name"`
		Quotas quota.Limits `json:"quotas"`
	}
	if !httpapi.DecodeJSON(w, r, &req, maxBody, true) {
		return
	}
	if !nameRE.MatchString(req.Name) {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidName, "name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
		return
	}
	if !req.Quotas.Valid() {
		writeInvalidQuota(w)
		return
	}
	t := &tenantJSON{ID: tenant.New(), Name: req.Name, CreatedAt: s.now().UTC().Truncate(time.Microsecond), Quotas: req.Quotas}
	if _, err := s.db.ExecContext(r.Context(), `INSERT INTO tenants (id, name, created_at, quota_concurrent_jobs, quota_stored_bytes,
		quota_encoded_minutes) VALUES (?, ?, ?, ?, ?, ?)`, t.ID, t.Name, fmtTime(t.CreatedAt),
		t.Quotas.ConcurrentJobs, t.Quotas.StoredBytes, t.Quotas.EncodedMinutesPerMonth); err != nil {
		s.internal(w, r, fmt.Errorf("insert tenant: %w", err))
		return
	}
	s.putLimits(r.Context(), t.ID, t.Quotas)
	s.log.Info("tenant created", zap.String("tenant_id", t.ID), zap.String("name", t.Name), zap.String("key", httpapi.KeyName(r.Context())))
	httpapi.WriteJSON(w, http.StatusCreated, t)
}

func (s *Service) listTenants(w http.ResponseWriter, r *http.Request) {
	rows, err := s.db.QueryContext(r.Context(), `SELECT `+tenantColumns+` FROM tenants ORDER BY created_at, id`)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer rows.Close()
	out := []*tenantJSON{}
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tenants": out})
}

// pathTenant loads the tenant named by {id}, answering the request itself
// when it is malformed or unknown.
func (s *Service) pathTenant(w http.ResponseWriter, r *http.Request) (*tenantJSON, bool) {
	id := r.PathValue("id")
	if !tenant.Valid(id) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed tenant id")
		return nil, false
	}
	t, err := scanTenant(s.db.QueryRowContext(r.Context(), `SELECT `+tenantColumns+` FROM tenants WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "tenant not found")
		return nil, false
	}
	if err != nil {
		s.internal(w, r, err)
		return nil, false
	}
	return t, true
}

// liveTenant is pathTenant for a change to the tenant: a deleted one
// answers 409 conflict.
func (s *Service) liveTenant(w http.ResponseWriter, r *http.Request) (*tenantJSON, bool) {
	t, ok := s.pathTenant(w, r)
	if ok && t.Disabled {
		httpapi.WriteError(w, http.StatusConflict, CodeConflict, "the tenant is deleted")
		return nil, false
	}
	return t, ok
}

func (s *Service) getTenant(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.pathTenant(w, r); ok {
		httpapi.WriteJSON(w, http.StatusOK, t)
	}
}

// deleteTenant disables a tenant: its keys are revoked (everywhere within
// the directory's cache bound) and no new ones can be made; its jobs,
// assets and webhooks stay, reachable by no key. Repeating it repeats the
// revocation in the directory (204).
func (s *Service) deleteTenant(w http.ResponseWriter, r *http.Request) {
	t, ok := s.pathTenant(w, r)
	if !ok {
		return
	}
	if t.ID == tenant.Default {
		httpapi.WriteError(w, http.StatusConflict, CodeConflict, "the default tenant cannot be deleted")
		return
	}
	ctx := r.Context()
	now := fmtTime(s.now())
	var digests []string
	err := s.inTx(ctx, func(tx sqldialect.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE tenants SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL`, now, t.ID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND revoked_at IS NULL`, now, t.ID); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT digest FROM api_keys WHERE tenant_id = ?`, t.ID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return err
			}
			digests = append(digests, d)
		}
		return rows.Err()
	})
	if err != nil {
		s.internal(w, r, fmt.Errorf("delete tenant %s: %w", t.ID, err))
		return
	}
	if err := s.dir.Remove(ctx, digests...); err != nil {
		s.log.Error("revoke keys in the directory", zap.String("tenant_id", t.ID), zap.Error(err))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable,
			"the tenant is deleted, but its keys are not revoked everywhere yet; repeat the request")
		return
	}
	s.log.Info("tenant deleted", zap.String("tenant_id", t.ID), zap.Int("keys", len(digests)), zap.String("key", httpapi.KeyName(ctx)))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) createKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name  string        `json:"name"`
		Scope httpapi.Scope `json:"scope"`
	}
	if !httpapi.DecodeJSON(w, r, &req, maxBody, true) {
		return
	}
	if !nameRE.MatchString(req.Name) {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidName, "name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
		return
	}
	if req.Scope == "" {
		req.Scope = httpapi.ScopeWrite
	}
	if req.Scope != httpapi.ScopeRead && req.Scope != httpapi.ScopeWrite {
		httpapi.WriteError(w, http.StatusBadRequest, CodeInvalidScope, `scope must be "read" or "write" (admin keys are configured, in KILN_API_KEYS)`)
		return
	}
	t, ok := s.liveTenant(w, r)
	if !ok {
		return
	}
	secret := newSecret()
	sum := sha256.Sum256([]byte(secret))
	digest := hex.EncodeToString(sum[:])
	k := &keyJSON{ID: jobid.Random(keyPrefix), TenantID: t.ID, Name: req.Name, Scope: req.Scope,
		CreatedAt: s.now().UTC().Truncate(time.Microsecond)}
	ctx := r.Context()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO api_keys (id, tenant_id, name, scope, digest, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		k.ID, k.TenantID, k.Name, k.Scope, digest, fmtTime(k.CreatedAt)); err != nil {
		s.internal(w, r, fmt.Errorf("insert key: %w", err))
		return
	}
	if err := s.dir.Put(ctx, digest, k.record()); err != nil {
		// Never shown, so never usable: take it back rather than list it.
		s.log.Error("key directory: put", zap.String("key_id", k.ID), zap.Error(err))
		if _, rerr := s.db.ExecContext(context.WithoutCancel(ctx), `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, fmtTime(s.now()), k.ID); rerr != nil {
			s.log.Error("take back an unpublished key", zap.String("key_id", k.ID), zap.Error(rerr))
		}
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the key directory is unavailable; retry")
		return
	}
	s.log.Info("API key created", zap.String("key_id", k.ID), zap.String("tenant_id", k.TenantID), zap.String("name", k.Name),
		zap.String("scope", string(k.Scope)), zap.String("key", httpapi.KeyName(ctx)))
	k.Secret = secret
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusCreated, k)
}

func (s *Service) listKeys(w http.ResponseWriter, r *http.Request) {
	t, ok := s.pathTenant(w, r)
	if !ok {
		return
	}
	rows, err := s.db.QueryContext(r.Context(), `SELECT `+keyColumns+` FROM api_keys WHERE tenant_id = ? ORDER BY created_at, id`, t.ID)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer rows.Close()
	out := []*keyJSON{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		s.internal(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"keys": out})
}

// revokeKey revokes a key: it stops authenticating on every role within
// httpapi.DefaultDirectoryTTL. Revoking a revoked key repeats its removal
// from the directory (204).
func (s *Service) revokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !jobid.Valid(id, keyPrefix) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed key id")
		return
	}
	ctx := r.Context()
	var digest string
	err := s.db.QueryRowContext(ctx, `SELECT digest FROM api_keys WHERE id = ?`, id).Scan(&digest)
	if errors.Is(err, sql.ErrNoRows) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "key not found")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`, fmtTime(s.now()), id); err != nil {
		s.internal(w, r, fmt.Errorf("revoke key %s: %w", id, err))
		return
	}
	if err := s.dir.Remove(ctx, digest); err != nil {
		s.log.Error("key directory: remove", zap.String("key_id", id), zap.Error(err))
		httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the key is revoked, but not everywhere yet; repeat the request")
		return
	}
	s.log.Info("API key revoked", zap.String("key_id", id), zap.String("key", httpapi.KeyName(ctx)))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) inTx(ctx context.Context, fn func(sqldialect.Tx) error) error {
	raw, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tenants: begin: %w", err)
	}
	tx := sqldialect.Tx{Tx: raw, Dialect: s.db.Dialect}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tenants: commit: %w", err)
	}
	return nil
}

func (s *Service) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("tenants request failed", zap.String("path", r.URL.Path), zap.Error(err))
	httpapi.WriteError(w, http.StatusInternalServerError, httpapi.CodeInternal, "internal error")
}

// newSecret is a new key secret: kiln_ and 32 random hex digits (128
// bits), as `go tool task up` makes them.
func newSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return secretPrefix + hex.EncodeToString(b[:])
}

// timeLayout is fixed-width UTC so stored times sort as text (the catalog's).
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) { return time.Parse(timeLayout, s) }
