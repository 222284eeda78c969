package profiling

import (
	"context"
	"crypto/sha256"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// upload is one POST /ingest the receiver got.
type upload struct {
	app    string            // the name parameter's application name
	tags   map[string]string // and its labels
	user   string            // basic auth
	pass   string
	labels map[string][]string // string labels of the profile's samples: key → values
}

// receiver is a Pyroscope server's ingest endpoint: it records every
// upload, its name parameter (app{k=v,...}) parsed and the labels of the
// samples of its pprof profile.
type receiver struct {
	t       *testing.T
	mu      sync.Mutex
	uploads []upload
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/ingest" {
		rc.t.Errorf("receiver: %s %s, want POST /ingest", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	up := upload{tags: map[string]string{}, labels: map[string][]string{}}
	up.user, up.pass, _ = r.BasicAuth()
	name := r.URL.Query().Get("name")
	app, rest, ok := strings.Cut(name, "{")
	if !ok || !strings.HasSuffix(rest, "}") {
		rc.t.Errorf("receiver: name %q is not app{k=v,...}", name)
	}
	up.app = app
	for kv := range strings.SplitSeq(strings.TrimSuffix(rest, "}"), ",") {
		k, v, _ := strings.Cut(kv, "=")
		up.tags[k] = v
	}
	f, _, err := r.FormFile("profile")
	if err != nil {
		rc.t.Errorf("receiver: no profile part: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	defer f.Close()
	data, _ := io.ReadAll(f)
	p, err := profile.ParseData(data)
	if err != nil {
		rc.t.Errorf("receiver: profile of %q: %v", name, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, s := range p.Sample {
		for k, vs := range s.Label {
			up.labels[k] = append(up.labels[k], vs...)
		}
	}
	rc.mu.Lock()
	rc.uploads = append(rc.uploads, up)
	rc.mu.Unlock()
}

// find returns an upload for which ok holds.
func (rc *receiver) find(ok func(upload) bool) (upload, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, u := range rc.uploads {
		if ok(u) {
			return u, true
		}
	}
	return upload{}, false
}

// TestMiddlewareLabelsTaskCPU: a real asynq server runs a probe task that
// burns CPU under Middleware while the profiler uploads every second to a
// local receiver; an upload of application "kiln" tagged role=worker
// carries CPU samples labelled task_type=kiln:probe and queue=probe, with
// the configured basic auth.
func TestMiddlewareLabelsTaskCPU(t *testing.T) {
	opt := testenv.RedisDB(t, 15)
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc)
	defer srv.Close()

	stop, err := Start(t.Context(), Config{
		ServerURL: srv.URL, BasicAuthUser: "tenant", BasicAuthPassword: "secret-pw",
		Role: "worker", UploadRate: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	want := func(u upload) bool {
		return u.app == "kiln" && u.tags["role"] == "worker" &&
			slices.Contains(u.labels["task_type"], tasks.TypeProbe) && slices.Contains(u.labels["queue"], tasks.QueueProbe)
	}
	done := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.Use(Middleware())
	mux.HandleFunc(tasks.TypeProbe, func(ctx context.Context, _ *asynq.Task) error {
		// Burn CPU until the receiver has what it needs (or 30 s).
		deadline := time.Now().Add(30 * time.Second)
		sum := sha256.Sum256(nil)
		for time.Now().Before(deadline) {
			for range 10000 {
				sum = sha256.Sum256(sum[:])
			}
			select {
			case <-done:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			default:
			}
		}
		return nil
	})
	testenv.AsynqServer(t, opt, []string{tasks.QueueProbe}, mux, nil)
	cmd, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: "job_profiled"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.Enqueue(t.Context(), testenv.AsynqClient(t, opt), cmd); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(40 * time.Second)
	for {
		if u, ok := rc.find(want); ok {
			close(done)
			if u.user != "tenant" || u.pass != "secret-pw" {
				t.Errorf("upload authenticated as %q/%q, want tenant/secret-pw", u.user, u.pass)
			}
			return
		}
		if time.Now().After(deadline) {
			close(done)
			rc.mu.Lock()
			defer rc.mu.Unlock()
			for _, u := range rc.uploads {
				t.Logf("upload app %q tags %v sample labels %v", u.app, u.tags, slices.Sorted(maps.Keys(u.labels)))
			}
			t.Fatalf("no upload of app kiln, role=worker with samples labelled task_type=%s, queue=%s among %d", tasks.TypeProbe, tasks.QueueProbe, len(rc.uploads))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStartNeedsServerAndBothCredentials: no URL, or half the basic auth,
// is an error, not a profiler that silently sends nothing.
func TestStartNeedsServerAndBothCredentials(t *testing.T) {
	for _, cfg := range []Config{{}, {ServerURL: "http://127.0.0.1:1", BasicAuthUser: "u"}, {ServerURL: "http://127.0.0.1:1", BasicAuthPassword: "p"}} {
		if stop, err := Start(t.Context(), cfg); err == nil {
			stop()
			t.Errorf("Start(%+v) = nil error", cfg)
		}
	}
}
