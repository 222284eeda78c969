package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

type fakeQueues map[string]*asynq.QueueInfo

func (f fakeQueues) GetQueueInfo(q string) (*asynq.QueueInfo, error) {
	if i, ok := f[q]; ok {
		return i, nil
	}
	return nil, errors.New("queue not found")
}

func TestHandler(t *testing.T) {
	q := fakeQueues{"transcode": {Pending: 7, Active: 2, Retry: 1, Latency: 90 * time.Second}}
	rec := httptest.NewRecorder()
	Handler(q, []string{"transcode", "probe"}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		"# TYPE kiln_queue_pending_tasks gauge",
		`kiln_queue_pending_tasks{queue="transcode"} 7`,
		`kiln_queue_active_tasks{queue="transcode"} 2`,
		`kiln_queue_retry_tasks{queue="transcode"} 1`,
		`kiln_queue_latency_seconds{queue="transcode"} 90`,
		`kiln_queue_pending_tasks{queue="probe"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
}

type fakeDeadLetters struct {
	counts map[string]int
	err    error
}

func (f fakeDeadLetters) DeadLetterCounts(context.Context) (map[string]int, error) {
	return f.counts, f.err
}

func TestHandlerDeadLetters(t *testing.T) {
	get := func(c ...Collector) string {
		rec := httptest.NewRecorder()
		Handler(fakeQueues{}, []string{"probe"}, c...).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	body := get(DeadLetterMetrics(fakeDeadLetters{counts: map[string]int{"ingest": 2, "catalog": 0}}))
	for _, want := range []string{
		"# TYPE kiln_dead_letters gauge",
		`kiln_dead_letters{consumer="catalog"} 0` + "\n" + `kiln_dead_letters{consumer="ingest"} 2`,
		"kiln_dead_letters_up 1",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}
	body = get(DeadLetterMetrics(fakeDeadLetters{counts: map[string]int{"ingest": 0}, err: errors.New("nats down")}))
	if !strings.Contains(body, "kiln_dead_letters_up 0") || strings.Contains(body, `kiln_dead_letters{`) {
		t.Errorf("bus down:\n%s", body)
	}
	if body := get(); strings.Contains(body, "kiln_dead_letters") {
		t.Errorf("without dead letters:\n%s", body)
	}
}

type counter struct{ n int }

func (c counter) WriteMetrics(_ context.Context, w io.Writer) {
	fmt.Fprintf(w, "# TYPE kiln_test_total counter\nkiln_test_total %d\n", c.n)
}

func TestHandlerCollectors(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(fakeQueues{}, []string{"probe"}, counter{3}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body := rec.Body.String(); !strings.HasSuffix(body, "# TYPE kiln_test_total counter\nkiln_test_total 3\n") ||
		!strings.Contains(body, `kiln_queue_pending_tasks{queue="probe"} 0`) {
		t.Errorf("body:\n%s", body)
	}
}

func TestRejections(t *testing.T) {
	r := NewRejections()
	r.Register("catalog", "wrong_bucket", "outside_asset")
	r.Inc("catalog", "wrong_bucket")
	r.Inc("catalog", "wrong_bucket")
	r.Inc("ingest", "bad_source_key") // not registered: counted all the same
	var nilR *Rejections
	nilR.Inc("catalog", "wrong_bucket") // a consumer without metrics
	nilR.Register("catalog", "x")
	if n := r.Count("catalog", "wrong_bucket"); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}
	rec := httptest.NewRecorder()
	Handler(fakeQueues{}, nil, r).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	want := "# TYPE kiln_events_rejected_total counter\n" +
		`kiln_events_rejected_total{consumer="catalog",reason="outside_asset"} 0` + "\n" +
		`kiln_events_rejected_total{consumer="catalog",reason="wrong_bucket"} 2` + "\n" +
		`kiln_events_rejected_total{consumer="ingest",reason="bad_source_key"} 1` + "\n"
	if body := rec.Body.String(); !strings.Contains(body, want) {
		t.Errorf("missing\n%s\nin\n%s", want, body)
	}
}
