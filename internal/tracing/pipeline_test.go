package tracing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestMain removes the kiln binary testenv.BuildKiln built for this run.
func TestMain(m *testing.M) { testenv.Main(m) }

const apiKey = "kiln_tracing_0123456789abcdef"

// TestOneUploadOneTrace runs kiln as a fleet — an ingest, a worker and a
// catalog process on a real Redis, NATS and MinIO, each told where to send
// spans only by OTEL_EXPORTER_OTLP_ENDPOINT, as a user would — uploads a
// clip and waits until it is ready. The OTLP receiver then holds one
// trace for the upload: the ingest's upload and intake spans, the span of
// every stage (probe, transcode, thumbnail, package; each the child of the
// span that enqueued it), the ffmpeg runs and the catalog's apply of the
// job's events, every span's parent in the trace, all under the upload.
func TestOneUploadOneTrace(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe", "redis-server")
	testenv.MinIOBin(t) // before building kiln, which takes a while
	kiln := testenv.BuildKiln(t)
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	redis := testenv.StartRedis(t, filepath.Join(dir, "redis"), logs)
	nats := testenv.StartNATS(t, filepath.Join(dir, "nats"), logs)
	minio := testenv.StartMinIO(t, filepath.Join(dir, "minio"), logs, nats)
	rcv := newReceiver(t)

	common := []string{
		"KILN_API_KEYS=" + apiKey,
		"KILN_REDIS_ADDR=" + redis.Addr, "KILN_REDIS_PASSWORD=" + redis.Password,
		"KILN_S3_ENDPOINT=" + minio.Endpoint, "KILN_S3_ACCESS_KEY=" + minio.AccessKey, "KILN_S3_SECRET_KEY=" + minio.SecretKey,
		"KILN_LOG_FORMAT=console",
		// The user's way in: standard variables only.
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL,
		"OTEL_BSP_SCHEDULE_DELAY=200", // ms: export soon after each span ends
	}
	role := func(name string, extra ...string) (*testenv.Proc, string) {
		addr := testenv.FreePort(t)
		env := slices.Concat(common, nats.KilnEnv(name), []string{"KILN_HTTP_ADDR=" + addr, "KILN_PUBLIC_URL=http://" + addr}, extra)
		p := testenv.NewProc(t, name, logs, env, kiln, name)
		p.SetReady(testenv.HTTPReady("http://" + addr + "/readyz"))
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		return p, "http://" + addr
	}
	if err := os.MkdirAll(filepath.Join(dir, "catalog"), 0o755); err != nil {
		t.Fatal(err)
	}
	catalog, catalogURL := role("catalog", "KILN_DATABASE="+filepath.Join(dir, "catalog", "kiln.db"))
	ingest, ingestURL := role("ingest", "KILN_S3_NOTIFY_ARN="+minio.NotifyARN)
	worker, _ := role("worker", "KILN_CONCURRENCY=1", "KILN_FFMPEG_THREADS=1", "KILN_WORK_DIR="+filepath.Join(dir, "work"))
	for _, p := range []*testenv.Proc{catalog, ingest, worker} {
		if err := p.WaitReady(90 * time.Second); err != nil {
			t.Fatal(err)
		}
	}

	clip := testenv.Clip(t, testenv.ClipSpec{Seconds: 2})
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var up struct {
		JobID   string `json:"job_id"`
		AssetID string `json:"asset_id"`
	}
	if code := api(t, http.MethodPost, ingestURL+"/v1/uploads?filename=clip.mp4", f, &up); code != http.StatusAccepted {
		t.Fatalf("upload: status %d", code)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var job struct {
			State string `json:"state"`
			Error any    `json:"error"`
		}
		code := api(t, http.MethodGet, catalogURL+"/v1/jobs/"+up.JobID, nil, &job)
		if code == http.StatusOK && job.State == "ready" {
			break
		}
		if job.State == "failed" || time.Now().After(deadline) {
			t.Fatalf("job %s: status %d, state %q %v", up.JobID, code, job.State, job.Error)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// Spans are exported in batches, by each process on its own: wait
	// until the upload's trace is whole (every span's parent there, the
	// worker's last stage and the catalog's apply of READY, the last
	// things to happen, in it), or a minute; then check it.
	var spans []span
	var upload span
	trace := map[string]span{} // the upload's trace, by span id
	for wait := time.Now().Add(time.Minute); ; {
		spans = rcv.Spans()
		var ok bool
		upload, ok = find(spans, func(s span) bool { return s.Service == "kiln-ingest" && s.Name == "POST /v1/uploads" })
		clear(trace)
		for _, s := range spans {
			if ok && s.TraceID == upload.TraceID {
				trace[s.SpanID] = s
			}
		}
		whole := ok
		for _, s := range trace {
			if _, parent := trace[s.ParentID]; !parent && s.SpanID != upload.SpanID {
				whole = false
			}
		}
		in := slices.Collect(maps.Values(trace))
		_, ready := find(in, func(s span) bool {
			return s.Service == "kiln-catalog" && s.Name == "apply job event" && s.Attrs["kiln.job.state"] == "JOB_STATE_READY"
		})
		_, packaged := find(in, func(s span) bool { return s.Name == tasks.TypePackage })
		_, notified := find(in, func(s span) bool { return s.Name == "intake" && s.Attrs["kiln.origin"] == "s3" })
		if whole && ready && packaged && notified {
			break
		}
		if time.Now().After(wait) {
			t.Logf("the upload's trace is not whole after a minute (upload span %v, READY applied %v, packaged %v, notification's intake %v)",
				ok, ready, packaged, notified)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if upload.SpanID == "" {
		t.Fatalf("no upload span among the %d received:\n%s", len(spans), dump(spans))
	}
	if upload.ParentID != "" {
		t.Errorf("the upload span has a parent: %v", upload)
	}
	t.Logf("the upload's trace %s has %d spans (of %d received)", upload.TraceID, len(trace), len(spans))
	outside := map[string]int{} // the test's polls of the job, the bucket notification's delivery
	for _, s := range spans {
		if s.TraceID != upload.TraceID {
			outside[s.Service+" "+s.Name]++
		}
	}
	t.Logf("spans in other traces: %v", outside)
	// The catalog's API is traced too, each request a span named by its
	// route (the test's GETs of the job: traces of their own).
	if outside["kiln-catalog GET /v1/jobs/{id}"] == 0 {
		t.Errorf("no server span of the catalog's GET /v1/jobs/{id}")
	}

	// Every span of the job is in the upload's trace.
	for _, s := range spans {
		if s.Attrs["kiln.job_id"] == up.JobID && s.TraceID != upload.TraceID {
			t.Errorf("span of the job outside the upload's trace: %v", s)
		}
	}
	// Every span of the trace has its parent in it, up to the upload.
	for _, s := range trace {
		for at, hops := s, 0; at.SpanID != upload.SpanID; hops++ {
			p, ok := trace[at.ParentID]
			if !ok || hops > len(trace) {
				t.Errorf("span %v: ancestor %v has its parent %q outside the trace", s, at, at.ParentID)
				break
			}
			at = p
		}
	}

	// What each role did is there, in its own service.
	one := func(service, name string) span {
		t.Helper()
		s, ok := find(slices.Collect(maps.Values(trace)), func(s span) bool { return s.Service == service && s.Name == name })
		if !ok {
			t.Fatalf("no span %q of %s in the upload's trace:\n%s", name, service, dump(slices.Collect(maps.Values(trace))))
		}
		return s
	}
	// Both of the upload's facts are handled in its trace: its own "object
	// landed" and the bucket notification (through the object's metadata).
	for _, origin := range []string{"api", "s3"} {
		if _, ok := find(slices.Collect(maps.Values(trace)), func(s span) bool {
			return s.Service == "kiln-ingest" && s.Name == "intake" && s.Attrs["kiln.origin"] == origin
		}); !ok {
			t.Errorf("no intake of the %s fact in the upload's trace", origin)
		}
	}
	probe := one("kiln-worker", tasks.TypeProbe)
	transcode := one("kiln-worker", tasks.TypeTranscode)
	pkg := one("kiln-worker", tasks.TypePackage)
	one("kiln-worker", "ffprobe")
	one("kiln-worker", "ffmpeg")
	one("kiln-catalog", "apply job event")
	// Each stage is the child of the span that enqueued it: the probe of
	// an intake (the upload's two facts, its own and the bucket
	// notification, each have one: either may start the job), then each
	// stage of the one before.
	if p := trace[probe.ParentID]; p.Service != "kiln-ingest" || p.Name != "intake" || p.Attrs["kiln.job_id"] != up.JobID {
		t.Errorf("the probe's parent is %v, want an intake of the job", p)
	}
	for _, c := range []struct{ child, parent span }{
		{transcode, probe}, {pkg, transcode},
	} {
		if c.child.ParentID != c.parent.SpanID {
			t.Errorf("%s's parent is %v, want %s", c.child.Name, trace[c.child.ParentID], c.parent.Name)
		}
	}
	for _, s := range []span{probe, transcode, pkg} {
		if s.Attrs["kiln.job_id"] != up.JobID || s.Attrs["kiln.asset_id"] != up.AssetID || s.Attrs["kiln.attempt"] != "1" {
			t.Errorf("stage span attributes: %v", s)
		}
	}
	// Job events cross NATS with their trace context: the catalog applies
	// each stage's events in the trace, under the stage that published them.
	states := map[string]bool{}
	for _, s := range trace {
		if s.Service == "kiln-catalog" && s.Name == "apply job event" {
			states[s.Attrs["kiln.job.state"]] = true
		}
	}
	for _, st := range []string{"JOB_STATE_QUEUED", "JOB_STATE_PROBING", "JOB_STATE_TRANSCODING", "JOB_STATE_READY"} {
		if !states[st] {
			t.Errorf("no apply of %s in the upload's trace (applied: %v)", st, states)
		}
	}
}

func api(t *testing.T, method, url string, body *os.File, v any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		fi, err := body.Stat()
		if err != nil {
			t.Fatal(err)
		}
		req.Body, req.ContentLength = body, fi.Size()
		req.Header.Set("Content-Type", "video/mp4")
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

func find(spans []span, f func(span) bool) (span, bool) {
	for _, s := range spans {
		if f(s) {
			return s, true
		}
	}
	return span{}, false
}

func dump(spans []span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintln(&b, s)
	}
	return b.String()
}
