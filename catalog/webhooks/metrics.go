package webhooks

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Give-up reasons (the reason label of kiln_webhook_giveups_total).
const (
	GiveUpExhausted = "exhausted" // every attempt of the retry schedule failed
	GiveUpGone      = "gone"      // the receiver answered 410 Gone: its endpoint is disabled
	GiveUpDisabled  = "disabled"  // the endpoint was disabled before the attempt
	GiveUpNoSecret  = "no_secret" // a per-upload delivery without KILN_WEBHOOK_SECRET
)

// serviceMetrics are the dispatcher's counters, recorded when an attempt's
// result is written to the delivery log. A nil *serviceMetrics records
// nothing.
type serviceMetrics struct {
	attempts *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	giveUps  *prometheus.CounterVec
}

func newServiceMetrics(reg prometheus.Registerer) (*serviceMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &serviceMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_webhook_attempts_total",
			Help: "Webhook delivery attempts recorded, by result: success (2xx), http_3xx, http_4xx, http_5xx, timeout, error (no response).",
		}, []string{"result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_webhook_attempt_duration_seconds",
			Help:    "Time from sending a webhook to its receiver's answer (or the failure), by result.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"result"}),
		giveUps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_webhook_giveups_total",
			Help: "Webhook deliveries failed for good, by reason: exhausted, gone, disabled, no_secret.",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.attempts, m.latency, m.giveUps} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{"success", "http_3xx", "http_4xx", "http_5xx", "timeout", "error"} {
		m.attempts.WithLabelValues(r) // an alert's rate needs the series
		m.latency.WithLabelValues(r)
	}
	for _, r := range []string{GiveUpExhausted, GiveUpGone, GiveUpDisabled, GiveUpNoSecret} {
		m.giveUps.WithLabelValues(r)
	}
	return m, nil
}

// resultClass is the result label of an attempt.
func resultClass(res Result) string {
	switch {
	case res.OK():
		return "success"
	case res.StatusCode >= 300 && res.StatusCode < 400:
		return "http_3xx"
	case res.StatusCode >= 400 && res.StatusCode < 500:
		return "http_4xx"
	case res.StatusCode >= 500:
		return "http_5xx"
	case strings.HasPrefix(res.Error, "timeout:"):
		return "timeout"
	}
	return "error"
}

func (m *serviceMetrics) attempt(res Result) {
	if m == nil {
		return
	}
	class := resultClass(res)
	m.attempts.WithLabelValues(class).Inc()
	m.latency.WithLabelValues(class).Observe((time.Duration(res.LatencyMS) * time.Millisecond).Seconds())
}

func (m *serviceMetrics) giveUp(reason string) {
	if m != nil && reason != "" {
		m.giveUps.WithLabelValues(reason).Inc()
	}
}
