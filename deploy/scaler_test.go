package deploy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/redis/go-redis/v9"

	"github.com/kilnvideo/kiln/internal/admission"
	"github.com/kilnvideo/kiln/internal/app"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// scalerLength is the length KEDA's redis scaler reads for key: it asks
// Redis the key's type and counts a list with LLEN, a sorted set with
// ZCARD, a set with SCARD, a hash with HLEN, and a missing key as 0 (the
// Lua script of KEDA v2.21.0's pkg/scalers/redis_scaler.go); any other
// type is an error there, and here.
func scalerLength(ctx context.Context, rc redis.UniversalClient, key string) (int64, error) {
	typ, err := rc.Type(ctx, key).Result()
	if err != nil {
		return 0, err
	}
	switch typ {
	case "list":
		return rc.LLen(ctx, key).Result()
	case "zset":
		return rc.ZCard(ctx, key).Result()
	case "set":
		return rc.SCard(ctx, key).Result()
	case "hash":
		return rc.HLen(ctx, key).Result()
	case "none":
		return 0, nil
	}
	return 0, fmt.Errorf("key %s is a %s", key, typ)
}

// redisTriggerKeys returns the keys the triggers of the ScaledObject of
// keda-redis.yaml that scales the worker of queue read, by trigger name,
// and that worker's queues as asynq weights (its KILN_WORKER_QUEUES
// through app.WorkerQueueWeights, what its server runs).
func redisTriggerKeys(t *testing.T, queue string) (map[string]string, map[string]int) {
	t.Helper()
	ws := workers(t, objects(t, kilnManifest))
	w, ok := ws[queue]
	if !ok {
		t.Fatalf("no worker of the queue %s", queue)
	}
	weights, err := app.WorkerQueueWeights(w.queues)
	if err != nil {
		t.Fatal(err)
	}
	so, ok := byName[*kedav1alpha1.ScaledObject](objects(t, kedaRedis), w.dep.Name)
	if !ok {
		t.Fatalf("%s: no ScaledObject %s", kedaRedis, w.dep.Name)
	}
	keys := map[string]string{}
	for _, tr := range so.Spec.Triggers {
		keys[tr.Name] = tr.Metadata["listName"]
	}
	for _, name := range []string{"pending", "active", "retry", "scheduled"} {
		if keys[name] == "" {
			t.Fatalf("ScaledObject %s: no trigger %s with a listName", so.Name, name)
		}
	}
	return keys, weights
}

// TestScalerKeysInRedis: the keys that keda-redis.yaml's triggers name
// (read from the manifest) are where a real asynq keeps the queue's tasks.
// N probe tasks enqueued through internal/tasks make the pending key N
// long; a worker of the probe queue (the queues the manifest gives it)
// that takes one and blocks leaves N-1 pending and 1 active, and does not
// touch the transcode queue; a failed task sits in the retry key and a
// task for later in the scheduled key, each counted as KEDA counts them.
func TestScalerKeysInRedis(t *testing.T) {
	const n = 5
	ctx := t.Context()
	opt := testenv.RedisDB(t, 14)
	rc := testenv.RedisClient(t, opt)
	client := testenv.AsynqClient(t, opt)
	probe, weights := redisTriggerKeys(t, tasks.QueueProbe)
	transcode, _ := redisTriggerKeys(t, tasks.QueueTranscode)

	lengths := func(keys map[string]string) map[string]int64 {
		t.Helper()
		out := map[string]int64{}
		for name, key := range keys {
			l, err := scalerLength(ctx, rc, key)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			out[name] = l
		}
		return out
	}
	expect := func(keys map[string]string, want map[string]int64) {
		t.Helper()
		got := lengths(keys)
		for name, w := range want {
			if got[name] != w {
				t.Errorf("%s (trigger %s) has length %d, want %d (all: %v)", keys[name], name, got[name], w, got)
			}
		}
	}
	// waitFor polls until the lengths are want (asynq moves tasks on its
	// own time), failing after 15 s with the last lengths seen.
	waitFor := func(keys map[string]string, want map[string]int64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := lengths(keys)
			same := true
			for name, w := range want {
				same = same && got[name] == w
			}
			if same {
				return
			}
			if time.Now().After(deadline) {
				expect(keys, want)
				t.FailNow()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	for i := range n {
		cmd, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: fmt.Sprintf("job_scaler_%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := tasks.Enqueue(ctx, client, cmd); err != nil {
			t.Fatal(err)
		}
	}
	tc, err := tasks.NewTranscodeTask(t.Context(), &kilnv1.TranscodeTask{JobId: "job_scaler_transcode"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tasks.Enqueue(ctx, client, tc); err != nil {
		t.Fatal(err)
	}
	expect(probe, map[string]int64{"pending": n, "active": 0, "retry": 0, "scheduled": 0})
	expect(transcode, map[string]int64{"pending": 1, "active": 0})

	// A worker of the probe queue: the first task blocks until released,
	// then fails (to the retry set, retried in an hour); the others succeed.
	started, release := make(chan string, n), make(chan struct{})
	var taken atomic.Bool
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:     1,
		Queues:          weights,
		RetryDelayFunc:  func(int, error, *asynq.Task) time.Duration { return time.Hour },
		ShutdownTimeout: 2 * time.Second,
		LogLevel:        asynq.ErrorLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if task.Type() != tasks.TypeProbe {
			return fmt.Errorf("a worker of %v ran a %s", weights, task.Type())
		}
		if taken.Swap(true) {
			return nil
		}
		started <- task.Type()
		select {
		case <-release:
		case <-ctx.Done():
		}
		return errors.New("the first probe fails once")
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseAll() // before Shutdown
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatal("the worker took no task")
	}
	expect(probe, map[string]int64{"pending": n - 1, "active": 1, "retry": 0})
	expect(transcode, map[string]int64{"pending": 1, "active": 0})

	releaseAll()
	waitFor(probe, map[string]int64{"pending": 0, "active": 0, "retry": 1})
	expect(transcode, map[string]int64{"pending": 1, "active": 0})

	// A probe for later: the same stage options, run in an hour.
	cmd, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: "job_scaler_later"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.EnqueueContext(ctx, cmd.Task, append(cmd.Options, asynq.ProcessIn(time.Hour))...); err != nil {
		t.Fatal(err)
	}
	expect(probe, map[string]int64{"pending": 0, "active": 0, "retry": 1, "scheduled": 1})
}

type oneSlot struct{}

func (oneSlot) TranscodeSlots(context.Context) (int, error) { return 1, nil }

// TestScalerBacklogKey: the transcode ScaledObject's backlog trigger names
// the list whose length is the transcode work waiting for admission (which
// asynq's keys do not count): three transcodes submitted, one admitted to a
// fleet of one slot, leave it 2 long, and asynq's pending key 1.
func TestScalerBacklogKey(t *testing.T) {
	ctx := t.Context()
	opt := testenv.RedisDB(t, 14)
	rc := testenv.RedisClient(t, opt)
	keys, _ := redisTriggerKeys(t, tasks.QueueTranscode)
	if keys["backlog"] == "" {
		t.Fatal("the transcode ScaledObject has no backlog trigger")
	}
	q, err := admission.New(admission.Config{Redis: rc, Next: testenv.AsynqClient(t, opt), Tasks: testenv.AsynqInspector(t, opt), Slots: oneSlot{}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		cmd, err := tasks.NewTranscodeTask(ctx, &kilnv1.TranscodeTask{JobId: fmt.Sprintf("job_backlog_%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := tasks.Enqueue(ctx, q, cmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{"backlog": 2, "pending": 1} {
		if n, err := scalerLength(ctx, rc, keys[name]); err != nil || n != want {
			t.Errorf("%s (trigger %s): length %d, %v; want %d", keys[name], name, n, err, want)
		}
	}
}
