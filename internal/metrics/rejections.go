package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Rejections counts the bus messages kiln's consumers refused because they
// claim what their sender may not (an output outside its asset, a source
// outside the sources bucket, ids that do not match: see the README,
// "Security"), by consumer and reason: kiln_events_rejected_total. A process
// has one, shared by its consumers (a kiln serve runs two).
type Rejections struct {
	n *prometheus.CounterVec
}

// NewRejections returns the counter, registered with reg.
func NewRejections(reg prometheus.Registerer) (*Rejections, error) {
	n := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_events_rejected_total",
		Help: "Bus messages a consumer refused because they claim what their sender may not (dead-lettered), by consumer and reason.",
	}, []string{"consumer", "reason"})
	if err := reg.Register(n); err != nil {
		return nil, err
	}
	return &Rejections{n: n}, nil
}

// Register declares the reasons a consumer may give, so each is reported
// (as 0) before it first happens: an alert on its rate needs the series.
func (r *Rejections) Register(consumer string, reasons ...string) {
	if r == nil {
		return
	}
	for _, reason := range reasons {
		r.n.WithLabelValues(consumer, reason)
	}
}

// Inc counts one message consumer rejected for reason. It does nothing on a
// nil *Rejections (a consumer built without metrics).
func (r *Rejections) Inc(consumer, reason string) {
	if r == nil {
		return
	}
	r.n.WithLabelValues(consumer, reason).Inc()
}

// Count is the number of messages consumer rejected for reason.
func (r *Rejections) Count(consumer, reason string) uint64 {
	if r == nil {
		return 0
	}
	var m dto.Metric
	if err := r.n.WithLabelValues(consumer, reason).Write(&m); err != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}
