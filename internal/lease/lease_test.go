package lease_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/lease"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

const redisDB = 13 // see testenv/redis.go

const ttl = lease.MinTTL

func transcodeTask(t *testing.T, jobID string) tasks.Command {
	t.Helper()
	c, err := tasks.NewTranscodeTask(t.Context(), &kilnv1.TranscodeTask{JobId: jobID, AssetId: "a_" + jobID, Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIDs(t *testing.T) {
	for _, c := range []struct{ id, base, rescue string }{
		{"kiln:transcode:j1", "kiln:transcode:j1", "kiln:transcode:j1~rescue1"},
		{"kiln:transcode:j1~rescue1", "kiln:transcode:j1", "kiln:transcode:j1~rescue2"},
		{"kiln:package:j1:a2:r:720p:3~rescue9", "kiln:package:j1:a2:r:720p:3", "kiln:package:j1:a2:r:720p:3~rescue10"},
	} {
		if got := lease.BaseID(c.id); got != c.base {
			t.Errorf("BaseID(%q) = %q, want %q", c.id, got, c.base)
		}
		if got := lease.RescueID(c.id); got != c.rescue {
			t.Errorf("RescueID(%q) = %q, want %q", c.id, got, c.rescue)
		}
	}
}

// server runs an asynq server on the transcode queue as a kiln worker's
// is set up for leases (IsFailure, a short retry for lease.ErrBusy), with
// every other retry after 100 ms.
func server(t *testing.T, opt asynq.RedisClientOpt, h asynq.Handler) {
	t.Helper()
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency: 4, Queues: map[string]int{tasks.QueueTranscode: 1},
		IsFailure:         func(err error) bool { return !errors.Is(err, lease.ErrBusy) },
		RetryDelayFunc:    func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
		TaskCheckInterval: 50 * time.Millisecond, DelayedTaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second, LogLevel: asynq.ErrorLevel,
	})
	if err := srv.Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
}

// Two runs of one task (the original and a rescue copy, both queued): one
// runs; the other waits while the first holds the lease, without using up
// its retries, and drops out once the first finished; a copy queued after
// that drops out too.
func TestOneRunAtATime(t *testing.T) {
	opt := testenv.RedisDB(t, redisDB)
	rc := testenv.RedisClient(t, opt)
	m := lease.NewManager(lease.Config{Redis: rc, TTL: ttl, Logger: zaptest.NewLogger(t)})
	counts := m.Counts()
	var running, ran, overlap atomic.Int32
	release := make(chan struct{})
	h := m.Middleware()(asynq.HandlerFunc(
		func(ctx context.Context, _ *asynq.Task) error {
			if running.Add(1) > 1 {
				overlap.Add(1)
			}
			defer running.Add(-1)
			ran.Add(1)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}))
	server(t, opt, h)
	client := testenv.AsynqClient(t, opt)
	insp := testenv.AsynqInspector(t, opt)

	c := transcodeTask(t, "j1")
	id := tasks.TaskID(tasks.TypeTranscode, "j1", 1)
	if _, err := client.Enqueue(c.Task, c.Options...); err != nil {
		t.Fatal(err)
	}
	testenv.WaitTaskState(t, insp, tasks.QueueTranscode, id, asynq.TaskStateActive, 10*time.Second)
	copyOpts := append(c.Options[:len(c.Options):len(c.Options)], asynq.TaskID(lease.RescueID(id)))
	if _, err := client.Enqueue(c.Task, copyOpts...); err != nil {
		t.Fatal(err)
	}
	// Far more than MaxRetry attempts at 100 ms: still waiting, not archived.
	time.Sleep(2 * time.Second)
	info, err := insp.GetTaskInfo(tasks.QueueTranscode, lease.RescueID(id))
	if err != nil || info.State == asynq.TaskStateArchived || info.Retried != 0 {
		t.Fatalf("the waiting copy: %+v, %v; want it waiting with no retry used", info, err)
	}
	if counts.Busy.Load() < 5 || ran.Load() != 1 {
		t.Fatalf("busy %d times, handler ran %d times; want the copy put back again and again, one run", counts.Busy.Load(), ran.Load())
	}
	close(release)
	testenv.WaitTaskState(t, insp, tasks.QueueTranscode, id, asynq.TaskStateCompleted, 10*time.Second)
	testenv.WaitTaskState(t, insp, tasks.QueueTranscode, lease.RescueID(id), asynq.TaskStateCompleted, 10*time.Second)

	late := append(c.Options[:len(c.Options):len(c.Options)], asynq.TaskID(lease.RescueID(lease.RescueID(id))))
	if _, err := client.Enqueue(c.Task, late...); err != nil {
		t.Fatal(err)
	}
	testenv.WaitTaskState(t, insp, tasks.QueueTranscode, lease.RescueID(lease.RescueID(id)), asynq.TaskStateCompleted, 10*time.Second)
	if ran.Load() != 1 || overlap.Load() != 0 || counts.Dropped.Load() != 2 {
		t.Fatalf("handler ran %d times (%d overlapping), %d dropped; want 1, 0, 2", ran.Load(), overlap.Load(), counts.Dropped.Load())
	}
}

// ReleaseAll lets go of the leases of the runs in progress (a worker that
// shut down), so that their tasks run elsewhere at once.
func TestReleaseAll(t *testing.T) {
	opt := testenv.RedisDB(t, redisDB)
	rc := testenv.RedisClient(t, opt)
	m := lease.NewManager(lease.Config{Redis: rc, TTL: time.Minute, Logger: zaptest.NewLogger(t)})
	started, stop := make(chan struct{}), make(chan struct{})
	server(t, opt, m.Middleware()(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		close(started)
		<-stop
		return ctx.Err()
	})))
	defer close(stop)
	c := transcodeTask(t, "j4")
	if _, err := testenv.AsynqClient(t, opt).Enqueue(c.Task, c.Options...); err != nil {
		t.Fatal(err)
	}
	<-started
	key := "kiln:lease:" + tasks.TaskID(tasks.TypeTranscode, "j4", 1)
	if rc.Exists(t.Context(), key).Val() != 1 {
		t.Fatal("no lease while the task runs")
	}
	m.ReleaseAll(t.Context())
	if rc.Exists(t.Context(), key).Val() != 0 {
		t.Fatal("the lease outlived ReleaseAll")
	}
}

// A run whose lease another run took over (it was presumed dead) stops.
func TestTakenOverRunStops(t *testing.T) {
	opt := testenv.RedisDB(t, redisDB)
	rc := testenv.RedisClient(t, opt)
	stopped := make(chan error, 4)
	started := make(chan struct{}, 4)
	h := lease.NewManager(lease.Config{Redis: rc, TTL: ttl, Logger: zaptest.NewLogger(t)}).Middleware()(asynq.HandlerFunc(
		func(ctx context.Context, _ *asynq.Task) error {
			started <- struct{}{}
			<-ctx.Done()
			stopped <- context.Cause(ctx)
			return ctx.Err()
		}))
	testenv.AsynqServer(t, opt, []string{tasks.QueueTranscode}, h, nil)
	client := testenv.AsynqClient(t, opt)
	c := transcodeTask(t, "j2")
	if _, err := client.Enqueue(c.Task, c.Options...); err != nil {
		t.Fatal(err)
	}
	<-started
	key := "kiln:lease:" + tasks.TaskID(tasks.TypeTranscode, "j2", 1)
	if err := rc.Set(t.Context(), key, "another-run", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case cause := <-stopped:
		if cause == nil || !strings.Contains(cause.Error(), "took this task over") {
			t.Fatalf("run stopped with cause %v, want the lease taken over", cause)
		}
	case <-time.After(3 * ttl):
		t.Fatalf("the run went on for %s after its lease was taken over", 3*ttl)
	}
}

// helperEnv makes the test binary a stuck worker process (TestMain); its
// value is the Redis address.
const helperEnv = "KILN_LEASE_TEST_WORKER_REDIS"

const startedKey = "kiln:test:lease:started"

// TestMain makes the test binary, run with helperEnv set, a worker whose
// transcode never ends until it is killed: TestDeadWorkerRescued's child.
func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		if err := runStuckWorker(addr); err != nil {
			fmt.Fprintln(os.Stderr, "stuck worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runStuckWorker(addr string) error {
	opt := asynq.RedisClientOpt{Addr: addr, Password: testenv.RedisPassword(), DB: redisDB} // the password from the parent's environment
	rc := opt.MakeRedisClient().(redis.UniversalClient)
	h := lease.NewManager(lease.Config{Redis: rc, TTL: ttl, Logger: zap.NewNop()}).Middleware()(asynq.HandlerFunc(
		func(ctx context.Context, _ *asynq.Task) error {
			if err := rc.Set(ctx, startedKey, os.Getpid(), time.Minute).Err(); err != nil {
				return err
			}
			<-ctx.Done()
			return ctx.Err()
		}))
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency: 1, Queues: map[string]int{tasks.QueueTranscode: 1},
		TaskCheckInterval: 50 * time.Millisecond, LogLevel: asynq.ErrorLevel,
	})
	if err := srv.Start(h); err != nil {
		return err
	}
	time.Sleep(5 * time.Minute) // until killed
	return errors.New("not killed within 5 minutes")
}

// A worker killed with -9 mid-task: the rescuer of another worker runs the
// task again long before asynq's own recovery could (its lease is 30 s and
// it recovers only tasks whose lease expired 30 s ago, once a minute), and
// only once.
func TestDeadWorkerRescued(t *testing.T) {
	opt := testenv.RedisDB(t, redisDB)
	rc := testenv.RedisClient(t, opt)
	client := testenv.AsynqClient(t, opt)
	insp := testenv.AsynqInspector(t, opt)

	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), helperEnv+"="+opt.Addr)
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	c := transcodeTask(t, "j3")
	id := tasks.TaskID(tasks.TypeTranscode, "j3", 1)
	if _, err := client.Enqueue(c.Task, c.Options...); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for rc.Exists(t.Context(), startedKey).Val() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the child worker never started the task")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	// This process is the surviving worker: its rescuer and its server.
	m := lease.NewManager(lease.Config{Redis: rc, TTL: ttl, Logger: zaptest.NewLogger(t)})
	counts := m.Counts()
	ran := make(chan string, 4)
	h := m.Middleware()(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		tid, _ := asynq.GetTaskID(ctx)
		ran <- tid
		return nil
	}))
	testenv.AsynqServer(t, opt, []string{tasks.QueueTranscode}, h, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go m.Rescuer(insp, client).Run(ctx)

	// asynq alone could not run the task again before 60 s.
	select {
	case tid := <-ran:
		t.Logf("task rescued and run again %s after its worker was killed (lease %s)", time.Since(killed).Round(100*time.Millisecond), ttl)
		if tid != lease.RescueID(id) {
			t.Fatalf("ran %s, want the rescue copy %s", tid, lease.RescueID(id))
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("the task of the killed worker did not run again within 45 s")
	}
	time.Sleep(2 * ttl) // further passes must not rescue it again
	if n := counts.Rescued.Load(); n != 1 {
		t.Fatalf("rescued %d times, want 1", n)
	}
	select {
	case tid := <-ran:
		t.Fatalf("the task ran a second time (%s)", tid)
	default:
	}
	if info, err := insp.GetTaskInfo(tasks.QueueTranscode, id); err != nil || info.State != asynq.TaskStateActive {
		t.Fatalf("original task: %v, %v; want it still active (orphaned) until asynq recovers it", info, err)
	}
}
