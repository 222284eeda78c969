package bus_test

// Tests against a real in-process nats-server with JetStream (StartEmbedded)
// on a free loopback port and a t.TempDir store.

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Loggers are no-ops: the NATS client and server log from their own
// goroutines, possibly after a test has ended.

// The users of the test servers: admin may do anything (what the tests
// look at), the role users only what bus.Permissions allows; every
// password is testPassword.
const (
	admin        = "admin"
	testPassword = "bus-test-password-0123456789"
)

func testUsers() []bus.User {
	users := []bus.User{{Name: admin, Password: testPassword}}
	for _, u := range bus.Users {
		p, _ := bus.Permissions(u)
		users = append(users, bus.User{Name: u, Password: testPassword, Permission: &p})
	}
	return users
}

// startNATS starts an embedded server on addr with its store in dir and
// testUsers; it is shut down when the test ends (Shutdown twice is
// harmless).
func startNATS(t *testing.T, addr, dir string) *bus.Embedded {
	t.Helper()
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: addr, StoreDir: dir, Users: testUsers(), Logger: zap.NewNop()})
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
	b, err := bus.Connect(ctx, bus.Config{URL: url, Name: t.Name(), User: admin, Password: testPassword, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// inspect opens a plain JetStream connection to look at the stream.
func inspect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(admin, testPassword))
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
	e := startNATS(t, testenv.FreeAddr(t), t.TempDir())
	return connect(t, e.ClientURL()), inspect(t, e.ClientURL()), e.ClientURL()
}

func jobEvent(job, id string) *kilnv1.JobEvent {
	return &kilnv1.JobEvent{EventId: id, JobId: job, AssetId: "asset-" + job, State: kilnv1.JobState_JOB_STATE_PROBING}
}

func TestStartEmbeddedBadListen(t *testing.T) {
	for _, listen := range []string{"", "127.0.0.1", "127.0.0.1:http-ish"} {
		e, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: listen, StoreDir: t.TempDir(), Users: testUsers()})
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
	b2, err := bus.Connect(ctx, bus.Config{URL: url, User: admin, Password: testPassword, MaxAge: time.Hour})
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
	b, err := bus.Connect(ctx, bus.Config{URL: "nats://" + testenv.FreeAddr(t)})
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

	// The transient failure is redelivered (after the 1 s first backoff).
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
	if n := dlqCount(t, js); n != 1 {
		t.Errorf("%d dead letters, want 1 (the poison message)", n)
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
		ci.Config.MaxDeliver != -1 || ci.Config.AckWait != 30*time.Second {
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

// TestConsumeBacksOffUntilSuccess: a handler failing transiently 25 times
// (more than the old limit of 20 deliveries) is redelivered with growing
// delays, then acked; nothing is dead-lettered.
func TestConsumeBacksOffUntilSuccess(t *testing.T) {
	b, js, _ := setup(t)
	const failures = 25
	const minDelay, maxDelay = 20 * time.Millisecond, 160 * time.Millisecond
	var mu sync.Mutex
	var at []time.Time
	runConsume(t, b, bus.ConsumerConfig{Durable: "flaky", Subjects: []string{bus.SubjectJobs}, MinBackoff: minDelay, MaxBackoff: maxDelay},
		func(context.Context, string, []byte) error {
			mu.Lock()
			defer mu.Unlock()
			at = append(at, time.Now())
			if len(at) <= failures {
				return errors.New("redis: connection refused")
			}
			return nil
		})
	if err := b.PublishJobEvent(t.Context(), jobEvent("j", "j.x")); err != nil {
		t.Fatal(err)
	}
	deliveries := func() int { mu.Lock(); defer mu.Unlock(); return len(at) }
	waitFor(t, 30*time.Second, "the delivery that succeeds", func() bool { return deliveries() >= failures+1 })
	waitFor(t, 10*time.Second, "the ack", func() bool {
		c, err := js.Consumer(t.Context(), bus.StreamName, "flaky")
		if err != nil {
			return false
		}
		ci, err := c.Info(t.Context())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0 && ci.NumRedelivered == 0
	})
	time.Sleep(3 * maxDelay)
	mu.Lock()
	defer mu.Unlock()
	if len(at) != failures+1 {
		t.Fatalf("%d deliveries, want %d (acked after the last)", len(at), failures+1)
	}
	// Gap i follows failure i+1: min·2^i, capped, ±20 %; the server adds a
	// little, never less.
	for i := 1; i < len(at); i++ {
		gap := at[i].Sub(at[i-1])
		want := min(minDelay<<(i-1), maxDelay)
		if gap < want*8/10-5*time.Millisecond {
			t.Errorf("gap %d = %s, want at least ~%s", i, gap, want*8/10)
		}
	}
	if first, last := at[1].Sub(at[0]), at[len(at)-1].Sub(at[len(at)-2]); last < 3*first {
		t.Errorf("delays did not grow: first %s, last %s", first, last)
	}
	if n := dlqCount(t, js); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
	c, err := js.Consumer(t.Context(), bus.StreamName, "flaky")
	if err != nil {
		t.Fatal(err)
	}
	if ci, err := c.Info(t.Context()); err != nil || ci.Config.MaxDeliver != -1 {
		t.Errorf("consumer MaxDeliver = %d (%v), want -1 (unlimited)", ci.Config.MaxDeliver, err)
	}
}

func TestBackoff(t *testing.T) {
	for _, tt := range []struct {
		delivered uint64
		want      time.Duration
	}{{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {6, 32 * time.Second}, {7, time.Minute}, {1000, time.Minute}} {
		for range 50 {
			got := bus.Backoff(tt.delivered, time.Second, time.Minute)
			if got < tt.want*8/10 || got > tt.want*12/10 || got > time.Minute {
				t.Fatalf("Backoff(%d) = %s, want %s ±20 %% and at most 1m", tt.delivered, got, tt.want)
			}
		}
	}
}

func dlqCount(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), bus.DeadLetterStream)
	if err != nil {
		t.Fatalf("stream %s: %v", bus.DeadLetterStream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
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
	addr := testenv.FreeAddr(t)
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

	e2 := startNATS(t, testenv.FreeAddr(t), dir)
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

// TestDeadLetters: a permanent failure lands in KILN_DLQ with its subject,
// data, consumer, reason and time, is terminated (never redelivered), is
// listed and counted, and a replay brings it back to the consumer.
func TestDeadLetters(t *testing.T) {
	b, js, _ := setup(t)
	ctx := t.Context()
	var mu sync.Mutex
	accept := false
	got := map[string]int{}
	h := func(_ context.Context, subject string, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		got[string(data)]++
		if !accept && strings.HasPrefix(string(data), "bad") {
			return fmt.Errorf("ingest: object landed: %w: proto: cannot parse\ninvalid wire-format data", bus.ErrPermanent)
		}
		return nil
	}
	n := func(data string) int { mu.Lock(); defer mu.Unlock(); return got[data] }
	runConsume(t, b, bus.ConsumerConfig{Durable: "ingest", Subjects: []string{bus.SubjectObjectLanded, bus.SubjectS3Events}, MinBackoff: 20 * time.Millisecond}, h)
	before := time.Now().UTC()
	for _, m := range []struct{ subject, data string }{
		{bus.SubjectObjectLanded, "bad-1"}, {bus.SubjectS3Events, "good"}, {bus.SubjectS3Events, "bad-2"}, {bus.SubjectObjectLanded, "bad-3"},
	} {
		if _, err := js.Publish(ctx, m.subject, []byte(m.data), jetstream.WithMsgID("id-"+m.data)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "3 dead letters", func() bool { return dlqCount(t, js) == 3 })
	time.Sleep(300 * time.Millisecond) // a wrongly nak'ed message would be back by now
	for _, d := range []string{"bad-1", "good", "bad-2", "bad-3"} {
		if n(d) != 1 {
			t.Errorf("%s delivered %d times, want 1", d, n(d))
		}
	}

	// The raw dead letter: data unchanged, what happened in its headers.
	s, err := js.Stream(ctx, bus.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Subject != bus.DeadLetterSubject("ingest") || string(raw.Data) != "bad-1" ||
		raw.Header.Get(bus.HeaderDLQSubject) != bus.SubjectObjectLanded || raw.Header.Get(bus.HeaderDLQConsumer) != "ingest" ||
		raw.Header.Get(bus.HeaderDLQStreamSeq) != "1" || raw.Header.Get(bus.HeaderDLQDeliveries) != "1" ||
		raw.Header.Get(bus.HeaderDLQMsgID) != "id-bad-1" ||
		raw.Header.Get(bus.HeaderDLQReason) != "ingest: object landed: permanent: proto: cannot parse invalid wire-format data" {
		t.Errorf("dead letter = %s %q %v", raw.Subject, raw.Data, raw.Header)
	}
	if ts, err := time.Parse(time.RFC3339Nano, raw.Header.Get(bus.HeaderDLQTime)); err != nil || ts.Before(before.Add(-time.Second)) || time.Since(ts) > time.Minute {
		t.Errorf("dead letter time %q (%v)", raw.Header.Get(bus.HeaderDLQTime), err)
	}

	// Listed oldest first, in pages; by consumer.
	page, more, err := b.DeadLetters(ctx, bus.DeadLetterQuery{Limit: 2})
	if err != nil || !more || len(page) != 2 || page[0].Seq != 1 || page[1].Seq != 2 {
		t.Fatalf("first page = %+v more %v, %v", page, more, err)
	}
	if p := page[1]; p.Consumer != "ingest" || p.Subject != bus.SubjectS3Events || string(p.Data) != "bad-2" || p.StreamSeq != 3 ||
		p.Deliveries != 1 || !strings.Contains(p.Reason, "permanent") || p.FailedAt.IsZero() {
		t.Errorf("dead letter 2 = %+v", p)
	}
	page, more, err = b.DeadLetters(ctx, bus.DeadLetterQuery{After: 2, Limit: 2})
	if err != nil || more || len(page) != 1 || page[0].Seq != 3 {
		t.Fatalf("second page = %+v more %v, %v", page, more, err)
	}
	if page, _, err := b.DeadLetters(ctx, bus.DeadLetterQuery{Consumer: "catalog", Limit: 10}); err != nil || len(page) != 0 {
		t.Errorf("catalog's = %+v, %v", page, err)
	}
	counts, err := b.DeadLetterCounts(ctx)
	if err != nil || !maps.Equal(counts, map[string]int{"ingest": 3}) {
		t.Errorf("counts = %v, %v", counts, err)
	}

	// Fixed: a replay reaches the consumer again, and the dead letter goes.
	mu.Lock()
	accept = true
	mu.Unlock()
	dl, err := b.ReplayDeadLetter(ctx, 2)
	if err != nil || dl.Subject != bus.SubjectS3Events || string(dl.Data) != "bad-2" {
		t.Fatalf("replay = %+v, %v", dl, err)
	}
	waitFor(t, 10*time.Second, "the replayed message", func() bool { return n("bad-2") == 2 })
	if _, err := b.DeadLetter(ctx, 2); !errors.Is(err, bus.ErrDeadLetterNotFound) {
		t.Errorf("replayed dead letter: %v, want ErrDeadLetterNotFound", err)
	}
	if _, err := b.ReplayDeadLetter(ctx, 2); !errors.Is(err, bus.ErrDeadLetterNotFound) {
		t.Errorf("second replay: %v, want ErrDeadLetterNotFound", err)
	}
	if _, err := b.DeadLetter(ctx, 99); !errors.Is(err, bus.ErrDeadLetterNotFound) {
		t.Errorf("unknown dead letter: %v, want ErrDeadLetterNotFound", err)
	}
	page, _, err = b.DeadLetters(ctx, bus.DeadLetterQuery{Limit: 10})
	if err != nil || len(page) != 2 || page[0].Seq != 1 || page[1].Seq != 3 {
		t.Errorf("after replay = %+v, %v", page, err)
	}
	if counts, _ := b.DeadLetterCounts(ctx); counts["ingest"] != 2 {
		t.Errorf("counts after replay = %v", counts)
	}
	// The replayed message is on its subject, marked.
	ks, err := js.Stream(ctx, bus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	last, err := ks.GetLastMsgForSubject(ctx, bus.SubjectS3Events)
	if err != nil || string(last.Data) != "bad-2" || last.Header.Get(bus.HeaderReplayOf) != "2" {
		t.Errorf("replayed = %v, %v", last, err)
	}
	time.Sleep(300 * time.Millisecond)
	if n("bad-2") != 2 || n("good") != 1 {
		t.Errorf("deliveries after replay: bad-2 %d, good %d", n("bad-2"), n("good"))
	}
}

// TestDeadLetterStreamMissing: when the dead letter cannot be written, the
// message is not terminated; it comes back and is dead-lettered once the
// stream is there again.
func TestDeadLetterStreamMissing(t *testing.T) {
	b, js, url := setup(t)
	ctx := t.Context()
	if err := js.DeleteStream(ctx, bus.DeadLetterStream); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runConsume(t, b, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		func(_ context.Context, _ string, data []byte) error {
			rec.add(string(data))
			return bus.ErrPermanent
		})
	if _, err := js.Publish(ctx, bus.JobSubject("j"), []byte("poison")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "redeliveries while the dead letter cannot be written", func() bool { return rec.n("poison") >= 3 })
	connect(t, url) // another process connecting creates the stream again
	waitFor(t, 20*time.Second, "the dead letter", func() bool {
		s, err := js.Stream(ctx, bus.DeadLetterStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 1
	})
	page, _, err := b.DeadLetters(ctx, bus.DeadLetterQuery{Limit: 10})
	if err != nil || len(page) != 1 || page[0].Deliveries < 3 || page[0].Consumer != "catalog" {
		t.Fatalf("dead letters = %+v, %v", page, err)
	}
	n := rec.n("poison")
	time.Sleep(500 * time.Millisecond)
	if rec.n("poison") != n {
		t.Errorf("delivered again after it was dead-lettered")
	}
}

// TestConsumeUpgradesOldDurable: a durable created by an older kiln (at
// most 20 deliveries) becomes unlimited when consumed again.
func TestConsumeUpgradesOldDurable(t *testing.T) {
	b, js, _ := setup(t)
	ctx := t.Context()
	if _, err := js.CreateOrUpdateConsumer(ctx, bus.StreamName, jetstream.ConsumerConfig{
		Durable: "catalog", FilterSubjects: []string{bus.SubjectJobs}, AckPolicy: jetstream.AckExplicitPolicy,
		MaxDeliver: 20, AckWait: 30 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	runConsume(t, b, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}},
		func(context.Context, string, []byte) error { return nil })
	waitFor(t, 10*time.Second, "the updated durable", func() bool {
		c, err := js.Consumer(ctx, bus.StreamName, "catalog")
		if err != nil {
			return false
		}
		ci, err := c.Info(ctx)
		return err == nil && ci.Config.MaxDeliver == -1
	})
}

// TestStreamReplicas: Connect creates the streams with Config.StreamReplicas
// copies. A single server cannot keep three: the setting reaches it and
// Connect fails instead of quietly creating one copy.
func TestStreamReplicas(t *testing.T) {
	e := startNATS(t, "127.0.0.1:-1", t.TempDir())
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	b, err := bus.Connect(ctx, bus.Config{URL: e.ClientURL(), User: admin, Password: testPassword, StreamReplicas: 3, Logger: zap.NewNop()})
	if err == nil {
		b.Close()
		t.Fatal("three stream replicas on a single server: Connect succeeded")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "replicas") {
		t.Errorf("Connect: %v, want an error about the replicas", err)
	}
	connect(t, e.ClientURL()) // the default: one copy
	js := inspect(t, e.ClientURL())
	for _, name := range []string{bus.StreamName, bus.DeadLetterStream} {
		s, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 1 {
			t.Errorf("stream %s: %d replicas, want 1", name, r)
		}
	}
}

// TestPublishAcrossRestart: a publish made while the server is down returns
// once it is back (the message stored once), not at the end of its
// context. (The case the bounded attempts are for — a request in flight
// when the connection drops, its acknowledgement lost — is a race this test
// cannot force; the fault suite's nats_restart meets it.)
func TestPublishAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	e := startNATS(t, addr, dir)
	b := connect(t, e.ClientURL())
	if err := b.PublishJobEvent(t.Context(), jobEvent("job", "job.e0")); err != nil {
		t.Fatal(err)
	}
	e.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // a task's deadline: far away
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- b.PublishJobEvent(ctx, jobEvent("job", "job.e1")) }()
	time.Sleep(3 * time.Second)
	e2 := startNATS(t, addr, dir)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish across the restart: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("publish still waiting %s after the server came back", time.Since(start)-3*time.Second)
	}
	if msgs := streamInfo(t, inspect(t, e2.ClientURL())).State.Msgs; msgs != 2 {
		t.Errorf("%d messages, want 2 (the one before and the one across the restart, once)", msgs)
	}
}
