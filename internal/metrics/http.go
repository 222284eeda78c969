package metrics

import (
	"net/http"
	"strconv"

	"github.com/felixge/httpsnoop"
	"github.com/prometheus/client_golang/prometheus"
)

// HTTP counts the requests a process serves.
type HTTP struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewHTTP returns the HTTP metrics, registered with reg:
// kiln_http_requests_total{route,code} and
// kiln_http_request_duration_seconds{route}.
func NewHTTP(reg prometheus.Registerer) (*HTTP, error) {
	h := &HTTP{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_http_requests_total",
			Help: "HTTP requests served, by route (the ServeMux pattern, \"unmatched\" for none) and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request (until its handler returned: event streams and uploads run long), by route.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{h.requests, h.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Middleware counts and times the requests next serves. next is, or ends
// in, the process's http.ServeMux, which records the pattern it matched on
// the request: that pattern, never the raw path, is the route label, so the
// number of series stays bounded whatever clients ask for.
func (h *HTTP) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// httpsnoop keeps the writer's optional interfaces (Flusher for the
		// event streams, http.ResponseController's Unwrap).
		m := httpsnoop.CaptureMetrics(next, w, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		h.requests.WithLabelValues(route, strconv.Itoa(m.Code)).Inc()
		h.duration.WithLabelValues(route).Observe(m.Duration.Seconds())
	})
}
