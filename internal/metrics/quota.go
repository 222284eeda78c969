package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/tenant"
)

// QuotaRefusals counts the uploads refused because they would pass a
// tenant's quota, by tenant and quota: kiln_quota_refusals_total.
type QuotaRefusals struct {
	n *prometheus.CounterVec
}

// NewQuotaRefusals returns the counter, registered with reg.
func NewQuotaRefusals(reg prometheus.Registerer) (*QuotaRefusals, error) {
	n := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_quota_refusals_total",
		Help: "Uploads refused by a tenant's quota (concurrent_jobs: 429; stored_bytes, encoded_minutes: 403), by tenant and quota.",
	}, []string{"tenant", "quota"})
	if err := reg.Register(n); err != nil {
		return nil, err
	}
	// The default tenant's series exist from the start: an alert on their
	// rate needs them.
	for _, q := range quota.Names {
		n.WithLabelValues(tenant.Default, q)
	}
	return &QuotaRefusals{n: n}, nil
}

// Inc counts one upload of tenant that quota refused.
func (q *QuotaRefusals) Inc(tenant, quota string) { q.n.WithLabelValues(tenant, quota).Inc() }
