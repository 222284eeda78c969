// Package metrics serves kiln's Prometheus metrics: the depth of every
// stage queue, which is the autoscaling signal for workers (KEDA's
// prometheus scaler, or its redis scaler on the same lists), and the bus's
// dead letters per consumer.
package metrics

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"
)

// Queues reads queue statistics (asynq's Inspector).
type Queues interface {
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
}

var _ Queues = (*asynq.Inspector)(nil)

// DeadLetters counts the bus's dead letters per consumer (bus.Bus).
type DeadLetters interface {
	DeadLetterCounts(ctx context.Context) (map[string]int, error)
}

// Collector writes its own metrics (HELP and TYPE lines included) in the
// Prometheus text format: a part of a process that counts what it does
// (the catalog's reconciler) exposes its counters through it.
type Collector interface {
	WriteMetrics(ctx context.Context, w io.Writer)
}

// Handler serves the Prometheus text exposition of the given queues, then
// of every collector. Written by hand: a handful of gauges and counters do
// not justify the Prometheus client library's dependency tree.
func Handler(q Queues, queues []string, collectors ...Collector) http.Handler {
	sort.Strings(queues)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		gauges := []struct {
			name, help string
			get        func(*asynq.QueueInfo) int
		}{
			{"kiln_queue_pending_tasks", "Tasks waiting to run, per stage queue.", func(i *asynq.QueueInfo) int { return i.Pending }},
			{"kiln_queue_active_tasks", "Tasks running now, per stage queue.", func(i *asynq.QueueInfo) int { return i.Active }},
			{"kiln_queue_scheduled_tasks", "Tasks scheduled for later, per stage queue.", func(i *asynq.QueueInfo) int { return i.Scheduled }},
			{"kiln_queue_retry_tasks", "Tasks waiting to be retried, per stage queue.", func(i *asynq.QueueInfo) int { return i.Retry }},
			{"kiln_queue_archived_tasks", "Tasks that failed for good (dead letter), per stage queue.", func(i *asynq.QueueInfo) int { return i.Archived }},
			{"kiln_queue_latency_seconds", "Age of the oldest pending task, per stage queue.", func(i *asynq.QueueInfo) int { return int(i.Latency.Seconds()) }},
		}
		infos := map[string]*asynq.QueueInfo{}
		for _, name := range queues {
			info, err := q.GetQueueInfo(name)
			if err != nil {
				info = &asynq.QueueInfo{} // a queue that has never had a task does not exist yet
			}
			infos[name] = info
		}
		for _, g := range gauges {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", g.name, g.help, g.name)
			for _, name := range queues {
				fmt.Fprintf(&b, "%s{queue=%q} %d\n", g.name, name, g.get(infos[name]))
			}
		}
		for _, c := range collectors {
			c.WriteMetrics(r.Context(), &b)
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write([]byte(b.String()))
	})
}

// DeadLetterMetrics is the Collector of the bus's dead letters:
// kiln_dead_letters, per consumer, and kiln_dead_letters_up (0 when they
// could not be counted).
func DeadLetterMetrics(dl DeadLetters) Collector { return deadLetterMetrics{dl} }

type deadLetterMetrics struct{ dl DeadLetters }

func (m deadLetterMetrics) WriteMetrics(ctx context.Context, b io.Writer) {
	dl := m.dl
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second) // a scrape must not hang on a bus outage
	defer cancel()
	counts, err := dl.DeadLetterCounts(ctx)
	const name = "kiln_dead_letters"
	fmt.Fprintf(b, "# HELP %s Bus messages a consumer could never process, kept in KILN_DLQ until replayed, per consumer.\n# TYPE %s gauge\n", name, name)
	consumers := make([]string, 0, len(counts))
	for c := range counts {
		consumers = append(consumers, c)
	}
	sort.Strings(consumers)
	if err == nil {
		for _, c := range consumers {
			fmt.Fprintf(b, "%s{consumer=%q} %d\n", name, c, counts[c])
		}
	}
	up := 1
	if err != nil {
		up = 0
	}
	fmt.Fprintf(b, "# HELP %s_up Whether the dead letters could be counted.\n# TYPE %s_up gauge\n%s_up %d\n", name, name, name, up)
}
