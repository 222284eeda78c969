package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// TestTenants on the real stack: the admin key makes tenants A and B and a
// key each (kiln tenants create, kiln keys create); A uploads through the
// API and directly to storage (the bucket notification carries A's tenant
// in the object's metadata), both jobs become ready; B's key and the
// default tenant's get 404 for A's job and asset and list none of them;
// once A's key is revoked (kiln keys revoke), ingest and the catalog
// refuse it within the directory's 5 s bound.
func TestTenants(t *testing.T) {
	s := needStack(t)
	admin := adminCLI(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	tenA, tenB := admin("tenants", "create", "acme"), admin("tenants", "create", "bolt")
	a, b := s, s
	a.APIKey = admin("keys", "create", tenA, "--name", "ci")
	b.APIKey = admin("keys", "create", tenB, "--name", "ci")
	if !strings.HasPrefix(tenA, "ten_") || !strings.HasPrefix(a.APIKey, "kiln_") {
		t.Fatalf("tenant %q, key %q", tenA, a.APIKey)
	}

	// A uploads through ingest (a key ingest knows from the directory only).
	clip := makeClip(t, "tenant a.mp4", 2, "320x180")
	code, up, bad := a.uploadFile(t, clip)
	if code != http.StatusAccepted {
		t.Fatalf("upload with tenant A's key: %d %+v", code, bad)
	}
	// And directly to storage.
	data, err := os.ReadFile(makeClip(t, "tenant a direct.mp4", 3, "320x180"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]any{"filename": "tenant a direct.mp4", "size": len(data)})
	code, body := a.request(t, http.MethodPost, "/v1/direct-uploads", bytes.NewReader(req), "Content-Type", "application/json")
	if code != http.StatusCreated {
		t.Fatalf("direct upload: %d %s", code, body)
	}
	var du struct {
		UploadURL string            `json:"upload_url"`
		Headers   map[string]string `json:"headers"`
		Key       string            `json:"key"`
	}
	if err := json.Unmarshal(body, &du); err != nil {
		t.Fatal(err)
	}
	put, _ := http.NewRequestWithContext(ctx, http.MethodPut, du.UploadURL, bytes.NewReader(data))
	for k, v := range du.Headers {
		if !strings.EqualFold(k, "Content-Length") {
			put.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(put)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("direct PUT: %d", resp.StatusCode)
	}
	var direct apiJob
	for deadline := time.Now().Add(time.Minute); direct.ID == ""; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("tenant A lists no job for its direct upload")
		}
		var page struct {
			Jobs []apiJob `json:"jobs"`
		}
		if code := a.do(t, http.MethodGet, "/v1/jobs?source_key="+url.QueryEscape(du.Key), nil, "", &page); code != http.StatusOK {
			t.Fatalf("list by source_key: %d", code)
		}
		if len(page.Jobs) > 0 {
			direct = page.Jobs[0]
		}
	}
	for _, id := range []string{up.JobID, direct.ID} {
		if j := a.waitJob(t, id, jobTimeout); j.State != "ready" {
			t.Fatalf("tenant A's job %s: %s", id, j.State)
		}
	}

	// B and the default tenant see none of it.
	for who, other := range map[string]stack{"B": b, "default": s} {
		for _, p := range []string{"/v1/jobs/" + up.JobID, "/v1/jobs/" + direct.ID, "/v1/assets/" + up.AssetID, "/v1/assets/" + direct.AssetID} {
			var e apiError
			if code := other.do(t, http.MethodGet, p, nil, "", &e); code != http.StatusNotFound || e.Error.Code != "not_found" {
				t.Errorf("%s: GET %s: %d %s, want 404 not_found", who, p, code, e.Error.Code)
			}
		}
		var page struct {
			Jobs []apiJob `json:"jobs"`
		}
		if code := other.do(t, http.MethodGet, "/v1/jobs?limit=100", nil, "", &page); code != http.StatusOK {
			t.Fatalf("%s lists jobs: %d", who, code)
		}
		for _, j := range page.Jobs {
			if j.ID == up.JobID || j.ID == direct.ID {
				t.Errorf("%s lists tenant A's job %s", who, j.ID)
			}
		}
	}
	var page struct {
		Jobs []apiJob `json:"jobs"`
	}
	if code := a.do(t, http.MethodGet, "/v1/jobs?limit=100", nil, "", &page); code != http.StatusOK || len(page.Jobs) != 2 {
		t.Fatalf("tenant A lists %d jobs (%d), want its 2", len(page.Jobs), code)
	}

	// Revoked: refused by ingest and the catalog within the bound.
	keys := admin("keys", "list", tenA)
	keyID := strings.Fields(strings.Split(keys, "\n")[1])[0]
	admin("keys", "revoke", keyID)
	deadline := time.Now().Add(15 * time.Second) // the bound is 5 s; the rest is slack for a busy machine
	for {
		ingestCode, _ := a.request(t, http.MethodPost, "/v1/uploads", strings.NewReader(""))
		catalogCode := a.do(t, http.MethodGet, "/v1/jobs", nil, "", nil)
		if ingestCode == http.StatusUnauthorized && catalogCode == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key: ingest %d, catalog %d after 15 s, want 401", ingestCode, catalogCode)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if code := b.do(t, http.MethodGet, "/v1/jobs", nil, "", nil); code != http.StatusOK {
		t.Fatalf("tenant B's key after A's revocation: %d", code)
	}
}
