package bus_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func TestEmbeddedRequiresUsers(t *testing.T) {
	for name, users := range map[string][]bus.User{
		"no user":        nil,
		"short password": {{Name: bus.UserWorker, Password: "short"}},
		"no name":        {{Password: testPassword}},
	} {
		e, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Users: users})
		if err == nil {
			e.Shutdown()
			t.Errorf("%s: StartEmbedded = nil error", name)
		}
	}
}

// TestEmbeddedRefusesStrangers: without credentials, or with wrong ones,
// nobody connects, and Connect says so at once instead of retrying until
// its context ends.
func TestEmbeddedRefusesStrangers(t *testing.T) {
	e := startNATS(t, "127.0.0.1:-1", t.TempDir())
	if nc, err := nats.Connect(e.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("anonymous connection accepted")
	}
	for name, cfg := range map[string]bus.Config{
		"no credentials": {},
		"wrong password": {User: bus.UserCatalog, Password: "wrong-password-0123456789"},
		"unknown user":   {User: "mallory", Password: testPassword},
		"token":          {Token: testPassword},
	} {
		cfg.URL, cfg.Logger = e.ClientURL(), zap.NewNop()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		start := time.Now()
		b, err := bus.Connect(ctx, cfg)
		cancel()
		if err == nil {
			b.Close()
			t.Errorf("%s: Connect = nil error", name)
			continue
		}
		if !errors.Is(err, nats.ErrAuthorization) || time.Since(start) > 10*time.Second {
			t.Errorf("%s: Connect = %v after %s, want an authorization error at once", name, err, time.Since(start))
		}
	}
}

func TestConfigCredentialsChecked(t *testing.T) {
	for name, cfg := range map[string]bus.Config{
		"user without password":  {User: "u"},
		"password without user":  {Password: "p"},
		"user and token":         {User: "u", Password: "p", Token: "t"},
		"token and creds":        {Token: "t", CredsFile: "/x.creds"},
		"cert without key":       {CertFile: "/c.pem"},
		"key without cert":       {KeyFile: "/k.pem"},
		"creds file and a user":  {User: "u", Password: "p", CredsFile: "/x.creds"},
		"unreadable creds file":  {CredsFile: "/nonexistent/kiln.creds"},
		"unreadable CA":          {CAFile: "/nonexistent/ca.pem"},
		"unreadable client cert": {CertFile: "/nonexistent/c.pem", KeyFile: "/nonexistent/k.pem"},
	} {
		cfg.URL = "nats://" + testenv.FreeAddr(t)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		b, err := bus.Connect(ctx, cfg)
		cancel()
		if err == nil {
			b.Close()
			t.Errorf("%s: Connect = nil error", name)
		} else if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: Connect waited for a server instead of refusing the configuration: %v", name, err)
		}
	}
}

// roleConn connects as user the way a kiln process does (its inbox
// prefix; the worker waits for the streams).
func roleConn(t *testing.T, url, user string) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := bus.Connect(ctx, bus.Config{URL: url, Name: user, User: user, Password: testPassword,
		InboxPrefix: bus.InboxPrefix(user), WaitForStreams: user == bus.UserWorker, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("Connect as %s: %v", user, err)
	}
	t.Cleanup(b.Close)
	return b
}

// rawConn is a plain connection as user that records the server's
// asynchronous errors (permission violations).
type rawConn struct {
	*nats.Conn
	mu   sync.Mutex
	errs []string
}

func dialRaw(t *testing.T, url, user string, opts ...nats.Option) *rawConn {
	t.Helper()
	rc := &rawConn{}
	opts = append(opts, nats.UserInfo(user, testPassword), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.errs = append(rc.errs, err.Error())
	}))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	rc.Conn = nc
	return rc
}

// violated waits until the server reported a permissions violation on
// subject.
func (rc *rawConn) violated(t *testing.T, op, subject string) {
	t.Helper()
	waitFor(t, 5*time.Second, "a permissions violation for "+op+" "+subject, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return slices.ContainsFunc(rc.errs, func(e string) bool {
			return strings.Contains(e, "Permissions Violation for "+op) && strings.Contains(e, subject)
		})
	})
}

func subjectCount(t *testing.T, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// TestRolePermissions runs each role's traffic under its own user (as the
// embedded server of kiln serve and deploy/nats/nats-server.conf define
// them) and checks that what a role must not do is refused: a worker
// cannot publish "object landed" or bucket notifications, nor manage
// streams or consumers, nor read anyone's messages; the object store can
// only publish bucket notifications.
func TestRolePermissions(t *testing.T) {
	e := startNATS(t, "127.0.0.1:-1", t.TempDir())
	url := e.ClientURL()
	js := inspect(t, url) // admin

	// The worker waits for the stream ingest or the catalog creates.
	workerUp := make(chan *bus.Bus, 1)
	go func() {
		b, err := bus.Connect(t.Context(), bus.Config{URL: url, User: bus.UserWorker, Password: testPassword,
			InboxPrefix: bus.InboxPrefix(bus.UserWorker), WaitForStreams: true, Logger: zap.NewNop()})
		if err != nil {
			t.Error(err)
		}
		workerUp <- b
	}()
	time.Sleep(300 * time.Millisecond)
	ingest := roleConn(t, url, bus.UserIngest)
	catalog := roleConn(t, url, bus.UserCatalog)
	var worker *bus.Bus
	select {
	case worker = <-workerUp:
		if worker == nil {
			t.FailNow()
		}
		t.Cleanup(worker.Close)
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not connect once the stream existed")
	}

	// What each role does.
	ctx := t.Context()
	landed := &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "uploads/a.mp4", Etag: "e"}}
	if err := ingest.PublishObjectLanded(ctx, landed); err != nil {
		t.Errorf("ingest: publish object landed: %v", err)
	}
	if err := ingest.PublishJobEvent(ctx, jobEvent("job_a", "queued")); err != nil {
		t.Errorf("ingest: publish queued: %v", err)
	}
	if err := worker.PublishJobEvent(ctx, jobEvent("job_a", "probing")); err != nil {
		t.Errorf("worker: publish job event: %v", err)
	}
	if err := catalog.PublishJobEvent(ctx, jobEvent("job_a", "canceled")); err != nil {
		t.Errorf("catalog: publish job event: %v", err)
	}
	if err := catalog.PublishObjectLanded(ctx, &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "uploads/b.mp4", Etag: "e"}}); err != nil {
		t.Errorf("catalog (reconciler): publish object landed: %v", err)
	}
	notify := dialRaw(t, url, bus.UserNotify)
	notifyJS, err := jetstream.New(notify.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := notifyJS.Publish(ctx, bus.SubjectS3Events, []byte(`{"Records":[]}`)); err != nil {
		t.Errorf("notify: publish bucket notification (JetStream, default inbox): %v", err)
	}

	// Ingest consumes landed objects and dead-letters one; the catalog
	// consumes job events, then lists and replays ingest's dead letter.
	var mu sync.Mutex
	var ingestGot, catalogGot []string
	runConsume(t, ingest, bus.ConsumerConfig{Durable: "ingest", Subjects: []string{bus.SubjectObjectLanded, bus.SubjectS3Events}},
		func(_ context.Context, subject string, _ []byte) error {
			mu.Lock()
			defer mu.Unlock()
			ingestGot = append(ingestGot, subject)
			if subject == bus.SubjectS3Events {
				return bus.ErrPermanent
			}
			return nil
		})
	runConsume(t, catalog, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}},
		func(_ context.Context, subject string, _ []byte) error {
			mu.Lock()
			defer mu.Unlock()
			catalogGot = append(catalogGot, subject)
			return nil
		})
	waitFor(t, 15*time.Second, "both consumers' messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ingestGot) == 3 && len(catalogGot) == 3
	})
	var page []bus.DeadLetter
	waitFor(t, 10*time.Second, "ingest's dead letter", func() bool {
		page, _, err = catalog.DeadLetters(ctx, bus.DeadLetterQuery{Limit: 10})
		return err == nil && len(page) == 1
	})
	if counts, err := catalog.DeadLetterCounts(ctx); err != nil || counts["ingest"] != 1 {
		t.Errorf("catalog: dead letter counts = %v, %v", counts, err)
	}
	if _, err := catalog.ReplayDeadLetter(ctx, page[0].Seq); err != nil {
		t.Errorf("catalog: replay a bucket notification's dead letter: %v", err)
	}
	waitFor(t, 10*time.Second, "the replayed notification back at ingest", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ingestGot) == 4 && ingestGot[3] == bus.SubjectS3Events
	})
	if _, err := ingest.DeadLetterCounts(ctx); err != nil {
		t.Errorf("ingest: dead letter counts (its /metrics): %v", err)
	}

	// What a worker must not do.
	before := subjectCount(t, js, bus.StreamName, bus.SubjectObjectLanded)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := worker.PublishObjectLanded(short, landed); err == nil {
		t.Error("worker: publish object landed accepted")
	}
	w := dialRaw(t, url, bus.UserWorker, nats.CustomInboxPrefix(bus.InboxPrefix(bus.UserWorker)))
	if err := w.Publish(bus.SubjectObjectLanded, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	w.violated(t, "Publish", bus.SubjectObjectLanded)
	for _, subject := range []string{bus.SubjectS3Events, bus.DeadLetterSubject("catalog"), bus.DeadLetterSubject("ingest"),
		"$JS.API.STREAM.DELETE." + bus.StreamName, "$JS.API.STREAM.PURGE." + bus.StreamName,
		"$JS.API.STREAM.UPDATE." + bus.StreamName, "$JS.API.CONSUMER.CREATE." + bus.StreamName + ".ingest",
		"$JS.API.CONSUMER.DELETE." + bus.StreamName + ".catalog", "$JS.API.CONSUMER.MSG.NEXT." + bus.StreamName + ".catalog",
		"$JS.API.STREAM.MSG.GET." + bus.StreamName} {
		if err := w.Publish(subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		w.violated(t, "Publish", subject)
	}
	for _, subject := range []string{"kiln.>", bus.SubjectJobs, "_INBOX.>", bus.InboxPrefix(bus.UserCatalog) + ".>", ">"} {
		if _, err := w.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		w.violated(t, "Subscription", subject)
	}
	if n := subjectCount(t, js, bus.StreamName, bus.SubjectObjectLanded); n != before {
		t.Errorf("object landed messages %d → %d after the worker's attempts", before, n)
	}

	// The object store publishes bucket notifications only; ingest no
	// other consumer's dead letters.
	for _, subject := range []string{bus.SubjectObjectLanded, bus.JobSubject("job_a")} {
		if err := notify.Publish(subject, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		notify.violated(t, "Publish", subject)
	}
	in := dialRaw(t, url, bus.UserIngest, nats.CustomInboxPrefix(bus.InboxPrefix(bus.UserIngest)))
	for _, subject := range []string{bus.DeadLetterSubject("catalog"), "$JS.API.STREAM.MSG.DELETE." + bus.DeadLetterStream,
		"$JS.API.CONSUMER.MSG.NEXT." + bus.StreamName + ".catalog"} {
		if err := in.Publish(subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		in.violated(t, "Publish", subject)
	}
}

// TestServePermissionsCoverEveryRole: the all-in-one user may publish what
// each role may (kiln serve runs them on one connection), and every role
// subscribes under its own inbox only — the catalog and serve also to the
// replicas' job change notices.
func TestServePermissionsCoverEveryRole(t *testing.T) {
	serve, ok := bus.Permissions(bus.UserServe)
	if !ok {
		t.Fatal("no permission for serve")
	}
	for _, u := range bus.Users {
		p, ok := bus.Permissions(u)
		if !ok || len(p.Publish) == 0 {
			t.Fatalf("%s: no permission", u)
		}
		want := []string{bus.InboxPrefix(u) + ".>"}
		if u == bus.UserCatalog || u == bus.UserServe {
			want = append(want, "kiln_changes.*")
		}
		if !slices.Equal(p.Subscribe, want) {
			t.Errorf("%s subscribes to %v, want %v", u, p.Subscribe, want)
		}
		if u == bus.UserNotify || u == bus.UserServe {
			continue
		}
		for _, s := range p.Publish {
			if !slices.Contains(serve.Publish, s) {
				t.Errorf("serve may not publish %s, which %s may", s, u)
			}
		}
	}
	if _, ok := bus.Permissions("mallory"); ok {
		t.Error("a permission for an unknown user")
	}
}

// TestJobChangesBetweenReplicas: a catalog replica's change notice reaches
// every replica (itself included), and a worker may neither send nor hear
// one.
func TestJobChangesBetweenReplicas(t *testing.T) {
	e := startNATS(t, "127.0.0.1:-1", t.TempDir())
	a, b := roleConn(t, e.ClientURL(), bus.UserCatalog), roleConn(t, e.ClientURL(), bus.UserCatalog)
	type notice struct {
		replica int
		job     string
	}
	heard := make(chan notice, 64)
	for i, r := range []*bus.Bus{a, b} {
		go func() {
			_ = r.JobChanges(t.Context(), func(id string) {
				select {
				case heard <- notice{i, id}:
				default:
				}
			})
		}()
	}
	w := dialRaw(t, e.ClientURL(), bus.UserWorker, nats.CustomInboxPrefix(bus.InboxPrefix(bus.UserWorker)))
	if _, err := w.Subscribe("kiln_changes.*", func(*nats.Msg) { t.Error("a worker heard a change notice") }); err != nil {
		t.Fatal(err)
	}
	w.violated(t, "Subscription", "kiln_changes.*")
	if err := w.Publish("kiln_changes.job_forged", nil); err != nil {
		t.Fatal(err)
	}
	w.violated(t, "Publish", "kiln_changes.job_forged")

	deadline := time.After(10 * time.Second)
	got := map[int]bool{}
	for len(got) < 2 { // the subscriptions may take a moment: announce until both heard it
		if err := a.AnnounceJobChange("job_a"); err != nil {
			t.Fatal(err)
		}
		select {
		case n := <-heard:
			if n.job != "job_a" {
				t.Fatalf("replica %d heard %q, want job_a", n.replica, n.job)
			}
			got[n.replica] = true
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("the replicas did not hear the change within 10 s")
		}
	}
	if err := a.AnnounceJobChange("job.a"); err == nil {
		t.Error("a job id with a dot announced")
	}
}
