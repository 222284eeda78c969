package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/app"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/testenv"
)

const (
	alertsFile    = "prometheus/alerts.yaml"
	dashboardFile = "grafana/kiln-dashboard.json"
	metricsDoc    = "../README.md"
	// metricsRedisDB is this package's database of the test Redis (the
	// table in internal/testenv/redis.go).
	metricsRedisDB = 14
)

var promql = parser.NewParser(parser.Options{})

// selectors returns the metric names expr selects; it fails the test when
// expr is no valid PromQL.
func selectors(t *testing.T, where, expr string) []string {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" { // {__name__="…"}
				for _, m := range vs.LabelMatchers {
					if m.Name == model.MetricNameLabel {
						name = m.Value
					}
				}
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

// alertRules decodes the alert rules as Prometheus does (unknown fields
// refused, every expression and template checked) and returns each
// alert's expression by name.
func alertRules(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(data, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", alertsFile, err)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatalf("%s: no rule groups", alertsFile)
	}
	exprs := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("%s: group %s has a recording rule %q; only alerts are expected", alertsFile, g.Name, r.Record)
				continue
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: alert %s has no summary", alertsFile, r.Alert)
			}
			exprs[r.Alert] = r.Expr
		}
	}
	return exprs
}

// dashboardExprs returns the PromQL of every panel target of the Grafana
// dashboard, by panel title.
func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos *struct {
			H, W, X, Y int
		} `json:"gridPos"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	}
	var d struct {
		UID           string  `json:"uid"`
		Title         string  `json:"title"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 || len(d.Panels) == 0 {
		t.Fatalf("%s: not a Grafana dashboard (uid %q, title %q, schemaVersion %d, %d panels)", dashboardFile, d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	exprs := map[string][]string{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("%s: panel id %d used twice", dashboardFile, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("%s: panel %q has no position", dashboardFile, p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q queries nothing", dashboardFile, p.Title)
		}
		for _, tg := range p.Targets {
			exprs[p.Title] = append(exprs[p.Title], tg.Expr)
		}
	}
	return exprs
}

// TestAlertRules: the rules load in Prometheus and cover what the issue
// asks to be alerted on.
func TestAlertRules(t *testing.T) {
	exprs := alertRules(t)
	for alert, metric := range map[string]string{
		"KilnOldestPendingTaskTooOld": "kiln_queue_latency_seconds",
		"KilnJobFailureRate":          "kiln_task_duration_seconds_count",
		"KilnWebhookGiveUps":          "kiln_webhook_giveups_total",
		"KilnDeadLetters":             "kiln_dead_letters",
		"KilnRoleDown":                "up",
	} {
		expr, ok := exprs[alert]
		if !ok {
			t.Errorf("no alert %s", alert)
			continue
		}
		if !slices.Contains(selectors(t, alert, expr), metric) {
			t.Errorf("alert %s does not use %s: %s", alert, metric, expr)
		}
	}
}

// TestDashboard: every query of the dashboard is valid PromQL.
func TestDashboard(t *testing.T) {
	for title, exprs := range dashboardExprs(t) {
		for _, e := range exprs {
			if len(selectors(t, title, e)) == 0 {
				t.Errorf("panel %q: %q selects no metric", title, e)
			}
		}
	}
}

// TestMetricNamesExist runs a kiln process with every role (serve) against
// the real Redis and MinIO of the test stack, scrapes its /metrics, and
// checks that every kiln_* metric the alerts and the dashboard use is one
// it exposes (a histogram's _bucket, _sum and _count included), and that
// the README ("Metrics and alerts") describes every kiln_* metric it exposes.
func TestMetricNamesExist(t *testing.T) {
	families := scrapeServe(t)
	exposed := map[string]bool{}
	for name, f := range families {
		exposed[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			exposed[name+"_bucket"], exposed[name+"_sum"], exposed[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			exposed[name+"_sum"], exposed[name+"_count"] = true, true
		}
	}
	used := map[string][]string{} // metric -> where
	for alert, expr := range alertRules(t) {
		for _, n := range selectors(t, alert, expr) {
			used[n] = append(used[n], "alert "+alert)
		}
	}
	for title, exprs := range dashboardExprs(t) {
		for _, e := range exprs {
			for _, n := range selectors(t, title, e) {
				used[n] = append(used[n], "panel "+title)
			}
		}
	}
	for name, where := range used {
		if strings.HasPrefix(name, "kiln_") && !exposed[name] {
			t.Errorf("%s, used by %v, is no metric kiln exposes", name, where)
		}
	}
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	for name := range families {
		if strings.HasPrefix(name, "kiln_") && !bytes.Contains(doc, []byte("`"+name+"`")) {
			t.Errorf("%s does not describe %s", metricsDoc, name)
		}
	}
	// And the other way: the doc names no metric that is gone.
	for _, m := range regexp.MustCompile("`(kiln_[a-z0-9_]+)`").FindAllSubmatch(doc, -1) {
		if name := string(m[1]); !exposed[name] {
			t.Errorf("%s describes %s, which kiln does not expose", metricsDoc, name)
		}
	}
}

// scrapeServe starts `kiln serve` in the test, serves one API request and
// returns its /metrics as parsed by the Prometheus text parser.
func scrapeServe(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	redisOpt, s3 := testenv.RedisDB(t, metricsRedisDB), testenv.S3(t)
	dir := t.TempDir()
	const key = "kiln_deploytest_key_0123456789"
	cfg := app.Defaults()
	cfg.Roles, cfg.EmbedNATS = []app.Role{app.RoleIngest, app.RoleWorker, app.RoleCatalog}, true
	cfg.NATSListen, cfg.NATSStoreDir = "127.0.0.1:-1", filepath.Join(dir, "nats")
	cfg.HTTPAddr = testenv.FreeAddr(t)
	cfg.PublicURL = "http://" + cfg.HTTPAddr
	cfg.APIKeys = []httpapi.APIKey{{Secret: key, Scope: httpapi.ScopeWrite}}
	cfg.RedisAddr, cfg.RedisPassword, cfg.RedisDB = redisOpt.Addr, redisOpt.Password, redisOpt.DB
	cfg.S3, cfg.SourcesBucket, cfg.OutputsBucket = s3.Config, s3.Sources, s3.Outputs
	cfg.Database, cfg.WorkDir = filepath.Join(dir, "kiln.db"), filepath.Join(dir, "work")
	cfg.Concurrency = 1
	cfg.Logger = zaptest.NewLogger(t)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("kiln did not stop")
		}
	})
	get := func(path string) *http.Response {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", cfg.PublicURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil
		}
		return resp
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp := get("/readyz")
		if resp != nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("kiln stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("kiln not ready after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resp := get("/v1/jobs"); resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/jobs: %v", resp)
	} else {
		resp.Body.Close()
	}
	resp := get("/metrics")
	if resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v", resp)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}
