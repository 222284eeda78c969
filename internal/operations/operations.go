// Package operations is the operator's summary of the pipeline, for the
// web console's operations view: the stage queues' depths and the age of
// their oldest pending task, the bus's dead letters and the catalog's jobs
// per state — read from the process's metrics registry, the very numbers
// /metrics exposes — the workers seen (asynq's server heartbeats) and the
// recent failures by error code (the catalog's latest failed jobs).
//
//	GET /v1/operations   the summary (operator only: a key of the default tenant)
package operations

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/hibiken/asynq"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/metrics"
	"github.com/kilnvideo/kiln/internal/tasks"
)

// Metrics gathers the process's metrics (metrics.Registry), scrapers
// included.
type Metrics interface {
	GatherContext(ctx context.Context) ([]*dto.MetricFamily, error)
}

// Servers lists the task servers (workers) that sent a heartbeat lately
// (asynq.Inspector).
type Servers interface {
	Servers() ([]*asynq.ServerInfo, error)
}

// Jobs lists the catalog's jobs (catalog.Store).
type Jobs interface {
	ListJobs(ctx context.Context, f catalog.JobFilter) ([]*catalog.Job, *catalog.Cursor, error)
}

var (
	_ Metrics = (*metrics.Registry)(nil)
	_ Servers = (*asynq.Inspector)(nil)
	_ Jobs    = catalog.Store(nil)
)

// Config holds the service's sources.
type Config struct {
	Metrics Metrics
	Servers Servers
	Jobs    Jobs
	Logger  *zap.Logger
	// Now is the clock of generated_at; time.Now when nil.
	Now func() time.Time
}

// RecentFailures is how many of the latest failed jobs the summary counts
// by error code.
const RecentFailures = catalog.MaxListLimit

// Service serves the summary.
type Service struct {
	cfg Config
}

// New returns the service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}
}

// Routes lists the route; it spans every tenant, so only the operator's
// keys (the default tenant's) reach it.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{httpapi.Authed("GET /v1/operations", httpapi.OperatorOnly(s.summary))}
}

// Summary is the answer of GET /v1/operations. A part that could not be
// read is absent, with its *_up false (as the *_up gauges on /metrics).
type Summary struct {
	GeneratedAt time.Time `json:"generated_at"`
	Queues      []Queue   `json:"queues"`
	QueuesUp    bool      `json:"queues_up"`
	Workers     []Worker  `json:"workers"`
	WorkersUp   bool      `json:"workers_up"`
	// DeadLetters counts the bus's dead letters per consumer.
	DeadLetters   map[string]int `json:"dead_letters"`
	DeadLettersUp bool           `json:"dead_letters_up"`
	// Jobs counts the catalog's jobs per state.
	Jobs   map[string]int `json:"jobs"`
	JobsUp bool           `json:"jobs_up"`
	// Failures are the latest RecentFailures failed jobs (every tenant's)
	// by error code, most frequent first.
	Failures   []Failure `json:"recent_failures"`
	FailuresUp bool      `json:"recent_failures_up"`
}

// Queue is one stage queue (kiln_queue_* on /metrics).
type Queue struct {
	Name      string `json:"name"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	// OldestPendingSeconds is the age of the oldest pending task
	// (kiln_queue_latency_seconds).
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
}

// Worker is one task server seen by its heartbeat.
type Worker struct {
	ID          string         `json:"id"`
	Host        string         `json:"host"`
	PID         int            `json:"pid"`
	Status      string         `json:"status"`
	Concurrency int            `json:"concurrency"`
	Active      int            `json:"active"`
	Queues      map[string]int `json:"queues"`
	StartedAt   time.Time      `json:"started_at"`
}

// Failure is one error code among the recent failures.
type Failure struct {
	Code  string `json:"code"`
	Count int    `json:"count"`
	// The latest failure of that code.
	LastAt      time.Time `json:"last_at"`
	LastJobID   string    `json:"last_job_id"`
	LastMessage string    `json:"last_message"`
}

func (s *Service) summary(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), metrics.ScrapeTimeout)
	defer cancel()
	out := Summary{GeneratedAt: s.cfg.Now().UTC(), Queues: []Queue{}, Workers: []Worker{}, DeadLetters: map[string]int{},
		Jobs: map[string]int{}, Failures: []Failure{}}
	if s.cfg.Metrics != nil {
		fams, err := s.cfg.Metrics.GatherContext(ctx)
		if err != nil { // partial: what could be gathered is there
			s.cfg.Logger.Warn("operations: gather metrics", zap.Error(err))
		}
		s.fromMetrics(fams, &out)
	}
	if s.cfg.Servers != nil {
		if servers, err := s.cfg.Servers.Servers(); err != nil {
			s.cfg.Logger.Warn("operations: servers", zap.Error(err))
		} else {
			out.WorkersUp = true
			for _, sv := range servers {
				out.Workers = append(out.Workers, Worker{ID: sv.ID, Host: sv.Host, PID: sv.PID, Status: sv.Status,
					Concurrency: sv.Concurrency, Active: len(sv.ActiveWorkers), Queues: sv.Queues, StartedAt: sv.Started.UTC()})
			}
			sort.Slice(out.Workers, func(i, j int) bool {
				a, b := out.Workers[i], out.Workers[j]
				return a.Host < b.Host || (a.Host == b.Host && a.PID < b.PID)
			})
		}
	}
	if s.cfg.Jobs != nil {
		if jobs, _, err := s.cfg.Jobs.ListJobs(ctx, catalog.JobFilter{State: catalog.StateFailed, Limit: RecentFailures}); err != nil {
			s.cfg.Logger.Warn("operations: failed jobs", zap.Error(err))
		} else {
			out.FailuresUp = true
			out.Failures = byCode(jobs)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// fromMetrics fills the queues, dead letters and jobs from the gathered
// families.
func (s *Service) fromMetrics(fams []*dto.MetricFamily, out *Summary) {
	queues := map[string]*Queue{}
	queue := func(name string) *Queue {
		if queues[name] == nil {
			queues[name] = &Queue{Name: name}
		}
		return queues[name]
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	set := map[string]func(q *Queue, v float64){
		"kiln_queue_pending_tasks":   func(q *Queue, v float64) { q.Pending = int(v) },
		"kiln_queue_active_tasks":    func(q *Queue, v float64) { q.Active = int(v) },
		"kiln_queue_scheduled_tasks": func(q *Queue, v float64) { q.Scheduled = int(v) },
		"kiln_queue_retry_tasks":     func(q *Queue, v float64) { q.Retry = int(v) },
		"kiln_queue_archived_tasks":  func(q *Queue, v float64) { q.Archived = int(v) },
		"kiln_queue_latency_seconds": func(q *Queue, v float64) { q.OldestPendingSeconds = v },
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			v := m.GetGauge().GetValue()
			switch name := f.GetName(); {
			case set[name] != nil:
				set[name](queue(label(m, "queue")), v)
			case name == "kiln_queue_up":
				out.QueuesUp = v == 1
			case name == "kiln_dead_letters":
				out.DeadLetters[label(m, "consumer")] = int(v)
			case name == "kiln_dead_letters_up":
				out.DeadLettersUp = v == 1
			case name == "kiln_jobs":
				out.Jobs[label(m, "state")] = int(v)
			case name == "kiln_jobs_up":
				out.JobsUp = v == 1
			}
		}
	}
	for _, q := range queues {
		out.Queues = append(out.Queues, *q)
	}
	slices.SortFunc(out.Queues, func(a, b Queue) int { return stageOrder(a.Name) - stageOrder(b.Name) })
}

// stages orders the queues as the pipeline runs them; others go last.
var stages = []string{tasks.QueueProbe, tasks.QueueTranscode, tasks.QueuePackage, tasks.QueueWebhook}

func stageOrder(name string) int {
	if i := slices.Index(stages, name); i >= 0 {
		return i
	}
	return len(stages)
}

// byCode counts failed jobs (newest first) by error code.
func byCode(jobs []*catalog.Job) []Failure {
	idx := map[string]int{}
	var out []Failure
	for _, j := range jobs {
		code := j.ErrorCode
		if code == "" {
			code = "unknown"
		}
		i, ok := idx[code]
		if !ok {
			i, idx[code] = len(out), len(out)
			out = append(out, Failure{Code: code, LastAt: j.UpdatedAt.UTC(), LastJobID: j.ID, LastMessage: j.ErrorMessage})
		}
		out[i].Count++
	}
	slices.SortStableFunc(out, func(a, b Failure) int { return b.Count - a.Count })
	if out == nil {
		out = []Failure{}
	}
	return out
}
