package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/metrics/metricstest"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestRoleMetrics runs ingest, worker and catalog as three processes of
// their own (app.Run each, on one bus: the catalog's embedded NATS, which
// the others reach as their role's NATS user) against the real Redis and
// MinIO of the test stack, takes one upload through the whole pipeline
// with a webhook endpoint listening, then scrapes each role's /metrics,
// parses it with the Prometheus text parser and checks the families each
// role must expose and what the job did to them.
func TestRoleMetrics(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	redisOpt, s3 := testenv.RedisDB(t, testRedisDB), testenv.S3(t)
	clip := testenv.Clip(t, testenv.ClipSpec{})
	const key = "kiln_metricstest_key_0123456789"
	var hooks atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hooks.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)

	dir := t.TempDir()
	natsAddr := testenv.FreeAddr(t)
	passwords := NATSUserPasswords{Ingest: rand.Text(), Worker: rand.Text(), Catalog: rand.Text()}
	// Buckets of this test's own: the stack's MinIO notifies the stack's
	// kiln of its sources bucket only.
	suffix := fmt.Sprint(time.Now().UnixNano())
	sources, outputs := "kiln-metrics-src-"+suffix, "kiln-metrics-out-"+suffix
	base := func(role Role) Config {
		cfg := Defaults()
		cfg.Roles = []Role{role}
		cfg.HTTPAddr = testenv.FreeAddr(t)
		cfg.PublicURL = "http://" + cfg.HTTPAddr
		cfg.APIKeys = []httpapi.APIKey{{Secret: key, Scope: httpapi.ScopeWrite}}
		cfg.RedisAddr, cfg.RedisPassword, cfg.RedisDB = redisOpt.Addr, redisOpt.Password, redisOpt.DB
		cfg.S3, cfg.SourcesBucket, cfg.OutputsBucket = s3.Config, sources, outputs
		cfg.Database = filepath.Join(dir, "kiln.db")
		cfg.WorkDir = filepath.Join(dir, "work-"+string(role))
		cfg.Concurrency = 1
		cfg.WebhookAllowLoopback = true
		cfg.Logger = zaptest.NewLogger(t).Named(string(role))
		cfg.NATSURL = "nats://" + natsAddr
		return cfg
	}
	catalogCfg := base(RoleCatalog)
	catalogCfg.EmbedNATS, catalogCfg.NATSListen, catalogCfg.NATSStoreDir = true, natsAddr, filepath.Join(dir, "nats")
	catalogCfg.NATSUserPasswords = passwords
	ingestCfg := base(RoleIngest)
	ingestCfg.NATSUser, ingestCfg.NATSPassword = "ingest", passwords.Ingest
	workerCfg := base(RoleWorker)
	workerCfg.NATSUser, workerCfg.NATSPassword = "worker", passwords.Worker

	urls := map[Role]string{}
	for _, cfg := range []Config{catalogCfg, ingestCfg, workerCfg} { // the catalog first: it runs the bus
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, cfg) }()
		t.Cleanup(func() {
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: Run after cancel = %v", cfg.Roles[0], err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("%s did not stop", cfg.Roles[0])
			}
		})
		waitReady(t, cfg.PublicURL, done)
		urls[cfg.Roles[0]] = cfg.PublicURL
	}

	call := func(role Role, method, path string, body []byte, out any) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, urls[role]+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
			}
		}
		return resp.StatusCode
	}
	if code := call(RoleCatalog, "POST", "/v1/webhooks", []byte(`{"url": "`+receiver.URL+`/hook"}`), nil); code != http.StatusCreated {
		t.Fatalf("POST /v1/webhooks = %d", code)
	}
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", urls[RoleIngest]+"/v1/uploads?filename=clip.mp4", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "video/mp4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var up struct {
		JobID string `json:"job_id"`
	}
	err = json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusCreated || up.JobID == "" {
		t.Fatalf("upload: %d %+v %v", resp.StatusCode, up, err)
	}

	// The job goes through every stage, its webhooks are delivered.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var job struct {
			State string `json:"state"`
		}
		call(RoleCatalog, "GET", "/v1/jobs/"+up.JobID, nil, &job)
		if job.State == "ready" && hooks.Load() > 0 {
			break
		}
		if job.State == "failed" || job.State == "canceled" || time.Now().After(deadline) {
			t.Fatalf("job %s is %s (%d webhooks received)", up.JobID, job.State, hooks.Load())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// What every role exposes, then each role's own.
	common := []string{"go_goroutines", "process_cpu_seconds_total",
		"kiln_http_requests_total", "kiln_http_request_duration_seconds",
		"kiln_queue_pending_tasks", "kiln_queue_active_tasks", "kiln_queue_scheduled_tasks", "kiln_queue_retry_tasks",
		"kiln_queue_archived_tasks", "kiln_queue_latency_seconds", "kiln_queue_up",
		"kiln_auth_failures_total", "kiln_auth_throttled_total", "kiln_object_bytes_total"}
	own := map[Role][]string{
		RoleIngest: {"kiln_dead_letters", "kiln_dead_letters_up", "kiln_events_rejected_total"},
		RoleCatalog: {"kiln_dead_letters", "kiln_dead_letters_up", "kiln_events_rejected_total", "kiln_jobs", "kiln_jobs_up",
			"kiln_reconciler_actions_total", "kiln_reconciler_errors_total", "kiln_reconciler_passes_total",
			"kiln_webhook_attempts_total", "kiln_webhook_attempt_duration_seconds", "kiln_webhook_giveups_total"},
		RoleWorker: {"kiln_task_duration_seconds", "kiln_ffmpeg_speed_ratio",
			"kiln_task_rescues_total", "kiln_task_duplicates_dropped_total", "kiln_task_busy_total"},
	}
	notHere := map[Role][]string{
		RoleIngest:  {"kiln_jobs", "kiln_task_duration_seconds", "kiln_webhook_attempts_total"},
		RoleCatalog: {"kiln_task_duration_seconds", "kiln_ffmpeg_speed_ratio"},
		RoleWorker:  {"kiln_dead_letters_up", "kiln_jobs", "kiln_events_rejected_total"},
	}
	fams := map[Role]map[string]*dto.MetricFamily{}
	for _, role := range []Role{RoleIngest, RoleWorker, RoleCatalog} {
		// Metrics recorded after the job is ready (the worker's last
		// observation, the webhook's record) may trail by a moment.
		var f map[string]*dto.MetricFamily
		for range 50 {
			f = scrapeMetrics(t, urls[role])
			trailing := role == RoleCatalog && sampleValue(f, "kiln_webhook_attempts_total", "result", "success") == 0 ||
				// The MP4 download is packaged after READY.
				role == RoleWorker && sampleValue(f, "kiln_task_duration_seconds", "type", tasks.TypePackage, "result", "ok") == 0
			if !trailing {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		fams[role] = f
		for _, name := range append(append([]string{}, common...), own[role]...) {
			if f[name] == nil || len(f[name].GetMetric()) == 0 {
				t.Errorf("%s: no %s", role, name)
			}
		}
		for _, name := range notHere[role] {
			if f[name] != nil {
				t.Errorf("%s exposes %s", role, name)
			}
		}
		for _, up := range []string{"kiln_queue_up", "kiln_dead_letters_up", "kiln_jobs_up"} {
			if f[up] != nil && sampleValue(f, up) != 1 {
				t.Errorf("%s: %s = %v, want 1", role, up, sampleValue(f, up))
			}
		}
	}

	checks := []struct {
		role   Role
		name   string
		labels []string
		ok     func(float64) bool
		want   string
	}{
		{RoleIngest, "kiln_http_requests_total", []string{"route", "POST /v1/uploads", "code", "202"}, func(v float64) bool { return v == 1 }, "1 upload"},
		{RoleIngest, "kiln_object_bytes_total", []string{"role", "ingest", "direction", "written"}, func(v float64) bool { return v == float64(len(data)) }, fmt.Sprintf("the clip's %d bytes", len(data))},
		{RoleCatalog, "kiln_http_requests_total", []string{"route", "GET /v1/jobs/{id}", "code", "200"}, func(v float64) bool { return v >= 1 }, "≥ 1"},
		{RoleCatalog, "kiln_jobs", []string{"state", "ready"}, func(v float64) bool { return v == 1 }, "1"},
		{RoleCatalog, "kiln_jobs", []string{"state", "failed"}, func(v float64) bool { return v == 0 }, "0"},
		{RoleCatalog, "kiln_webhook_attempts_total", []string{"result", "success"}, func(v float64) bool { return v >= 1 }, "≥ 1"},
		{RoleCatalog, "kiln_webhook_attempt_duration_seconds", []string{"result", "success"}, func(v float64) bool { return v >= 1 }, "≥ 1 sample"},
		{RoleWorker, "kiln_task_duration_seconds", []string{"type", tasks.TypeProbe, "result", "ok"}, func(v float64) bool { return v >= 1 }, "≥ 1 sample"},
		{RoleWorker, "kiln_task_duration_seconds", []string{"type", tasks.TypeTranscode, "result", "ok"}, func(v float64) bool { return v >= 1 }, "≥ 1 sample"},
		{RoleWorker, "kiln_task_duration_seconds", []string{"type", tasks.TypePackage, "result", "ok"}, func(v float64) bool { return v >= 1 }, "≥ 1 sample"},
		{RoleWorker, "kiln_ffmpeg_speed_ratio", []string{"stage", tasks.QueueTranscode}, func(v float64) bool { return v >= 1 }, "≥ 1 sample"},
		{RoleWorker, "kiln_object_bytes_total", []string{"role", "worker", "direction", "written"}, func(v float64) bool { return v > 0 }, "> 0"},
	}
	for _, c := range checks {
		if v := sampleValue(fams[c.role], c.name, c.labels...); !c.ok(v) {
			t.Errorf("%s: %s%v = %v, want %s", c.role, c.name, c.labels, v, c.want)
		}
	}
	// Routes are patterns: the job's id is in no label.
	for role, f := range fams {
		for _, m := range f["kiln_http_requests_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), up.JobID) {
					t.Errorf("%s: a raw path as a label: %v", role, m)
				}
			}
		}
	}
}

// scrapeMetrics gets base/metrics and parses it with the Prometheus text
// parser.
func scrapeMetrics(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("%s/metrics: %d %s", base, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	f, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s/metrics: %v", base, err)
	}
	return f
}

// sampleValue is the value of the series of name with labels (name, value
// pairs) — a histogram's sample count —, -1 when there is none.
func sampleValue(f map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	if v, ok := metricstest.Value(f, name, labels...); ok {
		return v
	}
	return -1
}
