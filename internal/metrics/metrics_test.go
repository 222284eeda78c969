package metrics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/metrics/metricstest"

	"github.com/hibiken/asynq"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/lease"
	"github.com/kilnvideo/kiln/internal/tasks"
)

type fakeQueues struct {
	infos map[string]*asynq.QueueInfo
	err   error
	block chan struct{}
}

func (f fakeQueues) Queues() ([]string, error) {
	if f.block != nil {
		<-f.block
	}
	if f.err != nil {
		return nil, f.err
	}
	return slices.Collect(maps.Keys(f.infos)), nil
}

func (f fakeQueues) GetQueueInfo(q string) (*asynq.QueueInfo, error) {
	if i, ok := f.infos[q]; ok {
		return i, nil
	}
	return nil, errors.New("queue not found")
}

// scrape serves reg's /metrics and parses it with the Prometheus text
// parser.
func scrape(t *testing.T, reg *Registry) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

func mustAdd(t *testing.T, reg *Registry, s Scraper) {
	t.Helper()
	if err := reg.AddScraper(s); err != nil {
		t.Fatal(err)
	}
}

func TestQueues(t *testing.T) {
	reg := NewRegistry()
	q := fakeQueues{infos: map[string]*asynq.QueueInfo{"transcode": {Pending: 7, Active: 2, Retry: 1, Archived: 3, Latency: 1500 * time.Millisecond}}}
	mustAdd(t, reg, QueueScraper(q, []string{"transcode", "probe"}))
	fams := scrape(t, reg)
	for _, c := range []struct {
		name, queue string
		want        float64
	}{
		{"kiln_queue_pending_tasks", "transcode", 7},
		{"kiln_queue_active_tasks", "transcode", 2},
		{"kiln_queue_retry_tasks", "transcode", 1},
		{"kiln_queue_archived_tasks", "transcode", 3},
		{"kiln_queue_latency_seconds", "transcode", 1.5},
		{"kiln_queue_pending_tasks", "probe", 0}, // not created yet
	} {
		if got, ok := metricstest.Value(fams, c.name, "queue", c.queue); !ok || got != c.want {
			t.Errorf("%s{queue=%q} = %v (%v), want %v", c.name, c.queue, got, ok, c.want)
		}
	}
	if up, _ := metricstest.Value(fams, "kiln_queue_up"); up != 1 {
		t.Errorf("kiln_queue_up = %v", up)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

func TestQueuesDown(t *testing.T) {
	for name, q := range map[string]fakeQueues{
		"error": {err: errors.New("redis down")},
		"hangs": {block: make(chan struct{})}, // never answers: the scrape times out
	} {
		t.Run(name, func(t *testing.T) {
			reg := NewRegistry()
			mustAdd(t, reg, QueueScraper(q, []string{"probe"}))
			fams := scrape(t, reg)
			if up, ok := metricstest.Value(fams, "kiln_queue_up"); !ok || up != 0 {
				t.Errorf("kiln_queue_up = %v, %v; want 0", up, ok)
			}
			if _, ok := metricstest.Value(fams, "kiln_queue_pending_tasks", "queue", "probe"); ok {
				t.Error("a queue series while Redis is down: it would read as an empty queue")
			}
			if q.block != nil {
				close(q.block)
			}
		})
	}
}

type fakeDeadLetters struct {
	counts map[string]int
	err    error
}

func (f fakeDeadLetters) DeadLetterCounts(context.Context) (map[string]int, error) {
	return f.counts, f.err
}

func TestDeadLetters(t *testing.T) {
	reg := NewRegistry()
	mustAdd(t, reg, DeadLetterScraper(fakeDeadLetters{counts: map[string]int{"ingest": 2, "catalog": 0}}))
	fams := scrape(t, reg)
	if n, _ := metricstest.Value(fams, "kiln_dead_letters", "consumer", "ingest"); n != 2 {
		t.Errorf("ingest: %v", n)
	}
	if n, ok := metricstest.Value(fams, "kiln_dead_letters", "consumer", "catalog"); !ok || n != 0 {
		t.Errorf("catalog: %v %v", n, ok)
	}
	if up, _ := metricstest.Value(fams, "kiln_dead_letters_up"); up != 1 {
		t.Errorf("up = %v", up)
	}
	reg = NewRegistry()
	mustAdd(t, reg, DeadLetterScraper(fakeDeadLetters{counts: map[string]int{"ingest": 0}, err: errors.New("nats down")}))
	fams = scrape(t, reg)
	if up, ok := metricstest.Value(fams, "kiln_dead_letters_up"); !ok || up != 0 {
		t.Errorf("bus down: up = %v %v", up, ok)
	}
	if _, ok := metricstest.Value(fams, "kiln_dead_letters"); ok {
		t.Error("dead letter counts while the bus is down")
	}
}

func TestJobs(t *testing.T) {
	reg := NewRegistry()
	mustAdd(t, reg, JobScraper(func(context.Context) (map[string]int, error) {
		return map[string]int{"queued": 2, "ready": 5}, nil
	}, []string{"queued", "transcoding", "ready"}))
	fams := scrape(t, reg)
	for st, want := range map[string]float64{"queued": 2, "transcoding": 0, "ready": 5} {
		if n, ok := metricstest.Value(fams, "kiln_jobs", "state", st); !ok || n != want {
			t.Errorf("kiln_jobs{state=%q} = %v %v, want %v", st, n, ok, want)
		}
	}
}

func TestRejections(t *testing.T) {
	reg := NewRegistry()
	r, err := NewRejections(reg)
	if err != nil {
		t.Fatal(err)
	}
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
	fams := scrape(t, reg)
	for _, c := range []struct {
		consumer, reason string
		want             float64
	}{{"catalog", "outside_asset", 0}, {"catalog", "wrong_bucket", 2}, {"ingest", "bad_source_key", 1}} {
		if n, ok := metricstest.Value(fams, "kiln_events_rejected_total", "consumer", c.consumer, "reason", c.reason); !ok || n != c.want {
			t.Errorf("%s/%s = %v %v, want %v", c.consumer, c.reason, n, ok, c.want)
		}
	}
	if _, err := NewRejections(reg); err == nil {
		t.Error("registered twice")
	}
}

func TestHTTP(t *testing.T) {
	reg := NewRegistry()
	h, err := NewHTTP(reg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			t.Error("the writer lost its Flusher")
		}
		w.WriteHeader(http.StatusNotFound)
	})
	srv := h.Middleware(mux)
	for _, path := range []string{"/v1/jobs/a", "/v1/jobs/b", "/nothing/here"} {
		srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	fams := scrape(t, reg)
	if n, _ := metricstest.Value(fams, "kiln_http_requests_total", "route", "GET /v1/jobs/{id}", "code", "404"); n != 2 {
		t.Errorf("job route: %v, want 2 (one series for both ids)", n)
	}
	if n, _ := metricstest.Value(fams, "kiln_http_requests_total", "route", "unmatched", "code", "404"); n != 1 {
		t.Errorf("unmatched: %v", n)
	}
	if n, _ := metricstest.Value(fams, "kiln_http_request_duration_seconds", "route", "GET /v1/jobs/{id}"); n != 2 {
		t.Errorf("duration samples: %v", n)
	}
	for _, m := range fams["kiln_http_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if strings.Contains(l.GetValue(), "/v1/jobs/a") {
				t.Errorf("raw path as a label: %v", m)
			}
		}
	}
}

func TestResult(t *testing.T) {
	ctx := t.Context()
	for err, want := range map[error]string{
		nil: ResultOK,
		tasks.Permanent(failure.Canceled, "canceled", failure.ErrCanceled): ResultDropped,
		fmt.Errorf("run: %w", lease.ErrBusy):                               ResultBusy,
		tasks.Permanent(failure.InvalidMedia, "bad", nil):                  ResultFailed,
		errors.New("s3 hiccup"):                                            ResultRetry,
	} {
		if got := Result(ctx, err); got != want {
			t.Errorf("Result(%v) = %s, want %s", err, got, want)
		}
	}
}

type fakeRunner struct {
	runs []fakeRun // one per call
}

type fakeRun struct {
	out time.Duration
	err error
}

func (f *fakeRunner) Run(_ context.Context, _ []string, onProgress func(ffmpeg.Progress)) error {
	r := f.runs[0]
	f.runs = f.runs[1:]
	time.Sleep(10 * time.Millisecond)
	onProgress(ffmpeg.Progress{OutTime: r.out / 2})
	onProgress(ffmpeg.Progress{OutTime: r.out, Done: true})
	return r.err
}

func (*fakeRunner) Probe(context.Context, string, ffmpeg.ProbeOptions) (*ffmpeg.ProbeResult, error) {
	return nil, nil
}

func TestFFmpegSpeed(t *testing.T) {
	reg := NewRegistry()
	f, err := NewFFmpeg(reg, &fakeRunner{runs: []fakeRun{{out: 10 * time.Second}, {out: 10 * time.Second, err: errors.New("ffmpeg failed")}, {out: 40 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []ffmpeg.Progress
	for range 3 {
		_ = f.Run(t.Context(), nil, func(p ffmpeg.Progress) { got = append(got, p) })
	}
	if len(got) != 6 {
		t.Errorf("the caller got %d progress reports, want all 6", len(got))
	}
	fams := scrape(t, reg)
	// Only the successful run of more than a frame counts.
	if n, _ := metricstest.Value(fams, "kiln_ffmpeg_speed_ratio", "stage", "none"); n != 1 {
		t.Errorf("speed samples: %v, want 1", n)
	}
	h := fams["kiln_ffmpeg_speed_ratio"].GetMetric()[0].GetHistogram()
	if s := h.GetSampleSum(); s <= 0 || s > 1000 { // 10 s of media in at least 10 ms of wall time
		t.Errorf("speed sum %v", s)
	}
}
