package app

import (
	"context"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func TestWorkerQueueWeights(t *testing.T) {
	all, err := WorkerQueueWeights(nil)
	if err != nil || !maps.Equal(all, tasks.QueueWeights()) {
		t.Errorf("no queues: %v, %v; want every queue, tasks.QueueWeights", all, err)
	}
	some, err := WorkerQueueWeights([]string{tasks.QueueTranscode, tasks.QueueWebhook})
	want := map[string]int{tasks.QueueTranscode: tasks.QueueWeights()[tasks.QueueTranscode], tasks.QueueWebhook: tasks.QueueWeights()[tasks.QueueWebhook]}
	if err != nil || !maps.Equal(some, want) {
		t.Errorf("transcode, webhook: %v, %v; want %v", some, err, want)
	}
	if got := ServerQueues(some); len(got) != 2 || !maps.Equal(got[0], map[string]int{tasks.QueueTranscode: want[tasks.QueueTranscode]}) ||
		!maps.Equal(got[1], map[string]int{tasks.QueueWebhook: want[tasks.QueueWebhook]}) {
		t.Errorf("ServerQueues(transcode, webhook) = %v, want the transcode queue apart", got)
	}
	if got := ServerQueues(map[string]int{tasks.QueueProbe: 6}); len(got) != 1 || !maps.Equal(got[0], map[string]int{tasks.QueueProbe: 6}) {
		t.Errorf("ServerQueues(probe) = %v", got)
	}
	for _, bad := range [][]string{{"encode"}, {tasks.QueueProbe, tasks.QueueProbe}, {""}} {
		if w, err := WorkerQueueWeights(bad); err == nil {
			t.Errorf("%q: %v, want an error", bad, w)
		}
	}
}

// TestWorkerRunsItsQueuesOnly runs a real worker process with
// WorkerQueues package: its asynq server registers in Redis with that
// queue alone (at its weight), takes a package task and leaves a probe
// task pending.
func TestWorkerRunsItsQueuesOnly(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	insp := testenv.AsynqInspector(t, opt)
	client := testenv.AsynqClient(t, opt)
	runWorker(t, 1, tasks.QueuePackage)

	probe, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: "job_queues_probe"})
	if err != nil {
		t.Fatal(err)
	}
	thumb, err := tasks.NewPackageTask(t.Context(), &kilnv1.PackageTask{JobId: "job_queues_pkg", Download: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []tasks.Command{probe, thumb} {
		if err := tasks.Enqueue(t.Context(), client, c); err != nil {
			t.Fatal(err)
		}
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		servers, err := insp.Servers()
		if err != nil {
			t.Fatal(err)
		}
		info, err := insp.GetTaskInfo(tasks.QueuePackage, tasks.TaskID(tasks.TypePackage, "job_queues_pkg", 1))
		if err != nil {
			t.Fatal(err)
		}
		if len(servers) == 1 && info.State != asynq.TaskStatePending {
			want := map[string]int{tasks.QueuePackage: tasks.QueueWeights()[tasks.QueuePackage]}
			if !maps.Equal(servers[0].Queues, want) {
				t.Errorf("the worker's asynq server runs %v, want %v", servers[0].Queues, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %d asynq servers, the package task %s", len(servers), info.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	info, err := insp.GetTaskInfo(tasks.QueueProbe, tasks.TaskID(tasks.TypeProbe, "job_queues_probe", 1))
	if err != nil {
		t.Fatal(err)
	}
	if info.State != asynq.TaskStatePending {
		t.Errorf("the probe task is %s: a package worker took it", info.State)
	}
}

// TestWorkerServers runs a real worker process on every queue: it
// registers two asynq servers, the transcode queue's alone and the short
// stages' together, each of KILN_CONCURRENCY — so admission counts
// exactly the process's transcode slots, and probes, packaging and
// webhooks have goroutines of their own while the fleet encodes.
func TestWorkerServers(t *testing.T) {
	opt := testenv.RedisDB(t, testRedisDB)
	insp := testenv.AsynqInspector(t, opt)
	runWorker(t, 3)

	all := tasks.QueueWeights()
	short := maps.Clone(all)
	delete(short, tasks.QueueTranscode)
	deadline := time.Now().Add(20 * time.Second)
	for {
		servers, err := insp.Servers()
		if err != nil {
			t.Fatal(err)
		}
		if len(servers) == 2 {
			var transcode, rest bool
			for _, s := range servers {
				switch {
				case maps.Equal(s.Queues, map[string]int{tasks.QueueTranscode: all[tasks.QueueTranscode]}):
					transcode = true
				case maps.Equal(s.Queues, short):
					rest = true
				default:
					t.Errorf("a server runs %v", s.Queues)
				}
				if s.Concurrency != 3 {
					t.Errorf("server of %v: concurrency %d, want 3", s.Queues, s.Concurrency)
				}
			}
			if !transcode || !rest {
				t.Errorf("servers %v, %v: want the transcode queue's and the short stages'", servers[0].Queues, servers[1].Queues)
			}
			slots, err := (fleet{insp}).TranscodeSlots(t.Context())
			if err != nil || slots != 3 {
				t.Errorf("TranscodeSlots = %d, %v; want 3", slots, err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %d asynq servers, want 2", len(servers))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runWorker runs a real worker process (with its embedded NATS, on the
// package's Redis database and the stack's MinIO) of concurrency on queues
// (none: all of them) until the end of the test.
func runWorker(t *testing.T, concurrency int, queues ...string) {
	t.Helper()
	redisAddr, s3 := testenv.Redis(t), testenv.S3(t)
	dir := t.TempDir()
	cfg := Defaults()
	cfg.Roles, cfg.EmbedNATS = []Role{RoleWorker}, true
	cfg.NATSListen, cfg.NATSStoreDir = "127.0.0.1:-1", filepath.Join(dir, "nats")
	cfg.HTTPAddr = testenv.FreeAddr(t)
	cfg.PublicURL = "http://" + cfg.HTTPAddr
	cfg.RedisAddr, cfg.RedisPassword, cfg.RedisDB = redisAddr, testenv.RedisPassword(), testRedisDB
	cfg.S3, cfg.SourcesBucket, cfg.OutputsBucket = s3.Config, s3.Sources, s3.Outputs
	cfg.WorkDir = filepath.Join(dir, "work")
	cfg.Concurrency = concurrency
	cfg.WorkerQueues = queues
	cfg.Logger = zaptest.NewLogger(t)

	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitReady(t, cfg.PublicURL, done)
}
