package admission

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Scraper exports each tenant's transcode work on /metrics (it is a
// metrics.Scraper): kiln_admission_waiting_tasks{tenant,priority} and
// kiln_admission_admitted_tasks{tenant}. Waiting plus admitted is the
// tenant's backlog; their sum over tenants is what autoscaling follows.
func (q *Queue) Scraper() *Scraper { return &Scraper{q: q} }

// Scraper is Queue.Scraper's.
type Scraper struct{ q *Queue }

var (
	waitingDesc = prometheus.NewDesc("kiln_admission_waiting_tasks",
		"Transcode tasks waiting for admission to the fleet, per tenant and priority.", []string{"tenant", "priority"}, nil)
	admittedDesc = prometheus.NewDesc("kiln_admission_admitted_tasks",
		"Transcode tasks admitted to the fleet and not yet done, per tenant.", []string{"tenant"}, nil)
)

// Describe implements metrics.Scraper.
func (s *Scraper) Describe(ch chan<- *prometheus.Desc) {
	ch <- waitingDesc
	ch <- admittedDesc
}

// Scrape implements metrics.Scraper.
func (s *Scraper) Scrape(ctx context.Context, ch chan<- prometheus.Metric) {
	snap, err := s.q.Snapshot(ctx)
	if err != nil {
		s.q.log.Warn("admission metrics", zap.Error(err))
		return
	}
	for tenant, t := range snap {
		for prio, n := range t.Waiting {
			ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(n), tenant, prio)
		}
		ch <- prometheus.MustNewConstMetric(admittedDesc, prometheus.GaugeValue, float64(t.Admitted), tenant)
	}
}
