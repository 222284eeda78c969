package tenants_test

import (
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/internal/metrics/metricstest"
	"github.com/kilnvideo/kiln/internal/quota"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

type usageOut struct {
	TenantID       string    `json:"tenant_id"`
	PeriodStart    time.Time `json:"period_start"`
	PeriodEnd      time.Time `json:"period_end"`
	ConcurrentJobs figures   `json:"concurrent_jobs"`
	StoredBytes    figures   `json:"stored_bytes"`
	EncodedMinutes figures   `json:"encoded_minutes"`
}

type figures struct {
	Used  float64 `json:"used"`
	Limit *int64  `json:"limit"`
}

// TestQuotas: an admin sets a tenant's quotas (at creation, then with
// PUT); PublishUsage counts its stored bytes, this month's encoded
// minutes and its running jobs with the uploads reserved in Redis, and
// publishes them where ingest's Admit refuses the next upload; the tenant
// reads it all at GET /v1/usage, the admin at /v1/tenants/{id}/usage, and
// /metrics reports it per tenant. An ended job frees its slot at the next
// pass.
func TestQuotas(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			s := newStack(t, b.open)
			ctx := t.Context()
			var ten struct {
				ID     string       `json:"id"`
				Quotas quota.Limits `json:"quotas"`
			}
			if code, _ := s.call(t, adminKey, http.MethodPost, "/v1/tenants", `{"name":"acme","quotas":{"concurrent_jobs":5}}`, &ten); code != http.StatusCreated || ten.Quotas.ConcurrentJobs != 5 {
				t.Fatalf("create a tenant with quotas: %d %+v", code, ten)
			}
			var k keyOut
			if code, _ := s.call(t, adminKey, http.MethodPost, "/v1/tenants/"+ten.ID+"/keys", `{"name":"ci"}`, &k); code != http.StatusCreated {
				t.Fatalf("create key: %d", code)
			}
			for _, bad := range []struct {
				key, path, body string
				status          int
				code            string
			}{
				{adminKey, "/v1/tenants/" + ten.ID + "/quotas", `{"concurrent_jobs":-1}`, http.StatusBadRequest, "invalid_quota"},
				{adminKey, "/v1/tenants/" + ten.ID + "/quotas", `{"stored_bytes":1.5}`, http.StatusBadRequest, "bad_request"},
				{adminKey, "/v1/tenants/" + ten.ID + "/quotas", `{"concurrent":1}`, http.StatusBadRequest, "bad_request"},
				{adminKey, "/v1/tenants/ten_aaaaaaaaaaaaaaaaaaaaaaaaaa/quotas", `{}`, http.StatusNotFound, "not_found"},
				{k.Secret, "/v1/tenants/" + ten.ID + "/quotas", `{}`, http.StatusForbidden, "forbidden"},
			} {
				if code, ecode := s.call(t, bad.key, http.MethodPut, bad.path, bad.body, nil); code != bad.status || ecode != bad.code {
					t.Errorf("PUT %s %s: %d %s, want %d %s", bad.path, bad.body, code, ecode, bad.status, bad.code)
				}
			}
			const body = `{"concurrent_jobs":2,"stored_bytes":5000,"encoded_minutes_per_month":1}`
			if code, _ := s.call(t, adminKey, http.MethodPut, "/v1/tenants/"+ten.ID+"/quotas", body, &ten); code != http.StatusOK ||
				ten.Quotas != (quota.Limits{ConcurrentJobs: 2, StoredBytes: 5000, EncodedMinutesPerMonth: 1}) {
				t.Fatalf("PUT quotas: %d %+v", code, ten.Quotas)
			}

			// One job ready (its minutes count), one running, one upload
			// reserved by ingest.
			// Minutes count in the month of the READY's time: this one.
			now := time.Now()
			apply := func(ev *kilnv1.JobEvent) {
				t.Helper()
				ev.Time = timestamppb.New(now.Add(time.Duration(ev.State) * time.Millisecond))
				if _, err := s.store.Apply(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
			queued := func(job string) *kilnv1.JobEvent {
				ev := eventtest.Event(job, kilnv1.JobState_JOB_STATE_QUEUED, 0)
				ev.TenantId = ten.ID
				return ev
			}
			done, doneAsset := eventtest.Job("quota-done")
			apply(queued(done))
			apply(eventtest.Event(done, kilnv1.JobState_JOB_STATE_READY, 0))
			running, _ := eventtest.Job("quota-running")
			apply(queued(running))
			if v, err := s.quotas.Admit(ctx, ten.ID, "sources/uploading.mp4", 100, time.Minute); err != nil || v.Exceeded != "" {
				t.Fatalf("Admit the first upload: %+v %v", v, err)
			}
			if err := s.ten.PublishUsage(ctx); err != nil {
				t.Fatal(err)
			}
			a, err := s.store.Asset(ctx, doneAsset)
			if err != nil {
				t.Fatal(err)
			}
			size := eventtest.Source(running).Size
			wantMinutes := math.Round(a.DurationSeconds/60*100) / 100
			check := func(who, key, path string, jobs float64) {
				t.Helper()
				var u usageOut
				if code, ecode := s.call(t, key, http.MethodGet, path, "", &u); code != http.StatusOK {
					t.Fatalf("%s: GET %s: %d %s", who, path, code, ecode)
				}
				if u.TenantID != ten.ID || u.ConcurrentJobs.Used != jobs || *u.ConcurrentJobs.Limit != 2 ||
					u.StoredBytes.Used != float64(2*size) || *u.StoredBytes.Limit != 5000 ||
					u.EncodedMinutes.Used != wantMinutes || *u.EncodedMinutes.Limit != 1 ||
					!u.PeriodStart.Equal(quota.MonthStart(time.Now())) || !u.PeriodEnd.Equal(u.PeriodStart.AddDate(0, 1, 0)) {
					t.Errorf("%s: GET %s = %+v; want %v jobs of 2, %d bytes of 5000, %v minutes of 1", who, path, u, jobs, 2*size, wantMinutes)
				}
			}
			check("the tenant", k.Secret, "/v1/usage", 2)
			check("the admin", adminKey, "/v1/tenants/"+ten.ID+"/usage", 2)
			if code, ecode := s.call(t, k.Secret, http.MethodGet, "/v1/tenants/"+ten.ID+"/usage", "", nil); code != http.StatusForbidden {
				t.Errorf("a tenant's key reads the admin's usage route: %d %s", code, ecode)
			}
			var other usageOut
			if code, _ := s.call(t, opsKey, http.MethodGet, "/v1/usage", "", &other); code != http.StatusOK || other.TenantID != "default" ||
				other.StoredBytes.Used != 0 || other.ConcurrentJobs.Limit != nil {
				t.Errorf("the default tenant's usage: %d %+v", code, other)
			}

			// Ingest now refuses: two jobs count against 2.
			if v, err := s.quotas.Admit(ctx, ten.ID, "sources/next.mp4", 100, time.Minute); err != nil || v.Exceeded != quota.ConcurrentJobs {
				t.Errorf("Admit a third job under a limit of 2: %+v %v", v, err)
			}
			// …and an upload whose bytes would pass 5000.
			if code, _ := s.call(t, adminKey, http.MethodPut, "/v1/tenants/"+ten.ID+"/quotas", `{"stored_bytes":5000}`, nil); code != http.StatusOK {
				t.Fatal(code)
			}
			if v, err := s.quotas.Admit(ctx, ten.ID, "sources/big.mp4", 5000-2*size+1, time.Minute); err != nil || v.Exceeded != quota.StoredBytes {
				t.Errorf("Admit an upload one byte over stored_bytes: %+v %v", v, err)
			}
			if code, _ := s.call(t, adminKey, http.MethodPut, "/v1/tenants/"+ten.ID+"/quotas", body, nil); code != http.StatusOK {
				t.Fatal(code)
			}

			reg := prometheus.NewPedanticRegistry()
			if err := reg.Register(s.ten); err != nil {
				t.Fatal(err)
			}
			gathered, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			fams := map[string]*dto.MetricFamily{}
			for _, f := range gathered {
				fams[f.GetName()] = f
			}
			for _, m := range []struct {
				name, quota string
				want        float64
			}{
				{"kiln_tenant_usage", quota.ConcurrentJobs, 2},
				{"kiln_tenant_usage", quota.StoredBytes, float64(2 * size)},
				{"kiln_tenant_usage", quota.EncodedMinutes, wantMinutes},
				{"kiln_tenant_quota_limit", quota.ConcurrentJobs, 2},
				{"kiln_tenant_quota_limit", quota.StoredBytes, 5000},
				{"kiln_tenant_quota_limit", quota.EncodedMinutes, 1},
			} {
				if v, ok := metricstest.Value(fams, m.name, "tenant", ten.ID, "quota", m.quota); !ok || v != m.want {
					t.Errorf("%s{quota=%s} = %v (%v), want %v", m.name, m.quota, v, ok, m.want)
				}
			}
			if v, ok := metricstest.Value(fams, "kiln_tenant_usage_up"); !ok || v != 1 {
				t.Errorf("kiln_tenant_usage_up = %v (%v)", v, ok)
			}

			// The running job ends: its slot is free at the next pass.
			apply(eventtest.Event(running, kilnv1.JobState_JOB_STATE_FAILED, 0))
			if err := s.ten.PublishUsage(ctx); err != nil {
				t.Fatal(err)
			}
			check("the tenant, its job ended", k.Secret, "/v1/usage", 1)
			if v, err := s.quotas.Admit(ctx, ten.ID, "sources/next.mp4", 100, time.Minute); err != nil || v.Exceeded != "" {
				t.Errorf("Admit once a job ended: %+v %v", v, err)
			}
		})
	}
}
