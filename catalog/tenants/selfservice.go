package tenants

import (
	"database/sql"
	"errors"
	"net/http"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/tenant"
)

// SelfServiceRoutes lists the API a tenant's own key uses on its tenant
// (the web console's keys page): the same keys the admin API manages, but
// only the key's tenant's, with a read or write key (an admin key has no
// tenant: 403). Listing needs a read key, creating and revoking a write
// key; another tenant's key id answers 404 not_found.
//
//	GET    /v1/tenant                   the key's tenant and the key itself
//	GET    /v1/tenant/keys              its keys (never their secrets)
//	POST   /v1/tenant/keys              {"name","scope"} → 201 key, with its secret (once)
//	DELETE /v1/tenant/keys/{id}         revoke one of its keys → 204
func (s *Service) SelfServiceRoutes() []httpapi.Route {
	return []httpapi.Route{
		httpapi.Authed("GET /v1/tenant", s.whoAmI),
		httpapi.Authed("GET /v1/tenant/keys", s.ownTenant(s.listKeys)),
		httpapi.Authed("POST /v1/tenant/keys", s.ownTenant(s.createKey)),
		httpapi.Authed("DELETE /v1/tenant/keys/{id}", s.revokeOwnKey),
	}
}

// ownTenant runs h, a handler of /v1/tenants/{id}/…, on the request's own
// tenant.
func (s *Service) ownTenant(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.SetPathValue("id", httpapi.Tenant(r.Context()))
		h(w, r)
	}
}

// whoAmIJSON is the answer of GET /v1/tenant.
type whoAmIJSON struct {
	Tenant *tenantJSON `json:"tenant"`
	Key    struct {
		// ID is "" for a key of KILN_API_KEYS.
		ID    string        `json:"id"`
		Name  string        `json:"name"`
		Scope httpapi.Scope `json:"scope"`
	} `json:"key"`
	// Operator: the key is the default tenant's, which the operator's
	// routes (dead letters, operations) need.
	Operator bool `json:"operator"`
}

func (s *Service) whoAmI(w http.ResponseWriter, r *http.Request) {
	p, _ := httpapi.PrincipalOf(r.Context())
	r.SetPathValue("id", httpapi.Tenant(r.Context()))
	t, ok := s.pathTenant(w, r)
	if !ok {
		return
	}
	out := whoAmIJSON{Tenant: t, Operator: t.ID == tenant.Default}
	out.Key.ID, out.Key.Name, out.Key.Scope = p.KeyID, p.Name, p.Scope
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// revokeOwnKey revokes a key of the request's tenant (revokeKey); another
// tenant's answers 404, as an unknown one does.
func (s *Service) revokeOwnKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !jobid.Valid(id, keyPrefix) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed key id")
		return
	}
	var owner string
	err := s.db.QueryRowContext(r.Context(), `SELECT tenant_id FROM api_keys WHERE id = ?`, id).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !httpapi.Owns(r.Context(), owner)) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "key not found")
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.revokeKey(w, r)
}
