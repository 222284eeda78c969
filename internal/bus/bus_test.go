package bus_test

// Tests against a real in-process nats-server with JetStream (StartEmbedded)
// on a free loopback port and a t.TempDir store.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/bus"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// freeAddr returns a loopback host:port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// Loggers are no-ops: the NATS client and server log from their own
// goroutines, possibly after a test has ended.

// startNATS starts an embedded server on addr with its store in dir; it is
// shut down when the test ends (Shutdown twice is harmless).
func startNATS(t *testing.T, addr, dir string) *bus.Embedded {
	t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: addr, StoreDir: dir, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func connect(t *testing.T, url string) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := bus.Connect(ctx, bus.Config{URL: url, Name: t.Name(), Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// inspect opens a plain JetStream connection to look at the stream.
func inspect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func streamInfo(t *testing.T, js jetstream.JetStream) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(t.Context(), bus.StreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", bus.StreamName, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func setup(t *testing.T) (*bus.Bus, jetstream.JetStream, string) {
	t.Helper()
	e := startNATS(t, freeAddr(t), t.TempDir())
	return connect(t, e.ClientURL()), inspect(t, e.ClientURL()), e.ClientURL()
}

func jobEvent(job, id string) *kilnv1.JobEvent {
	return &kilnv1.JobEvent{EventId: id, JobId: job, AssetId: "asset-" + job, State: kilnv1.JobState_JOB_STATE_PROBING}
}

func TestStartEmbeddedBadListen(t *testing.T) {
	for _, listen := range []string{"", "127.0.0.1", "127.0.0.1:http-ish"} {
		e, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: listen, StoreDir: t.TempDir()})
		if err == nil {
			e.Shutdown()
			t.Errorf("StartEmbedded(%q): nil error", listen)
		}
	}
}

func TestConnectCreatesStream(t *testing.T) {
	b, js, url := setup(t)
	if err := b.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	cfg := streamInfo(t, js).Config
	if cfg.Name != bus.StreamName || !slices.Equal(cfg.Subjects, []string{"kiln.>"}) ||
		cfg.Storage != jetstream.FileStorage || cfg.Retention != jetstream.LimitsPolicy ||
		cfg.MaxAge != 7*24*time.Hour || cfg.Duplicates != 10*time.Minute {
		t.Errorf("stream config = %+v", cfg)
	}
	// Connecting again (another replica) keeps the stream and its messages;
	// a different MaxAge updates it.
	if err := b.PublishJobEvent(t.Context(), jobEvent("j1", "j1.probing")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b2, err := bus.Connect(ctx, bus.Config{URL: url, MaxAge: time.Hour})
	if err != nil {
		t.Fatalf("second Connect: %v", err)
	}
	defer b2.Close()
	info := streamInfo(t, js)
	if info.Config.MaxAge != time.Hour || info.State.Msgs != 1 {
		t.Errorf("after second Connect: max age %s, %d messages; want 1h, 1", info.Config.MaxAge, info.State.Msgs)
	}
}

func TestConnectGivesUpWithContext(t *testing.T) {
	// Nothing listens: Connect keeps trying (RetryOnFailedConnect) until ctx
	// ends, then fails.
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	b, err := bus.Connect(ctx, bus.Config{URL: "nats://" + freeAddr(t)})
	if err == nil {
		b.Close()
		t.Fatal("Connect without a server: nil error")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect error = %v, want it to wrap the context's", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Connect took %s after its context ended", d)
	}
}

func TestPublishJobEventDedupes(t *testing.T) {
	b, js, _ := setup(t)
	ctx := t.Context()
	ev := jobEvent("job1", "job1.probing")
	for range 3 {
		if err := b.PublishJobEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if n := streamInfo(t, js).State.Msgs; n != 1 {
		t.Fatalf("%d messages after publishing one event id 3 times, want 1", n)
	}
	// Another event id, or the same fact of another attempt, is stored.
	if err := b.PublishJobEvent(ctx, jobEvent("job1", "job1.a2.probing")); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishJobEvent(ctx, jobEvent("job2", "job2.probing")); err != nil {
		t.Fatal(err)
	}
	if n := streamInfo(t, js).State.Msgs; n != 3 {
		t.Fatalf("%d messages, want 3", n)
	}
	s, err := js.Stream(ctx, bus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != bus.JobSubject("job1") || m.Subject != "kiln.jobs.job1" {
		t.Errorf("subject = %q, want kiln.jobs.job1", m.Subject)
	}
	var got kilnv1.JobEvent
	if err := proto.Unmarshal(m.Data, &got); err != nil || !proto.Equal(&got, ev) {
		t.Errorf("stored event = %v (%v), want %v", &got, err, ev)
	}
	if id := m.Header.Get(jetstream.MsgIDHeader); id != "job1.probing" {
		t.Errorf("Nats-Msg-Id = %q", id)
	}
}

func TestPublishObjectLandedDedupes(t *testing.T) {
	b, js, _ := setup(t)
	ctx := t.Context()
	landed := func(bucket, key, etag, origin string) *kilnv1.ObjectLanded {
		return &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: bucket, Key: key, Etag: etag, Size: 10}, Origin: origin}
	}
	publish := []*kilnv1.ObjectLanded{
		landed("src", "a.mp4", "e1", "api"),
		landed("src", "a.mp4", "e1", "s3"), // same object seen through S3: a duplicate
		landed("src", "a.mp4", "e1", "api"),
		landed("src", "a.mp4", "e2", "api"),   // overwritten: a new object
		landed("other", "a.mp4", "e1", "api"), // another bucket
		landed("src", "b.mp4", "e1", "api"),   // another key
	}
	for _, ev := range publish {
		if err := b.PublishObjectLanded(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	info := streamInfo(t, js)
	if info.State.Msgs != 4 {
		t.Fatalf("%d messages, want 4 (one per bucket/key/etag)", info.State.Msgs)
	}
	s, err := js.Stream(ctx, bus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, bus.SubjectObjectLanded)
	if err != nil {
		t.Fatal(err)
	}
	var got kilnv1.ObjectLanded
	if err := proto.Unmarshal(m.Data, &got); err != nil || got.GetObject().GetKey() != "b.mp4" {
		t.Errorf("last landed = %v, %v", &got, err)
	}
}

// recorder counts deliveries per message id (the event id in the payload).
type recorder struct {
	mu    sync.Mutex
	count map[string]int
	order []string
	seen  chan string
}

func newRecorder() *recorder {
	return &recorder{count: map[string]int{}, seen: make(chan string, 1000)}
}

func (r *recorder) add(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count[id]++
	r.order = append(r.order, id)
	r.seen <- id
	return r.count[id]
}

func (r *recorder) n(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[id]
}

// waitFor waits until cond holds, polling.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runConsume runs Consume in the background; the returned func cancels it
// and returns its error (failing when it does not return promptly).
func runConsume(t *testing.T, b *bus.Bus, cfg bus.ConsumerConfig, h bus.Handler) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Consume(ctx, cfg, h) }()
	stopped := false
	var err error
	stop := func() error {
		if stopped {
			return err
		}
		stopped = true
		cancel()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Consume did not return after its context was canceled")
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestConsume(t *testing.T) {
	b, js, _ := setup(t)
	ctx := t.Context()
	rec := newRecorder()
	h := func(ctx context.Context, subject string, data []byte) error {
		var ev kilnv1.JobEvent
		if err := proto.Unmarshal(data, &ev); err != nil {
			return fmt.Errorf("decode: %w", bus.ErrPermanent)
		}
		if subject != bus.JobSubject(ev.GetJobId()) {
			return fmt.Errorf("subject %q for job %q: %w", subject, ev.GetJobId(), bus.ErrPermanent)
		}
		n := rec.add(ev.GetEventId())
		switch {
		case strings.HasPrefix(ev.GetEventId(), "transient") && n == 1:
			return errors.New("catalog database is locked")
		case strings.HasPrefix(ev.GetEventId(), "poison"):
			return fmt.Errorf("unknown state: %w", bus.ErrPermanent)
		}
		return nil
	}
	stop := runConsume(t, b, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}}, h)

	for _, id := range []string{"ok-1", "transient-1", "poison-1", "ok-2"} {
		if err := b.PublishJobEvent(ctx, jobEvent("job-"+id, id)); err != nil {
			t.Fatal(err)
		}
	}
	// A message outside the consumer's subjects is not delivered.
	if err := b.PublishObjectLanded(ctx, &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: "b", Key: "k", Etag: "e"}}); err != nil {
		t.Fatal(err)
	}

	// The transient failure is redelivered (after the 2 s nak delay).
	waitFor(t, 15*time.Second, "redelivery of the failed message", func() bool { return rec.n("transient-1") >= 2 })
	// Give a wrongly nak'ed poison message the same delay and more to come back.
	time.Sleep(2500 * time.Millisecond)
	want := map[string]int{"ok-1": 1, "transient-1": 2, "poison-1": 1, "ok-2": 1}
	rec.mu.Lock()
	got := maps.Clone(rec.count)
	rec.mu.Unlock()
	if !maps.Equal(got, want) {
		t.Errorf("deliveries = %v, want %v", got, want)
	}

	c, err := js.Consumer(ctx, bus.StreamName, "catalog")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.NumAckPending != 0 || ci.NumPending != 0 || ci.Config.AckPolicy != jetstream.AckExplicitPolicy ||
		ci.Config.MaxDeliver != 20 || ci.Config.AckWait != 30*time.Second {
		t.Errorf("consumer: ack pending %d, pending %d, config %+v", ci.NumAckPending, ci.NumPending, ci.Config)
	}

	if err := stop(); err != nil {
		t.Errorf("Consume returned %v after cancel, want nil", err)
	}
	// Stopped: nothing more is handled; the durable keeps its place.
	if err := b.PublishJobEvent(ctx, jobEvent("job-late", "late")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if rec.n("late") != 0 {
		t.Error("a stopped Consume handled a message")
	}
	rec2 := newRecorder()
	runConsume(t, b, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}},
		func(_ context.Context, _ string, data []byte) error {
			var ev kilnv1.JobEvent
			_ = proto.Unmarshal(data, &ev)
			rec2.add(ev.GetEventId())
			return nil
		})
	waitFor(t, 10*time.Second, "the late message", func() bool { return rec2.n("late") == 1 })
	time.Sleep(300 * time.Millisecond)
	rec2.mu.Lock()
	if len(rec2.order) != 1 {
		t.Errorf("resumed durable got %v, want only the late message", rec2.order)
	}
	rec2.mu.Unlock()
}

func TestConsumeHonoursMaxDeliver(t *testing.T) {
	b, _, _ := setup(t)
	rec := newRecorder()
	runConsume(t, b, bus.ConsumerConfig{Durable: "flaky", Subjects: []string{bus.SubjectJobs}, MaxDeliver: 2},
		func(_ context.Context, _ string, data []byte) error {
			var ev kilnv1.JobEvent
			_ = proto.Unmarshal(data, &ev)
			rec.add(ev.GetEventId())
			return errors.New("always failing")
		})
	if err := b.PublishJobEvent(t.Context(), jobEvent("j", "j.x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "second delivery", func() bool { return rec.n("j.x") >= 2 })
	time.Sleep(3 * time.Second) // longer than the nak delay
	if n := rec.n("j.x"); n != 2 {
		t.Errorf("delivered %d times with MaxDeliver 2", n)
	}
}

// TestConsumeSharedDurable: replicas sharing a durable split the messages,
// each processed once overall.
func TestConsumeSharedDurable(t *testing.T) {
	_, js, url := setup(t)
	const total = 200
	replicas := []*bus.Bus{connect(t, url), connect(t, url)}
	var mu sync.Mutex
	byReplica := make([]map[string]int, len(replicas))
	all := map[string]int{}
	for i, b := range replicas {
		byReplica[i] = map[string]int{}
		runConsume(t, b, bus.ConsumerConfig{Durable: "ingest", Subjects: []string{bus.SubjectObjectLanded}},
			func(_ context.Context, _ string, data []byte) error {
				var ev kilnv1.ObjectLanded
				if err := proto.Unmarshal(data, &ev); err != nil {
					return bus.ErrPermanent
				}
				time.Sleep(2 * time.Millisecond) // some work
				mu.Lock()
				byReplica[i][ev.GetObject().GetKey()]++
				all[ev.GetObject().GetKey()]++
				mu.Unlock()
				return nil
			})
	}
	// Both replicas pull before anything is published.
	waitFor(t, 10*time.Second, "both replicas pulling", func() bool {
		c, err := js.Consumer(t.Context(), bus.StreamName, "ingest")
		if err != nil {
			return false
		}
		ci, err := c.Info(t.Context())
		return err == nil && ci.NumWaiting >= 2
	})
	pub := connect(t, url)
	for i := range total {
		ev := &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: "src", Key: fmt.Sprintf("k%03d", i), Etag: "e"}}
		if err := pub.PublishObjectLanded(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "every message processed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(all) == total
	})
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for k, n := range all {
		if n != 1 {
			t.Errorf("%s processed %d times", k, n)
		}
	}
	for i, m := range byReplica {
		if len(m) == 0 {
			t.Errorf("replica %d processed nothing (split %d/%d)", i, len(byReplica[0]), len(byReplica[1]))
		}
	}
	t.Logf("split: %d / %d", len(byReplica[0]), len(byReplica[1]))
}

// TestRestartKeepsStream: the file store survives a restart of the embedded
// server: messages, the duplicate window and a durable's position.
func TestRestartKeepsStream(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	e := startNATS(t, addr, dir)
	b := connect(t, e.ClientURL())
	ctx := t.Context()
	for i := range 3 {
		if err := b.PublishJobEvent(ctx, jobEvent("job", fmt.Sprintf("job.e%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	var mu sync.Mutex
	handler := func(_ context.Context, _ string, data []byte) error {
		var ev kilnv1.JobEvent
		if err := proto.Unmarshal(data, &ev); err != nil {
			return bus.ErrPermanent
		}
		mu.Lock()
		got = append(got, ev.GetEventId())
		mu.Unlock()
		return nil
	}
	n := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	stop := runConsume(t, b, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}}, handler)
	waitFor(t, 10*time.Second, "3 messages before restart", func() bool { return n() == 3 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	e.Shutdown()

	e2 := startNATS(t, freeAddr(t), dir)
	b2 := connect(t, e2.ClientURL())
	js := inspect(t, e2.ClientURL())
	if msgs := streamInfo(t, js).State.Msgs; msgs != 3 {
		t.Fatalf("%d messages after restart, want 3", msgs)
	}
	// The duplicate window survived: a redelivered event is still dropped.
	if err := b2.PublishJobEvent(ctx, jobEvent("job", "job.e1")); err != nil {
		t.Fatal(err)
	}
	if err := b2.PublishJobEvent(ctx, jobEvent("job", "job.e3")); err != nil {
		t.Fatal(err)
	}
	if msgs := streamInfo(t, js).State.Msgs; msgs != 4 {
		t.Errorf("%d messages after republishing one old and one new event, want 4", msgs)
	}
	// The durable resumes after what it acked before the restart.
	runConsume(t, b2, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}}, handler)
	waitFor(t, 10*time.Second, "the new message after restart", func() bool { return n() >= 4 })
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"job.e0", "job.e1", "job.e2", "job.e3"}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
}
