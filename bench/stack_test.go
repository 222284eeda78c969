package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafov/m3u8"
	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// suite is one run of BenchmarkSuite: what its benchmarks share.
type suite struct {
	parent *testing.B // owns the processes the benchmarks start (stopped at its end)
	sc     scale
	media  string // generated clips, kept between runs

	mu     sync.Mutex
	st     *stack
	worker *workerPeak // P5's worker side, measured during P1
}

func newSuite(b *testing.B, sc scale) *suite {
	// The stack's data dir (.data/bench) is wiped at every start; the
	// clips take minutes to generate, so they live beside it.
	media, err := filepath.Abs(filepath.Join("..", ".data", "bench-media"))
	if err != nil {
		b.Fatal(err)
	}
	return &suite{parent: b, sc: sc, media: media}
}

// clip1080 returns a generated 1080p30 H.264/AAC clip of the given length,
// made once (ffmpeg testsrc2 and sine) and kept in s.media. The source is
// encoded as a camera or an editor would (x264 veryfast, 8 Mb/s, B-frames),
// not ultrafast, so that decoding it costs what a real upload's does.
func (s *suite) clip1080(tb testing.TB, seconds float64) string {
	tb.Helper()
	name := fmt.Sprintf("testsrc2-1080p30-%gs.mp4", seconds)
	path := filepath.Join(s.media, name)
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(s.media, 0o755); err != nil {
		tb.Fatal(err)
	}
	tmp := filepath.Join(s.media, "partial-"+name)
	start := time.Now()
	testenv.Clip(tb, testenv.ClipSpec{Path: tmp, Seconds: seconds, Width: 1920, Height: 1080, SampleRate: 48000,
		Video: []string{"-c:v", "libx264", "-preset", "veryfast", "-b:v", "8M", "-maxrate", "10M", "-bufsize", "16M",
			"-pix_fmt", "yuv420p", "-g", "60"},
		Audio:     []string{"-c:a", "aac", "-b:a", "128k", "-ac", "2"},
		ExtraArgs: []string{"-movflags", "+faststart"},
	})
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("generated %s in %s", path, time.Since(start).Round(time.Second))
	return path
}

// stack is the running kiln stack of `stack.sh bench` (kiln serve without
// workers: catalog, ingest, embedded NATS) and the worker process the
// suite runs beside it, so that the worker's memory and log are its own.
type stack struct {
	data      string // logs and work folders of the processes the suite starts
	env       testenv.StackEnv
	natsURL   string
	api       *client
	insp      *asynq.Inspector
	worker    *testenv.Proc
	workerLog string
	work      string // the worker's KILN_WORK_DIR
}

// stack starts the worker on first use; every later benchmark shares it.
func (s *suite) stack(b *testing.B) *stack {
	b.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st != nil {
		return s.st
	}
	testenv.RequireBinaries(b, "ffmpeg", "ffprobe")
	env := testenv.Stack(b)
	natsURL := testenv.NATS(b)
	natsPW := os.Getenv(testenv.NATSPasswordEnv("worker"))
	kiln := testenv.BuildKiln(b)
	// The processes' logs stay after the run, in the stack's data dir
	// (which the next `stack.sh bench` wipes).
	data, err := filepath.Abs(filepath.Join("..", ".data", "bench", "suite"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.RemoveAll(data); err != nil {
		b.Fatal(err)
	}
	b.Logf("worker and ingest logs in %s", data)
	logs := filepath.Join(data, "logs")
	work := filepath.Join(data, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		b.Fatal(err)
	}
	addr := testenv.FreeAddr(b)
	wenv := append(roleEnv(env, natsURL, "worker", natsPW),
		"KILN_HTTP_ADDR="+addr,
		"KILN_WORK_DIR="+work,
		// ffmpeg's "finished … elapsed" lines are debug: P7 reads them.
		"KILN_LOG_LEVEL=debug", "KILN_LOG_FORMAT=json",
		// P2's long clip is chunked, its short one (and P1's) not.
		"KILN_CHUNK_THRESHOLD="+strconv.FormatFloat(s.sc.longSeconds/2, 'f', -1, 64)+"s",
	)
	w := testenv.NewProc(s.parent, "worker", logs, wenv, kiln, "worker")
	w.SetReady(testenv.HTTPReady("http://" + addr + "/readyz"))
	if err := w.StartReady(90 * time.Second); err != nil {
		b.Fatal(err)
	}
	st := &stack{data: data, env: env, natsURL: natsURL, api: newClient(env.APIURL, env.APIKey), worker: w, workerLog: w.Log, work: work,
		insp: testenv.AsynqInspector(s.parent, testenv.RedisOpt(b))}
	st.checkOnlyWorker(b)
	s.st = st
	return st
}

// roleEnv is the environment of a kiln role process attached to the stack.
func roleEnv(env testenv.StackEnv, natsURL, role, natsPassword string) []string {
	return []string{
		"KILN_NATS_URL=" + natsURL, "KILN_NATS_USER=" + role, "KILN_NATS_PASSWORD=" + natsPassword,
		"KILN_REDIS_ADDR=" + env.RedisAddr, "KILN_REDIS_PASSWORD=" + env.RedisPassword,
		"KILN_S3_ENDPOINT=" + env.S3.Endpoint, "KILN_S3_ACCESS_KEY=" + env.S3.AccessKey, "KILN_S3_SECRET_KEY=" + env.S3.SecretKey,
		"KILN_S3_SECURE=false", "KILN_SOURCES_BUCKET=" + env.Sources, "KILN_OUTPUTS_BUCKET=" + env.Outputs,
	}
}

// checkOnlyWorker stops the suite when another asynq server takes tasks
// (a `kiln serve` with workers): the jobs would not all run on the worker
// whose memory and ffmpeg runs the suite measures.
func (st *stack) checkOnlyWorker(b *testing.B) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		servers, err := st.insp.Servers()
		if err != nil {
			b.Fatalf("asynq servers: %v", err)
		}
		mine := false
		for _, sv := range servers {
			if sv.PID != st.worker.Pid() {
				b.Fatalf("another asynq server takes kiln's tasks (host %s, pid %d): the suite needs the stack's kiln serve "+
					"without workers (KILN_CONCURRENCY=0, as `stack.sh bench` starts it)", sv.Host, sv.PID)
			}
			mine = true
		}
		if mine {
			return
		}
		if time.Now().After(deadline) {
			b.Fatal("the bench worker's asynq server is not registered in Redis")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// idle waits until no task is pending or running and the worker has no
// ffmpeg or ffprobe child, so that one sample does not pay for another's
// leftovers (a canceled encode, a late thumbnail).
func (st *stack) idle(b *testing.B) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		busy := len(children(st.worker.Pid()))
		if busy == 0 {
			queues, err := st.insp.Queues()
			if err != nil {
				b.Fatalf("asynq queues: %v", err)
			}
			for _, q := range queues {
				info, err := st.insp.GetQueueInfo(q)
				if err != nil {
					b.Fatalf("asynq queue %s: %v", q, err)
				}
				busy += info.Pending + info.Active + info.Scheduled + info.Retry
			}
		}
		if busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the stack is still busy after 5 min (%d tasks or children)", busy)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// children returns the pids of pid's child processes (every thread's:
// Go forks from any of them).
func children(pid int) []int {
	if pid == 0 {
		return nil
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// status reads a kB field of /proc/<pid>/status (VmHWM, VmRSS) in bytes.
func status(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// client is a small client of kiln's HTTP API.
type client struct {
	base, key string
	http      *http.Client
}

func newClient(base, key string) *client {
	return &client{base: strings.TrimRight(base, "/"), key: key, http: &http.Client{Timeout: 0}}
}

type uploaded struct {
	JobID   string `json:"job_id"`
	AssetID string `json:"asset_id"`
	// Done is when the upload's answer arrived: the start of every
	// end-to-end time.
	Done time.Time `json:"-"`
}

// upload streams body (size bytes) to base's POST /v1/uploads as kiln
// upload does: a raw body with Expect: 100-continue.
func (c *client) upload(ctx context.Context, base string, body io.Reader, size int64, filename string) (uploaded, error) {
	u := base + "/v1/uploads?" + url.Values{"filename": {filename}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return uploaded{}, err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "video/mp4")
	req.Header.Set("Expect", "100-continue")
	resp, err := c.http.Do(req)
	if err != nil {
		return uploaded{}, fmt.Errorf("upload: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	done := time.Now()
	if resp.StatusCode != http.StatusAccepted {
		return uploaded{}, fmt.Errorf("upload: %s: %s", resp.Status, b)
	}
	var up uploaded
	if err := json.Unmarshal(b, &up); err != nil || up.JobID == "" {
		return uploaded{}, fmt.Errorf("upload: unreadable answer %q: %v", b, err)
	}
	up.Done = done
	return up, nil
}

// uploadFile uploads a file to the stack's API.
func (c *client) uploadFile(ctx context.Context, path string) (uploaded, error) {
	f, err := os.Open(path)
	if err != nil {
		return uploaded{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return uploaded{}, err
	}
	return c.upload(ctx, c.base, f, fi.Size(), filepath.Base(path))
}

// job is the part of the job JSON the suite reads.
type job struct {
	ID         string                          `json:"id"`
	State      string                          `json:"state"`
	Error      *struct{ Code, Message string } `json:"error"`
	Timestamps map[string]time.Time            `json:"timestamps"`
	Chunks     *struct{ Done, Total int }      `json:"chunks"`
}

func (j job) terminal() bool {
	return j.State == "ready" || j.State == "failed" || j.State == "canceled"
}

func (c *client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// wait follows the job's event stream (SSE) until it ends in a terminal
// state and returns the job and when that state arrived. A stream that
// breaks is opened again (it starts with the job's current state).
func (c *client) wait(ctx context.Context, id string) (job, time.Time, error) {
	for ctx.Err() == nil {
		j, at, err := c.follow(ctx, id)
		if err == nil && j.terminal() {
			return j, at, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return job{}, time.Time{}, fmt.Errorf("job %s: %w", id, context.Cause(ctx))
}

func (c *client) follow(ctx context.Context, id string) (job, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/jobs/"+id+"/events", nil)
	if err != nil {
		return job{}, time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return job{}, time.Time{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return job{}, time.Time{}, fmt.Errorf("events of %s: %s", id, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var last job
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		at := time.Now()
		if err := json.Unmarshal([]byte(data), &last); err != nil {
			return job{}, time.Time{}, fmt.Errorf("event of %s: %w", id, err)
		}
		if last.terminal() {
			return last, at, nil
		}
	}
	return last, time.Time{}, errors.New("event stream ended before a terminal state")
}

// cancelJob cancels a running job and waits until it has ended.
func (c *client) cancelJob(ctx context.Context, id string) error {
	if err := c.do(ctx, http.MethodPost, "/v1/jobs/"+id+"/cancel", nil); err != nil {
		var j job
		if gerr := c.do(ctx, http.MethodGet, "/v1/jobs/"+id, &j); gerr == nil && j.terminal() {
			return nil // it ended first
		}
		return err
	}
	_, _, err := c.wait(ctx, id)
	return err
}

// playable reports whether the asset plays: its master playlist, every
// media playlist it names (variants and renditions) and the first segment
// and init segment of each answer 200 over HTTP, as a player would fetch
// them (redirects followed). It never depends on the job's state.
func (c *client) playable(ctx context.Context, assetID string) (bool, error) {
	masterURL := c.base + "/v1/play/" + assetID + "/master.m3u8"
	body, ok, err := c.get(ctx, masterURL)
	if !ok || err != nil {
		return false, err
	}
	pl, kind, err := m3u8.DecodeFrom(strings.NewReader(body), false)
	if err != nil || kind != m3u8.MASTER {
		return false, nil // not (yet) a master playlist
	}
	master := pl.(*m3u8.MasterPlaylist)
	var media []string
	seen := map[string]bool{}
	add := func(uri string) {
		if uri != "" && !seen[uri] {
			seen[uri] = true
			media = append(media, uri)
		}
	}
	for _, v := range master.Variants {
		add(v.URI)
		for _, alt := range v.Alternatives {
			add(alt.URI)
		}
	}
	if len(media) == 0 {
		return false, nil
	}
	base, _ := url.Parse(masterURL)
	for _, uri := range media {
		ref, err := url.Parse(uri)
		if err != nil {
			return false, err
		}
		mu := base.ResolveReference(ref)
		body, ok, err := c.get(ctx, mu.String())
		if !ok || err != nil {
			return false, err
		}
		pl, kind, err := m3u8.DecodeFrom(strings.NewReader(body), false)
		if err != nil || kind != m3u8.MEDIA {
			return false, nil
		}
		mp := pl.(*m3u8.MediaPlaylist)
		var first []string
		if mp.Map != nil {
			first = append(first, mp.Map.URI)
		}
		if mp.Count() == 0 || mp.Segments[0] == nil {
			return false, nil
		}
		seg := mp.Segments[0]
		if seg.Map != nil {
			first = append(first, seg.Map.URI)
		}
		first = append(first, seg.URI)
		for _, s := range first {
			ref, err := url.Parse(s)
			if err != nil {
				return false, err
			}
			if _, ok, err := c.get(ctx, mu.ResolveReference(ref).String()); !ok || err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

// get fetches u without the API key (playback needs none; presigned URLs
// must not get a bearer header). ok is false on any status but 200; err
// only for a transport failure.
func (c *client) get(ctx context.Context, u string) (string, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", false, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", false, err
	}
	return string(b), resp.StatusCode == http.StatusOK, nil
}

// pollPlayable polls the asset's playability every interval from the
// moment it is called and returns when it first played.
func (c *client) pollPlayable(ctx context.Context, assetID string, every time.Duration) (time.Time, error) {
	for {
		ok, err := c.playable(ctx, assetID)
		if ok {
			return time.Now(), nil
		}
		if ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("asset %s never played (last error %v): %w", assetID, err, context.Cause(ctx))
		}
		select {
		case <-ctx.Done():
		case <-time.After(every):
		}
	}
}
