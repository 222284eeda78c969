package metrics

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
)

// Rejections counts the bus messages kiln's consumers refused because they
// claim what their sender may not (an output outside its asset, a source
// outside the sources bucket, ids that do not match: see the README,
// "Security"), by consumer and reason: kiln_events_rejected_total. A process
// has one, shared by its consumers (a kiln serve runs two), so the metric is
// written once.
type Rejections struct {
	mu sync.Mutex
	n  map[rejection]uint64
}

type rejection struct{ consumer, reason string }

// NewRejections returns an empty counter.
func NewRejections() *Rejections { return &Rejections{n: map[rejection]uint64{}} }

// Register declares the reasons a consumer may give, so each is reported
// (as 0) before it first happens: an alert on its rate needs the series.
func (r *Rejections) Register(consumer string, reasons ...string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, reason := range reasons {
		k := rejection{consumer, reason}
		r.n[k] += 0
	}
}

// Inc counts one message consumer rejected for reason. It does nothing on a
// nil *Rejections (a consumer built without metrics).
func (r *Rejections) Inc(consumer, reason string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[rejection{consumer, reason}]++
}

// Count is the number of messages consumer rejected for reason.
func (r *Rejections) Count(consumer, reason string) uint64 {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[rejection{consumer, reason}]
}

// WriteMetrics writes kiln_events_rejected_total (Collector).
func (r *Rejections) WriteMetrics(_ context.Context, w io.Writer) {
	r.mu.Lock()
	keys := make([]rejection, 0, len(r.n))
	for k := range r.n {
		keys = append(keys, k)
	}
	counts := make(map[rejection]uint64, len(r.n))
	for k, v := range r.n {
		counts[k] = v
	}
	r.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].consumer != keys[j].consumer {
			return keys[i].consumer < keys[j].consumer
		}
		return keys[i].reason < keys[j].reason
	})
	const name = "kiln_events_rejected_total"
	fmt.Fprintf(w, "# HELP %s Bus messages a consumer refused because they claim what their sender may not (dead-lettered), by consumer and reason.\n# TYPE %s counter\n", name, name)
	for _, k := range keys {
		fmt.Fprintf(w, "%s{consumer=%q,reason=%q} %d\n", name, k.consumer, k.reason, counts[k])
	}
}
