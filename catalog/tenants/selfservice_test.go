package tenants_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/catalog/openapitest"
	"github.com/kilnvideo/kiln/catalog/tenants"
	"github.com/kilnvideo/kiln/internal/httpapi"
)

// TestSelfServiceKeys: a tenant's write key lists, creates (secret shown
// once) and revokes its tenant's keys through /v1/tenant/keys; the new key
// works at once and a revoked one stops; another tenant's key id answers
// 404 and stays valid; a read key lists but cannot create or revoke; an
// admin key has no tenant here; GET /v1/tenant names the key's tenant.
func TestSelfServiceKeys(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := newStack(t, b.open)
			ta, ka := s.tenantWithKey(t, "acme")
			_, kb := s.tenantWithKey(t, "bolt")

			var who struct {
				Tenant   tenantOut `json:"tenant"`
				Key      keyOut    `json:"key"`
				Operator bool      `json:"operator"`
			}
			if code, _ := s.call(t, ka.Secret, http.MethodGet, "/v1/tenant", "", &who); code != http.StatusOK ||
				who.Tenant.ID != ta.ID || who.Tenant.Name != "acme" || who.Key.ID != ka.ID || who.Key.Scope != "write" || who.Operator {
				t.Fatalf("GET /v1/tenant as A: %d %+v", code, who)
			}
			if code, _ := s.call(t, opsKey, http.MethodGet, "/v1/tenant", "", &who); code != http.StatusOK || who.Tenant.ID != "default" || !who.Operator {
				t.Errorf("GET /v1/tenant as the operator: %d %+v", code, who)
			}

			var made keyOut
			if code, _ := s.call(t, ka.Secret, http.MethodPost, "/v1/tenant/keys", `{"name":"player","scope":"read"}`, &made); code != http.StatusCreated ||
				made.TenantID != ta.ID || made.Scope != "read" || made.Secret == "" {
				t.Fatalf("A creates a key: %d %+v", code, made)
			}
			var list struct {
				Keys []keyOut `json:"keys"`
			}
			if code, _ := s.call(t, made.Secret, http.MethodGet, "/v1/tenant/keys", "", &list); code != http.StatusOK || len(list.Keys) != 2 {
				t.Fatalf("the new read key lists A's keys: %d %+v", code, list)
			}
			for _, k := range list.Keys {
				if k.Secret != "" || k.TenantID != ta.ID {
					t.Errorf("listed %+v", k)
				}
			}
			// A read key cannot create or revoke.
			if code, ecode := s.call(t, made.Secret, http.MethodPost, "/v1/tenant/keys", `{"name":"x"}`, nil); code != http.StatusForbidden || ecode != httpapi.CodeForbidden {
				t.Errorf("a read key creates a key: %d %s", code, ecode)
			}
			if code, _ := s.call(t, made.Secret, http.MethodDelete, "/v1/tenant/keys/"+ka.ID, "", nil); code != http.StatusForbidden {
				t.Errorf("a read key revokes a key: %d", code)
			}
			// Bad input.
			for _, tc := range []struct{ body, code string }{
				{`{"name":"bad name"}`, "invalid_name"},
				{`{"name":"x","scope":"admin"}`, "invalid_scope"},
				{`{"name":"x","tenant":"` + ta.ID + `"}`, httpapi.CodeBadRequest},
			} {
				if code, ecode := s.call(t, ka.Secret, http.MethodPost, "/v1/tenant/keys", tc.body, nil); code != http.StatusBadRequest || ecode != tc.code {
					t.Errorf("create %s: %d %s, want 400 %s", tc.body, code, ecode, tc.code)
				}
			}
			if code, ecode := s.call(t, ka.Secret, http.MethodDelete, "/v1/tenant/keys/nope", "", nil); code != http.StatusBadRequest || ecode != httpapi.CodeInvalidID {
				t.Errorf("revoke a malformed id: %d %s", code, ecode)
			}
			// B's key is not A's to see or revoke.
			if code, ecode := s.call(t, ka.Secret, http.MethodDelete, "/v1/tenant/keys/"+kb.ID, "", nil); code != http.StatusNotFound || ecode != httpapi.CodeNotFound {
				t.Errorf("A revokes B's key: %d %s, want 404", code, ecode)
			}
			if code, _ := s.call(t, kb.Secret, http.MethodGet, "/v1/tenant/keys", "", &list); code != http.StatusOK || len(list.Keys) != 1 || list.Keys[0].ID != kb.ID || list.Keys[0].Revoked {
				t.Errorf("B's keys: %d %+v", code, list)
			}
			// An admin key has no tenant of its own here.
			if code, _ := s.call(t, adminKey, http.MethodGet, "/v1/tenant/keys", "", nil); code != http.StatusForbidden {
				t.Errorf("an admin key lists /v1/tenant/keys: %d", code)
			}
			// A revokes the new key: it stops once the directory cache expires.
			if code, _ := s.call(t, ka.Secret, http.MethodDelete, "/v1/tenant/keys/"+made.ID, "", nil); code != http.StatusNoContent {
				t.Fatalf("A revokes its key: %d", code)
			}
			s.advance(httpapi.DefaultDirectoryTTL + time.Second)
			if code, _ := s.call(t, made.Secret, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusUnauthorized {
				t.Errorf("the revoked key: %d, want 401", code)
			}
			if code, _ := s.call(t, kb.Secret, http.MethodGet, "/v1/jobs", "", nil); code != http.StatusOK {
				t.Errorf("B's key after A's revocations: %d", code)
			}
		})
	}
}

// TestSelfServiceRoutesInOpenAPI: every self-service route is described in
// the catalog's OpenAPI document, and needs a tenant's key (not an admin's).
func TestSelfServiceRoutesInOpenAPI(t *testing.T) {
	routes := (&tenants.Service{}).SelfServiceRoutes()
	if len(routes) != 4 {
		t.Fatalf("%d self-service routes, want 4", len(routes))
	}
	openapitest.Documented(t, routes)
	for _, r := range routes {
		if !r.Auth || r.Admin {
			t.Errorf("%s: auth %v, admin %v; want a tenant's key", r.Pattern, r.Auth, r.Admin)
		}
	}
}
