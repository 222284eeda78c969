package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/testenv"
)

const (
	apiKey         = "kiln_faults_0123456789abcdef"
	sourcesBucket  = "kiln-sources"
	outputsBucket  = "kiln-outputs"
	readyTimeout   = 90 * time.Second
	requestTimeout = 10 * time.Second
)

// cluster is one scenario's kiln: its own Redis, NATS and MinIO processes,
// and kiln as separate processes — one ingest, two workers (concurrency 1,
// one ffmpeg thread, a work dir each) and one catalog (SQLite).
type cluster struct {
	t   *testing.T
	dir string // everything of the scenario: data, work dirs, logs
	log string // logs folder

	redis *testenv.RedisProc
	nats  *testenv.NATSProc
	minio *testenv.MinIOProc

	ingest, catalog *testenv.Proc
	workers         []*testenv.Proc
	workerURLs      []string
	workDirs        []string
	// catalogs are every catalog replica (catalog is the first), and
	// catalogURLs their addresses.
	catalogs    []*testenv.Proc
	catalogURLs []string

	ingestURL, catalogURL string
	objects               *objstore.Client
}

// clusterConfig shapes a cluster.
type clusterConfig struct {
	// env adds to the environment of the roles it names ("catalog",
	// "ingest", "worker").
	env map[string][]string
	// catalogs is the number of catalog replicas (at least 1).
	catalogs int
	// database is the catalogs' KILN_DATABASE; empty: a SQLite file (one
	// replica only).
	database string
}

// scenarioDir is where a scenario keeps its data and logs:
// $KILN_FAULTS_DIR/<scenario> when set (kept after the run), else a temp
// folder of the test.
func scenarioDir(t *testing.T) string {
	if root := os.Getenv("KILN_FAULTS_DIR"); root != "" {
		dir := filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// newCluster starts the services, then the catalog (SQLite), the ingest
// and two workers, and waits until each one is ready. env adds to the
// environment of the roles it names.
func newCluster(t *testing.T, env map[string][]string) *cluster {
	t.Helper()
	return startCluster(t, clusterConfig{env: env, catalogs: 1})
}

// startCluster starts the services, then cfg.catalogs catalogs, the ingest
// and two workers, and waits until each one is ready.
func startCluster(t *testing.T, cfg clusterConfig) *cluster {
	t.Helper()
	env := cfg.env
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe", "redis-server")
	kiln := testenv.BuildKiln(t)
	dir := scenarioDir(t)
	c := &cluster{t: t, dir: dir, log: filepath.Join(dir, "logs")}
	t.Logf("scenario folder (data, logs): %s", dir)
	c.redis = testenv.StartRedis(t, filepath.Join(dir, "redis"), c.log)
	c.nats = testenv.StartNATS(t, filepath.Join(dir, "nats"), c.log)
	c.minio = testenv.StartMinIO(t, filepath.Join(dir, "minio"), c.log, c.nats)
	var err error
	c.objects, err = objstore.New(objstore.Config{Endpoint: c.minio.Endpoint, AccessKey: c.minio.AccessKey, SecretKey: c.minio.SecretKey})
	if err != nil {
		t.Fatal(err)
	}

	common := []string{
		"KILN_API_KEYS=" + apiKey,
		"KILN_REDIS_ADDR=" + c.redis.Addr,
		"KILN_REDIS_PASSWORD=" + c.redis.Password,
		"KILN_S3_ENDPOINT=" + c.minio.Endpoint,
		"KILN_S3_ACCESS_KEY=" + c.minio.AccessKey,
		"KILN_S3_SECRET_KEY=" + c.minio.SecretKey,
		"KILN_S3_SECURE=false",
		"KILN_SOURCES_BUCKET=" + sourcesBucket,
		"KILN_OUTPUTS_BUCKET=" + outputsBucket,
		"KILN_LOG_FORMAT=console",
		"KILN_LOG_LEVEL=info",
	}
	role := func(name string, extra ...string) (*testenv.Proc, string) {
		addr := testenv.FreePort(t)
		r := strings.TrimRight(name, "0123456789")
		// Each role connects to NATS as its own user, with that user's
		// permissions only (deploy/nats/nats-server.conf).
		vars := slices.Concat(common, c.nats.KilnEnv(r), []string{"KILN_HTTP_ADDR=" + addr, "KILN_PUBLIC_URL=http://" + addr}, extra, env[r])
		p := testenv.NewProc(t, name, c.log, vars, kiln, r)
		p.SetReady(testenv.HTTPReady("http://" + addr + "/readyz"))
		return p, "http://" + addr
	}
	database := cfg.database
	if database == "" {
		database = filepath.Join(dir, "catalog", "kiln.db")
		if err := os.MkdirAll(filepath.Join(dir, "catalog"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range max(cfg.catalogs, 1) {
		name := "catalog"
		if i > 0 {
			name = fmt.Sprintf("catalog%d", i+1)
		}
		p, url := role(name, "KILN_DATABASE="+database, "KILN_PLAYBACK_SIGNING_KEY=faults-signing-key-0123456789")
		c.catalogs, c.catalogURLs = append(c.catalogs, p), append(c.catalogURLs, url)
	}
	c.catalog, c.catalogURL = c.catalogs[0], c.catalogURLs[0]
	c.ingest, c.ingestURL = role("ingest", "KILN_S3_NOTIFY_ARN="+c.minio.NotifyARN)
	for i := 1; i <= 2; i++ {
		work := filepath.Join(dir, fmt.Sprintf("work%d", i))
		w, url := role(fmt.Sprintf("worker%d", i), "KILN_CONCURRENCY=1", "KILN_FFMPEG_THREADS=1", "KILN_WORK_DIR="+work)
		c.workers, c.workerURLs = append(c.workers, w), append(c.workerURLs, url)
		c.workDirs = append(c.workDirs, work)
	}
	c.startKiln(c.kilnProcs()...)
	return c
}

func (c *cluster) kilnProcs() []*testenv.Proc {
	return slices.Concat(c.catalogs, []*testenv.Proc{c.ingest}, c.workers)
}

// startKiln starts processes and waits until every one is ready.
func (c *cluster) startKiln(procs ...*testenv.Proc) {
	c.t.Helper()
	for _, p := range procs {
		if err := p.Start(); err != nil {
			c.t.Fatal(err)
		}
	}
	c.waitReady(procs...)
}

// waitReady waits until every process answers its readiness check.
func (c *cluster) waitReady(procs ...*testenv.Proc) {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		wg.Go(func() { errs[i] = p.WaitReady(readyTimeout) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

// restart stops p (SIGTERM; SIGKILL after 20 s), waits down, then starts it
// again and waits until it is ready.
func (c *cluster) restart(p *testenv.Proc, down time.Duration) {
	c.t.Helper()
	p.Stop(20 * time.Second)
	c.t.Logf("%s stopped; starting it again in %s", p.Name, down)
	time.Sleep(down)
	if err := p.StartReady(readyTimeout); err != nil {
		c.t.Fatal(err)
	}
}

// api sends a request to base with the API key and decodes a JSON answer
// into v; a transport error (a process down) is returned, not fatal.
func (c *cluster) api(ctx context.Context, method, url string, body io.Reader, contentType string, v any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if v != nil && resp.StatusCode < 300 && len(data) > 0 {
		if err := json.Unmarshal(data, v); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: status %d, body is not JSON: %v\n%s", method, url, resp.StatusCode, err, data)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: status %d: %s", method, url, resp.StatusCode, bytes.TrimSpace(data))
	}
	return resp.StatusCode, nil
}
