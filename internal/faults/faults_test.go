package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// EnableEnv enables the whole suite (`go tool task faults`).
const EnableEnv = "KILN_FAULTS"

// recoverTimeout bounds the wait from a fault until every job finished. It
// covers asynq's own recovery of a task whose worker died (lease 30 s,
// recoverer every minute: what is left when kiln's rescuer cannot act,
// e.g. Redis down) and a few retries (10 s, 20 s, 40 s).
var recoverTimeout = 4 * time.Minute

// scenario is one fault and what it runs.
type scenario struct {
	name string
	// ci scenarios also run under `go tool task test`.
	ci  bool
	run func(c *cluster, r *result)
	// env is added to the environment of the roles it names ("catalog",
	// "ingest", "worker").
	env map[string][]string
}

// fastReconcile runs the catalog's reconciler every 2 s on anything 10 s
// old (KILN_RECONCILE_GRACE's least value) instead of 1 m and 2 m.
var fastReconcile = map[string][]string{"catalog": {"KILN_RECONCILE_INTERVAL=2s", "KILN_RECONCILE_GRACE=10s"}}

// webhookEnv retries webhooks within seconds (catalog) and lets workers
// deliver to the loopback receiver.
var webhookEnv = map[string][]string{
	"catalog": {"KILN_WEBHOOK_RETRY_SCHEDULE=" + webhookRetries},
	"worker":  {"KILN_WEBHOOK_ALLOW_LOOPBACK=true"},
}

// drainEnv gives workers 2 s to finish their tasks on SIGTERM.
var drainEnv = map[string][]string{"worker": {"KILN_SHUTDOWN_TIMEOUT=2s"}}

// burstEnv limits ingest to 20 requests/s (burst 40) per API key, and
// lifts the catalog's limit for the suite's polling of 200 jobs.
var burstEnv = map[string][]string{
	"ingest":  {"KILN_API_RATE_LIMIT=20", "KILN_API_RATE_BURST=40"},
	"catalog": {"KILN_API_RATE_LIMIT=0"},
}

var scenarios = []scenario{
	{"worker_kill", true, workerKill, nil},
	{"worker_drain", false, workerDrain, drainEnv},
	{"catalog_kill", false, catalogKill, nil},
	{"minio_restart", false, serviceRestart(func(c *cluster) *testenv.Proc { return c.minio.Proc }), nil},
	{"redis_restart", false, serviceRestart(func(c *cluster) *testenv.Proc { return c.redis.Proc }), nil},
	{"nats_restart", false, serviceRestart(func(c *cluster) *testenv.Proc { return c.nats.Proc }), nil},
	{"duplicate_event", true, duplicateEvent, nil},
	{"kill_all", false, killAll, nil},
	{"event_lost", false, eventLost, fastReconcile},
	{"redis_flushed", false, redisFlushed, fastReconcile},
	{"webhook_down", false, webhookDown, webhookEnv},
	{"upload_burst", false, uploadBurst, burstEnv},
	{"chunk_kill", false, chunkKill, chunkEnv},
}

// chunkEnv chunks sources over 20 s, in 6 s chunks.
var chunkEnv = map[string][]string{"worker": {"KILN_CHUNK_THRESHOLD=20s", "KILN_CHUNK_LENGTH=6s"}}

// chunkKill: kill -9 a worker while it encodes a part (a chunk or the
// track) of a chunked transcode. Only that part runs again (the others'
// results are in the job's ledger); the job ends ready, once.
func chunkKill(c *cluster, r *result) {
	jobs := c.submit(append([]clipSpec{{45, 640, 360}}, small...), true)
	i, ff := c.waitTranscode(2 * time.Minute)
	time.Sleep(300 * time.Millisecond)
	killAndRestart(c, r, jobs, c.workers[i], ff, "mid-part")
}

// small is the usual load of a scenario: tiny clips, 2 to 4 s at 320x180.
var small = []clipSpec{{2, 320, 180}, {3, 320, 180}, {4, 320, 180}}

// TestFaults runs the scenarios, each against a cluster of its own, and
// logs the table of what they measured. Every scenario runs with
// KILN_FAULTS=1; only the ci ones run under `go tool task test`; by hand
// without KILN_FAULTS the test skips by design.
func TestFaults(t *testing.T) {
	all := os.Getenv(EnableEnv) == "1"
	if !all && !testenv.Required() {
		t.Skipf("the fault suite runs with %s=1 (`go tool task faults`); its short scenarios run under `go tool task test`", EnableEnv)
	}
	if d, err := time.ParseDuration(os.Getenv("KILN_FAULTS_RECOVER_TIMEOUT")); err == nil && d > 0 {
		recoverTimeout = d
	}
	var results []*result
	for _, s := range scenarios {
		if !all && !s.ci {
			continue
		}
		r := &result{name: s.name}
		ran := t.Run(s.name, func(t *testing.T) {
			c := newCluster(t, s.env)
			s.run(c, r)
		})
		if r.jobs > 0 || !ran {
			results = append(results, r)
		}
	}
	table := report(results)
	t.Logf("fault suite results:\n%s", table)
	if path := os.Getenv("KILN_FAULTS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// report renders the results as a Markdown table.
func report(results []*result) string {
	var b strings.Builder
	b.WriteString("| scenario | jobs | lost | duplicated | orphaned | time to recover | result |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		rec := r.recover.Round(100 * time.Millisecond).String()
		if !r.recovered {
			rec = "> " + rec + " (not all finished)"
		}
		verdict := "pass"
		if len(r.problems) > 0 {
			verdict = "FAIL: " + firstLine(strings.ReplaceAll(r.problems[0], "|", "/"), 160)
			if len(r.problems) > 1 {
				verdict += fmt.Sprintf(" (+%d more)", len(r.problems)-1)
			}
		} else if r.jobs == 0 {
			verdict = "FAIL: did not get to its jobs (see the test log)"
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %s |\n", r.name, r.jobs, r.lost, r.duplicated, r.orphaned, rec, verdict)
	}
	return b.String()
}

// finish waits from the fault (at t0) until every job finished, records the
// time, then verifies.
func (c *cluster) finish(r *result, jobs []*job, t0 time.Time) {
	c.t.Helper()
	last, ok := c.waitTerminal(jobs, recoverTimeout)
	r.recover, r.recovered = time.Since(t0), ok
	if !ok {
		r.problems = append(r.problems, fmt.Sprintf("not every job finished within %s of the fault", recoverTimeout))
	}
	c.t.Logf("%s: every job finished %s after the fault: %v", c.t.Name(), r.recover.Round(time.Millisecond), ok)
	c.verify(r, jobs, last)
}

// midTranscode submits one longer, bigger clip (so that a fault lands
// mid-encode), the small ones and a bad input, and returns them with the
// worker that is transcoding and its ffmpeg, half a second into the encode.
func (c *cluster) midTranscode() ([]*job, *testenv.Proc, ffmpegProc) {
	c.t.Helper()
	jobs := c.submit(append([]clipSpec{{12, 640, 360}}, small...), true)
	i, ff := c.waitTranscode(2 * time.Minute)
	time.Sleep(500 * time.Millisecond)
	return jobs, c.workers[i], ff
}

// workerKill: kill -9 the worker that runs a transcode, mid-encode. Its
// ffmpeg must die with it; the task comes back (a rescue copy, once its
// kiln lease lapsed) on the other worker or on the killed one, restarted.
func workerKill(c *cluster, r *result) {
	jobs, victim, ff := c.midTranscode()
	killAndRestart(c, r, jobs, victim, ff, "mid-transcode")
}

// killAndRestart kills -9 the worker victim while its ffmpeg ff runs
// (when: what it was doing), checks that ffmpeg dies with it, starts it
// again and waits for every job.
func killAndRestart(c *cluster, r *result, jobs []*job, victim *testenv.Proc, ff ffmpegProc, when string) {
	pid := victim.Pid()
	victim.Kill()
	t0 := time.Now()
	c.t.Logf("killed %s (pid %d) with -9 %s (ffmpeg %d)", victim.Name, pid, when, ff.pid)
	if !waitGone(ff.pid, 5*time.Second) {
		c.problem(r, "ffmpeg %d outlived its worker %s (pid %d) by 5 s", ff.pid, victim.Name, pid)
	}
	time.Sleep(2 * time.Second)
	if err := victim.StartReady(readyTimeout); err != nil {
		c.t.Fatal(err)
	}
	c.finish(r, jobs, t0)
}

// workerDrain: SIGTERM the worker that runs a transcode, mid-encode, with
// a 2 s KILN_SHUTDOWN_TIMEOUT. It must take no new task, stop its ffmpeg
// and exit within the timeout (and a little), handing its task back at
// once: the other worker finishes every job, the drained one is not
// started again.
func workerDrain(c *cluster, r *result) {
	jobs, victim, ff := c.midTranscode()
	t0 := time.Now()
	victim.Stop(20 * time.Second)
	exited := time.Since(t0)
	c.t.Logf("SIGTERM to %s mid-transcode: exited after %s", victim.Name, exited.Round(100*time.Millisecond))
	if victim.Running() {
		c.problem(r, "%s still runs 20 s after SIGTERM", victim.Name)
	} else if exited > 2*time.Second+5*time.Second {
		c.problem(r, "%s took %s to exit on SIGTERM with a 2 s shutdown timeout", victim.Name, exited.Round(100*time.Millisecond))
	}
	if !waitGone(ff.pid, 5*time.Second) {
		c.problem(r, "ffmpeg %d outlived its drained worker %s by 5 s", ff.pid, victim.Name)
	}
	c.finish(r, jobs, t0)
}

// catalogKill: kill -9 the catalog while jobs run, restart it 3 s later.
// Job events wait in JetStream for its durable consumer.
func catalogKill(c *cluster, r *result) {
	jobs := c.submit(small, true)
	c.waitTranscode(2 * time.Minute)
	c.catalog.Kill()
	t0 := time.Now()
	c.t.Log("killed the catalog with -9 mid-run")
	time.Sleep(3 * time.Second)
	if err := c.catalog.StartReady(readyTimeout); err != nil {
		c.t.Fatal(err)
	}
	c.finish(r, jobs, t0)
}

// serviceRestart stops a service mid-transcode and starts it 5 s later on
// the same data: the running stages' requests to it fail meanwhile and must
// be retried, not taken for bad input.
//   - MinIO: reads and writes of the running stages fail.
//   - Redis (AOF on): asynq's tasks and leases are in the append-only file.
//   - NATS (same store): publishing job events fails; MinIO queues its
//     bucket events.
func serviceRestart(service func(*cluster) *testenv.Proc) func(*cluster, *result) {
	return func(c *cluster, r *result) {
		jobs := c.submit(append([]clipSpec{{12, 640, 360}}, small...), true)
		c.waitTranscode(2 * time.Minute)
		t0 := time.Now()
		c.restart(service(c), 5*time.Second)
		c.finish(r, jobs, t0)
	}
}

// duplicateEvent: every source's bucket event and "object landed" fact
// delivered again (without JetStream's dedup id) while the jobs run, and
// once more after they are ready. Still one job per source, no output
// written twice.
func duplicateEvent(c *cluster, r *result) {
	jobs := c.submit(small, true)
	srcs := c.sources(jobs)
	t0 := time.Now()
	c.publishDuplicates(srcs, 2)
	c.finish(r, jobs, t0)
	if c.t.Failed() {
		return
	}

	// Late duplicates: the jobs are ready; nothing may run again.
	before := c.outputTimes()
	c.publishDuplicates(srcs, 1)
	time.Sleep(15 * time.Second)
	for _, j := range jobs {
		if v, ok := c.getJob(c.t.Context(), j.id); !ok || !terminal(v.State) {
			r.lost++
			c.problem(r, "job %s (%s) is %q after a late duplicate event", j.id, j.file, v.State)
		}
	}
	after := c.outputTimes()
	for k, t := range after {
		if b, ok := before[k]; !ok || !b.Equal(t) {
			r.duplicated++
			c.problem(r, "output %s written again after a late duplicate event", k)
		}
	}
	if listed, err := c.listJobs(); err != nil {
		c.problem(r, "list jobs: %v", err)
	} else if len(listed) != len(jobs) {
		r.duplicated += max(0, len(listed)-len(jobs))
		c.problem(r, "the catalog lists %d jobs after late duplicate events, want %d", len(listed), len(jobs))
	}
}

// killAll: kill -9 every process at once mid-transcode — services and
// kiln — then start everything again.
func killAll(c *cluster, r *result) {
	jobs := c.submit(append([]clipSpec{{12, 640, 360}}, small...), true)
	c.waitTranscode(2 * time.Minute)
	procs := append([]*testenv.Proc{c.minio.Proc, c.redis.Proc, c.nats.Proc}, c.kilnProcs()...)
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.Kill)
	}
	wg.Wait()
	t0 := time.Now()
	c.t.Log("killed every process with -9")
	time.Sleep(time.Second)
	for _, p := range []*testenv.Proc{c.redis.Proc, c.nats.Proc, c.minio.Proc} {
		if err := p.StartReady(readyTimeout); err != nil {
			c.t.Fatal(err)
		}
	}
	c.startKiln(c.kilnProcs()...)
	c.finish(r, jobs, t0)
}

// eventLost: a direct upload whose bucket event is never delivered. With
// ingest down, a clip is PUT straight into the sources bucket (with the
// metadata the upload API sets); its event is purged from the stream
// before ingest comes back. The reconciler must announce the source again:
// one job, ready, playing.
func eventLost(c *cluster, r *result) {
	c.ingest.Stop(20 * time.Second)
	spec := clipSpec{3, 320, 180}
	file := c.makeClip(spec)
	f, err := os.Open(file)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		c.t.Fatal(err)
	}
	key := layout.NewSourceKey("direct-3s.mp4")
	meta := map[string]string{layout.MetaPreset: "default", layout.MetaPolicy: "signed"}
	info, err := c.objects.Put(c.t.Context(), sourcesBucket, key, f, fi.Size(), "video/mp4", meta)
	if err != nil {
		c.t.Fatal(err)
	}
	j := &job{file: "direct-3s.mp4", frames: spec.frames()}
	j.id, j.asset = jobid.FromObject(sourcesBucket, key, info.ETag)
	c.t.Logf("put %s/%s (etag %s) with ingest down: job %s", sourcesBucket, key, info.ETag, j.id)

	nc := c.nats.Conn(c.t, testenv.NATSAdmin) // purging is no role's right
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), time.Minute)
	defer cancel()
	stream, err := js.Stream(ctx, bus.StreamName)
	if err != nil {
		c.t.Fatal(err)
	}
	// Wait until MinIO delivered the event into the stream, then drop it.
	for {
		msg, err := stream.GetLastMsgForSubject(ctx, bus.SubjectS3Events)
		if err == nil && (strings.Contains(string(msg.Data), url.QueryEscape(key)) || strings.Contains(string(msg.Data), key)) {
			break
		}
		if ctx.Err() != nil {
			c.t.Fatalf("the bucket event of %s never reached the stream: %v", key, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(bus.SubjectS3Events)); err != nil {
		c.t.Fatal(err)
	}
	t0 := time.Now()
	c.t.Logf("purged the bucket event of %s from the stream", key)
	if err := c.ingest.StartReady(readyTimeout); err != nil {
		c.t.Fatal(err)
	}
	c.finish(r, []*job{j}, t0)
}

// redisFlushed: FLUSHALL the scenario's Redis mid-transcode: every queued,
// running and retained task is gone. The reconciler must re-drive each
// running job; every good job still ends ready, once.
func redisFlushed(c *cluster, r *result) {
	// Two long clips keep both workers in a transcode while the other jobs'
	// tasks wait in the queue: those are what the flush loses.
	jobs := c.submit(append([]clipSpec{{45, 640, 360}, {45, 640, 360}}, small...), true)
	c.waitTranscode(2 * time.Minute)
	// Both starts of a job (the API's fact, then the bucket event's) enqueue
	// its probe under the same TaskID: flush after the bucket events are in,
	// else they re-enqueue what the flush lost and the reconciler is never
	// needed.
	time.Sleep(4 * time.Second)
	c.waitTranscode(10 * time.Second)
	rc := redis.NewClient(&redis.Options{Addr: c.redis.Addr, Password: c.redis.Password})
	defer rc.Close()
	if err := rc.FlushAll(c.t.Context()).Err(); err != nil {
		c.t.Fatal(err)
	}
	t0 := time.Now()
	var running []string
	for _, j := range jobs {
		if v, ok := c.getJob(c.t.Context(), j.id); ok && !terminal(v.State) {
			running = append(running, j.file+": "+v.State)
		}
	}
	c.t.Logf("flushed Redis (FLUSHALL) mid-transcode; not finished then: %s", strings.Join(running, ", "))
	c.finish(r, jobs, t0)
}

// source is what a bucket event says about an uploaded source.
type source struct {
	bucket, key, etag string
	size              int64
}

// sources waits until the catalog knows every job and returns their
// sources.
func (c *cluster) sources(jobs []*job) []source {
	c.t.Helper()
	var out []source
	deadline := time.Now().Add(time.Minute)
	for _, j := range jobs {
		for {
			if v, ok := c.getJob(c.t.Context(), j.id); ok && v.Source.Key != "" {
				out = append(out, source{v.Source.Bucket, v.Source.Key, v.Source.ETag, v.Source.Size})
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("the catalog does not know job %s (%s) after a minute", j.id, j.file)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return out
}

// publishDuplicates publishes, times times per source, a MinIO-style
// bucket event on kiln.s3.events and an ObjectLanded on
// kiln.objects.landed, without a message id so JetStream stores each copy.
func (c *cluster) publishDuplicates(srcs []source, times int) {
	c.t.Helper()
	// What MinIO and the upload API publish, as the users they publish as.
	notify, err := jetstream.New(c.nats.Conn(c.t, bus.UserNotify))
	if err != nil {
		c.t.Fatal(err)
	}
	js, err := jetstream.New(c.nats.Conn(c.t, bus.UserIngest))
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), 30*time.Second)
	defer cancel()
	for range times {
		for _, s := range srcs {
			ev, err := json.Marshal(s3Event(s))
			if err != nil {
				c.t.Fatal(err)
			}
			if _, err := notify.Publish(ctx, bus.SubjectS3Events, ev); err != nil {
				c.t.Fatalf("publish duplicate bucket event: %v", err)
			}
			landed, err := proto.Marshal(&kilnv1.ObjectLanded{
				Object: &kilnv1.ObjectRef{Bucket: s.bucket, Key: s.key, Etag: s.etag, Size: s.size, ContentType: "video/mp4"},
				Origin: "api", Preset: "default", Time: timestamppb.Now(),
			})
			if err != nil {
				c.t.Fatal(err)
			}
			if _, err := js.Publish(ctx, bus.SubjectObjectLanded, landed); err != nil {
				c.t.Fatalf("publish duplicate object landed: %v", err)
			}
		}
	}
	c.t.Logf("published %d duplicate bucket events and %d duplicate object-landed facts", times*len(srcs), times*len(srcs))
}

// s3Event is the notification MinIO sends for a created object.
func s3Event(s source) map[string]any {
	key := url.QueryEscape(s.key)
	return map[string]any{
		"EventName": "s3:ObjectCreated:Put",
		"Key":       s.bucket + "/" + key,
		"Records": []map[string]any{{
			"eventVersion": "2.0",
			"eventSource":  "minio:s3",
			"eventTime":    time.Now().UTC().Format(time.RFC3339Nano),
			"eventName":    "s3:ObjectCreated:Put",
			"s3": map[string]any{
				"bucket": map[string]any{"name": s.bucket},
				"object": map[string]any{"key": key, "size": s.size, "eTag": s.etag, "contentType": "video/mp4"},
			},
		}},
	}
}

// outputTimes returns the last-modified time of every output object.
func (c *cluster) outputTimes() map[string]time.Time {
	c.t.Helper()
	objs, err := c.objects.List(c.t.Context(), outputsBucket, "assets/")
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, o := range objs {
		info, err := c.objects.Stat(c.t.Context(), outputsBucket, o.Key)
		if err != nil {
			c.t.Fatal(err)
		}
		out[o.Key] = info.LastModified
	}
	return out
}
