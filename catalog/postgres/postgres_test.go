package postgres

import (
	"strings"
	"sync"
	"testing"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/catalog/storetest"
	"github.com/kilnvideo/kiln/internal/sqlmigrate"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func openStore(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestContract runs the suite every Store passes, each subtest on a
// database of its own.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) catalog.Store { return openStore(t, testenv.Postgres(t)) })
}

// TestReplicasStartAtOnce: replicas opening one empty database at the same
// moment all start, and the schema is migrated once (the advisory lock);
// without it they race on CREATE TABLE and the version rows.
func TestReplicasStartAtOnce(t *testing.T) {
	url := testenv.Postgres(t)
	const replicas = 8
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		stores []*Store
		errs   []error
		start  = make(chan struct{})
	)
	for range replicas {
		wg.Go(func() {
			<-start
			s, err := Open(t.Context(), url)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			stores = append(stores, s)
		})
	}
	close(start)
	wg.Wait()
	for _, s := range stores {
		t.Cleanup(func() { _ = s.Close() })
	}
	if len(errs) > 0 {
		t.Fatalf("%d of %d replicas failed to start, first: %v", len(errs), replicas, errs[0])
	}
	migrations, err := sqlmigrate.Load(Migrations())
	if err != nil {
		t.Fatal(err)
	}
	var rows, newest int
	if err := stores[0].DB().QueryRowContext(t.Context(), `SELECT COUNT(*), MAX(version) FROM `+VersionTable).Scan(&rows, &newest); err != nil {
		t.Fatal(err)
	}
	if rows != len(migrations) || newest != len(migrations) {
		t.Fatalf("version table: %d rows, newest %d; want %d of each", rows, newest, len(migrations))
	}
	// Every replica works on the one schema.
	id, _ := eventtest.Job("replicas")
	if _, err := stores[1].Apply(t.Context(), eventtest.Event(id, kilnv1.JobState_JOB_STATE_QUEUED, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[replicas-1].Job(t.Context(), id); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentEventsOfOneJob: replicas applying the events of one job at
// once (a job's first event included, which has no row to lock yet) keep
// what the state machine says: one of the repeated QUEUED events creates
// the job, and the job ends ready.
func TestConcurrentEventsOfOneJob(t *testing.T) {
	url := testenv.Postgres(t)
	a, b := openStore(t, url), openStore(t, url)
	for i := range 20 {
		id, _ := eventtest.Job("race" + strings.Repeat("x", i))
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
			errs    []error
		)
		for _, s := range []*Store{a, b, a, b} {
			wg.Go(func() {
				changed, err := s.Apply(t.Context(), eventtest.Event(id, kilnv1.JobState_JOB_STATE_QUEUED, 0))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				if changed {
					created++
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 || created != 1 {
			t.Fatalf("job %d: %d of 4 concurrent QUEUED changed it (want 1), errors %v", i, created, errs)
		}
	}
}

func TestNewerDatabaseRefused(t *testing.T) {
	url := testenv.Postgres(t)
	s := openStore(t, url)
	if _, err := s.DB().ExecContext(t.Context(), `INSERT INTO schema_version (version) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), url); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("a database newer than the binary: %v", err)
	}
}

func TestBadURL(t *testing.T) {
	for _, u := range []string{"", "postgres://kiln:secret@127.0.0.1:1/none?sslmode=disable&connect_timeout=1"} {
		_, err := Open(t.Context(), u)
		if err == nil {
			t.Fatalf("Open(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

func TestIsURL(t *testing.T) {
	for s, want := range map[string]bool{
		"postgres://h/db": true, "postgresql://h/db": true, "POSTGRES://h/db": true,
		"/var/lib/kiln/catalog.db": false, "catalog.db": false, "postgres.db": false,
	} {
		if IsURL(s) != want {
			t.Errorf("IsURL(%q) = %v", s, !want)
		}
	}
}
