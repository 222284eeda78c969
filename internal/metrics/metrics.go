// Package metrics serves kiln's Prometheus metrics with
// prometheus/client_golang: one Registry per process, handed down to the
// parts that count what they do (through their Config structs), plus the
// state read at scrape time — the depth and age of every stage queue, which
// is the autoscaling signal for workers (KEDA's prometheus scaler, or its
// redis scaler on the same lists), the bus's dead letters per consumer and
// the catalog's jobs per state. The README ("Metrics and alerts") lists every metric.
package metrics

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// ScrapeTimeout bounds what a scrape waits for the state it reads (Redis,
// NATS, the catalog's database): a scrape never hangs on an outage; what
// could not be read in time is reported by its *_up gauge.
const ScrapeTimeout = 3 * time.Second

// Scraper reads state when /metrics is scraped, with the scrape's context
// (bounded by ScrapeTimeout). Describe is prometheus.Collector's.
type Scraper interface {
	Describe(ch chan<- *prometheus.Desc)
	Scrape(ctx context.Context, ch chan<- prometheus.Metric)
}

// Registry is the metrics of one kiln process: a prometheus.Registry (with
// the Go runtime and process collectors) for what the process counts, and
// the Scrapers that read state at each scrape. Pass it down as a
// prometheus.Registerer.
type Registry struct {
	*prometheus.Registry
	mu       sync.Mutex
	scrapers []Scraper
}

// NewRegistry returns the registry of a process, holding the Go runtime's
// and the process's collectors (go_*, process_*).
func NewRegistry() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Registry{Registry: reg}
}

// AddScraper adds a Scraper to every later scrape. Its descriptions are
// checked now (prometheus's registration rules), so a conflict fails at
// startup rather than at each scrape.
func (r *Registry) AddScraper(s Scraper) error {
	if err := prometheus.NewPedanticRegistry().Register(bound{s: s}); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scrapers = append(r.scrapers, s)
	return nil
}

// GatherContext gathers the registry's metrics and, with ctx, those of its
// scrapers.
func (r *Registry) GatherContext(ctx context.Context) ([]*dto.MetricFamily, error) {
	return r.gatherers(ctx).Gather()
}

func (r *Registry) gatherers(ctx context.Context) prometheus.Gatherers {
	r.mu.Lock()
	scrapers := slices.Clone(r.scrapers)
	r.mu.Unlock()
	return prometheus.Gatherers{r.Registry, prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		reg := prometheus.NewRegistry()
		for _, s := range scrapers {
			if err := reg.Register(bound{ctx: ctx, s: s}); err != nil {
				return nil, err
			}
		}
		return reg.Gather()
	})}
}

// Handler serves the registry in the Prometheus exposition formats
// (promhttp), each scrape reading its scrapers' state within ScrapeTimeout.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), ScrapeTimeout)
		defer cancel()
		promhttp.HandlerFor(r.gatherers(ctx), promhttp.HandlerOpts{
			ErrorHandling: promhttp.ContinueOnError, // serve what could be gathered
		}).ServeHTTP(w, req)
	})
}

// bound is a Scraper as a prometheus.Collector, collecting with ctx.
type bound struct {
	ctx context.Context
	s   Scraper
}

func (b bound) Describe(ch chan<- *prometheus.Desc) { b.s.Describe(ch) }
func (b bound) Collect(ch chan<- prometheus.Metric) { b.s.Scrape(b.ctx, ch) }

// Queues reads queue statistics (asynq's Inspector).
type Queues interface {
	// Queues lists the queues that exist (that have had a task).
	Queues() ([]string, error)
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
}

var _ Queues = (*asynq.Inspector)(nil)

// queueScraper reports the stage queues' statistics.
type queueScraper struct {
	q      Queues
	queues []string
	gauges []queueGauge
	up     *prometheus.Desc
}

type queueGauge struct {
	desc *prometheus.Desc
	get  func(*asynq.QueueInfo) float64
}

// QueueScraper reports, per queue, kiln_queue_{pending,active,scheduled,
// retry,archived}_tasks and kiln_queue_latency_seconds (the age of the
// oldest pending task), read from Redis at each scrape, and
// kiln_queue_up (0 when they could not be read in time: no queue series
// then, rather than zeros that would scale the workers down).
func QueueScraper(q Queues, queues []string) Scraper {
	queues = slices.Sorted(slices.Values(queues))
	g := func(name, help string, get func(*asynq.QueueInfo) float64) queueGauge {
		return queueGauge{prometheus.NewDesc(name, help, []string{"queue"}, nil), get}
	}
	return &queueScraper{q: q, queues: queues, gauges: []queueGauge{
		g("kiln_queue_pending_tasks", "Tasks waiting to run, per stage queue.", func(i *asynq.QueueInfo) float64 { return float64(i.Pending) }),
		g("kiln_queue_active_tasks", "Tasks running now, per stage queue.", func(i *asynq.QueueInfo) float64 { return float64(i.Active) }),
		g("kiln_queue_scheduled_tasks", "Tasks scheduled for later, per stage queue.", func(i *asynq.QueueInfo) float64 { return float64(i.Scheduled) }),
		g("kiln_queue_retry_tasks", "Tasks waiting to be retried, per stage queue.", func(i *asynq.QueueInfo) float64 { return float64(i.Retry) }),
		g("kiln_queue_archived_tasks", "Tasks that failed for good (dead letter), per stage queue.", func(i *asynq.QueueInfo) float64 { return float64(i.Archived) }),
		g("kiln_queue_latency_seconds", "Age of the oldest pending task, per stage queue.", func(i *asynq.QueueInfo) float64 { return i.Latency.Seconds() }),
	}, up: prometheus.NewDesc("kiln_queue_up", "Whether the stage queues' statistics could be read from Redis.", nil, nil)}
}

func (s *queueScraper) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range s.gauges {
		ch <- g.desc
	}
	ch <- s.up
}

func (s *queueScraper) Scrape(ctx context.Context, ch chan<- prometheus.Metric) {
	// The Inspector takes no context: it reads in a goroutine, abandoned
	// (it ends with the Redis client's own timeouts) when ctx ends first.
	type result struct {
		infos map[string]*asynq.QueueInfo
		err   error
	}
	done := make(chan result, 1)
	go func() {
		existing, err := s.q.Queues()
		if err != nil {
			done <- result{err: err}
			return
		}
		infos := map[string]*asynq.QueueInfo{}
		for _, name := range s.queues {
			if !slices.Contains(existing, name) {
				infos[name] = &asynq.QueueInfo{} // a queue that has never had a task does not exist yet
				continue
			}
			info, err := s.q.GetQueueInfo(name)
			if err != nil {
				done <- result{err: err}
				return
			}
			infos[name] = info
		}
		done <- result{infos: infos}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		res.err = ctx.Err()
	}
	if res.err != nil {
		ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 0)
		return
	}
	for _, g := range s.gauges {
		for _, name := range s.queues {
			ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, g.get(res.infos[name]), name)
		}
	}
	ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 1)
}

// DeadLetters counts the bus's dead letters per consumer (bus.Bus).
type DeadLetters interface {
	DeadLetterCounts(ctx context.Context) (map[string]int, error)
}

type deadLetterScraper struct {
	dl        DeadLetters
	count, up *prometheus.Desc
}

// DeadLetterScraper reports the bus's dead letters: kiln_dead_letters, per
// consumer, and kiln_dead_letters_up (0 when they could not be counted).
func DeadLetterScraper(dl DeadLetters) Scraper {
	return deadLetterScraper{dl: dl,
		count: prometheus.NewDesc("kiln_dead_letters", "Bus messages a consumer could never process, kept in KILN_DLQ until replayed, per consumer.", []string{"consumer"}, nil),
		up:    prometheus.NewDesc("kiln_dead_letters_up", "Whether the dead letters could be counted.", nil, nil),
	}
}

func (s deadLetterScraper) Describe(ch chan<- *prometheus.Desc) { ch <- s.count; ch <- s.up }

func (s deadLetterScraper) Scrape(ctx context.Context, ch chan<- prometheus.Metric) {
	counts, err := s.dl.DeadLetterCounts(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 0)
		return
	}
	for consumer, n := range counts {
		ch <- prometheus.MustNewConstMetric(s.count, prometheus.GaugeValue, float64(n), consumer)
	}
	ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 1)
}

// JobCounts counts the catalog's jobs per state (catalog.Store.CountJobs,
// by state name).
type JobCounts func(ctx context.Context) (map[string]int, error)

type jobScraper struct {
	count    JobCounts
	states   []string
	jobs, up *prometheus.Desc
}

// JobScraper reports kiln_jobs, the catalog's jobs per state (every one of
// states, 0 when none is in it), and kiln_jobs_up (0 when they could not be
// counted).
func JobScraper(count JobCounts, states []string) Scraper {
	return jobScraper{count: count, states: states,
		jobs: prometheus.NewDesc("kiln_jobs", "Jobs in the catalog per state, deleted ones excluded.", []string{"state"}, nil),
		up:   prometheus.NewDesc("kiln_jobs_up", "Whether the catalog's jobs could be counted.", nil, nil),
	}
}

func (s jobScraper) Describe(ch chan<- *prometheus.Desc) { ch <- s.jobs; ch <- s.up }

func (s jobScraper) Scrape(ctx context.Context, ch chan<- prometheus.Metric) {
	counts, err := s.count(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 0)
		return
	}
	for _, st := range s.states {
		ch <- prometheus.MustNewConstMetric(s.jobs, prometheus.GaugeValue, float64(counts[st]), st)
	}
	ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, 1)
}
