package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/tenant"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

const (
	tenantA = "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"
	tenantB = "ten_bbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// doAs calls the API as a key of tenant tn.
func (f *mpFixture) doAs(t *testing.T, tn, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req := httptest.NewRequestWithContext(httpapi.WithPrincipal(t.Context(), httpapi.Principal{Name: "ci", Scope: httpapi.ScopeWrite, Tenant: tn}),
		method, path, r)
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// TestUploadsCarryTheTenant, on the real MinIO: a direct upload signs the
// key's tenant into its headers; a multipart upload is its tenant's only —
// another tenant's key gets upload_not_found 404 on every route of it —
// and its object and "object landed" fact name the tenant; a streamed
// upload's too.
func TestUploadsCarryTheTenant(t *testing.T) {
	f := newMPFixture(t, nil)

	code, body := f.doAs(t, tenantA, http.MethodPost, "/v1/direct-uploads", map[string]any{"filename": "a.mp4", "size": 10})
	want(t, "direct upload", code, body, http.StatusCreated, "")
	var du DirectUploadResponse
	if err := json.Unmarshal(body, &du); err != nil || du.Headers["X-Amz-Meta-"+layout.MetaTenant] != tenantA {
		t.Fatalf("direct upload headers %v (%v), want the tenant", du.Headers, err)
	}

	const partSize = objstore.MinPartSize
	data := noise(partSize + 10)
	code, body = f.doAs(t, tenantA, http.MethodPost, "/v1/direct-uploads", map[string]any{"filename": "a.mp4", "size": len(data), "multipart": true, "part_size": partSize})
	want(t, "start", code, body, http.StatusCreated, "")
	var up MultipartUploadResponse
	if err := json.Unmarshal(body, &up); err != nil {
		t.Fatal(err)
	}
	base := "/v1/direct-uploads/" + up.UploadID
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, base}, {http.MethodPost, base + "/parts"}, {http.MethodPost, base + "/complete"}, {http.MethodDelete, base},
	} {
		for _, other := range []string{tenantB, tenant.Default} {
			code, body := f.doAs(t, other, r.method, r.path, nil)
			want(t, other+" "+r.method+" "+r.path, code, body, http.StatusNotFound, CodeUploadNotFound)
		}
	}
	code, body = f.doAs(t, tenantA, http.MethodGet, base, nil)
	want(t, "status as A", code, body, http.StatusOK, "")
	for _, p := range up.Parts {
		putPart(t, p, data, partSize)
	}
	code, body = f.doAs(t, tenantA, http.MethodPost, base+"/complete", nil)
	want(t, "complete as A", code, body, http.StatusAccepted, "")
	info, err := f.store.Stat(t.Context(), f.bucket, up.Key)
	if err != nil || layout.SourceMeta(info.Metadata, layout.MetaTenant) != tenantA {
		t.Fatalf("object metadata %v (%v), want tenant %s", info.Metadata, err, tenantA)
	}
	if n := len(f.events.landed); n != 1 || f.events.landed[0].GetTenantId() != tenantA {
		t.Fatalf("object landed %v, want one of tenant %s", f.events.landed, tenantA)
	}

	// A streamed upload.
	req := httptest.NewRequestWithContext(httpapi.WithPrincipal(t.Context(), httpapi.Principal{Name: "ci", Scope: httpapi.ScopeWrite, Tenant: tenantB}),
		http.MethodPost, "/v1/uploads?filename=b.mp4", strings.NewReader("not really a video"))
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	want(t, "upload as B", rec.Code, rec.Body.Bytes(), http.StatusAccepted, "")
	if n := len(f.events.landed); n != 2 || f.events.landed[1].GetTenantId() != tenantB {
		t.Fatalf("object landed %v, want the second of tenant %s", f.events.landed, tenantB)
	}
}

// TestIntakeTenant: the intake passes the tenant of a bucket notification's
// metadata to the QUEUED event (none: the default tenant) and dead-letters
// a malformed one.
func TestIntakeTenant(t *testing.T) {
	for _, tt := range []struct {
		name, meta, want string
		rejected         bool
	}{
		{"named", tenantA, tenantA, false},
		{"none: default", "", tenant.Default, false},
		{"malformed", "ten_../../etc", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			md := map[string]string{"X-Amz-Meta-Kiln-Preset": "default"}
			if tt.meta != "" {
				md["X-Amz-Meta-Kiln-Tenant"] = tt.meta
			}
			raw, _ := json.Marshal(map[string]any{"Records": []any{map[string]any{
				"eventName": "s3:ObjectCreated:Put",
				"s3": map[string]any{"bucket": map[string]any{"name": "kiln-sources"},
					"object": map[string]any{"key": "uploads/x/a.mp4", "size": 10, "eTag": "abc", "userMetadata": md}},
			}}})
			evs, err := ParseS3Event(raw)
			if err != nil || len(evs) != 1 || evs[0].GetTenantId() != tt.meta {
				t.Fatalf("parse: %v %v", evs, err)
			}
			events := &fakeEvents{}
			svc := New(Config{Events: events, Queue: &fakeQueue{}, SourcesBucket: "kiln-sources"})
			err = svc.StartJob(t.Context(), evs[0])
			if tt.rejected {
				var rej *RejectedError
				if !errors.As(err, &rej) || rej.Reason != RejectInvalid || len(events.jobs) != 0 {
					t.Fatalf("StartJob = %v, want rejected invalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var queued *kilnv1.JobEvent
			for _, ev := range events.jobs {
				if ev.GetState() == kilnv1.JobState_JOB_STATE_QUEUED {
					queued = ev
				}
			}
			if queued == nil || queued.GetTenantId() != tt.want {
				t.Fatalf("QUEUED %v, want tenant %s", queued, tt.want)
			}
		})
	}
}
