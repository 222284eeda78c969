package catalog

import (
	"database/sql"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/sqldialect"
)

// OpenTestStore opens a fresh store for the package's tests, whose record
// clock is now (time.Now when nil). The tests cannot import a backend
// (it imports catalog): sqlite_backend_test.go, in package catalog_test,
// sets it.
var OpenTestStore func(t *testing.T, now func() time.Time) Store

func newStoreAt(t *testing.T, now func() time.Time) Store {
	t.Helper()
	if OpenTestStore == nil {
		t.Fatal("no test store backend registered")
	}
	return OpenTestStore(t, now)
}

func newStore(t *testing.T) Store { t.Helper(); return newStoreAt(t, nil) }

// dbOf is the SQL database of a SQL store, binding queries written in
// SQLite's marks for the store's dialect, for tests that reach past the
// Store interface.
func dbOf(t *testing.T, s Store) sqldialect.DB {
	t.Helper()
	d, ok := s.(interface {
		DB() *sql.DB
		Dialect() sqldialect.Dialect
	})
	if !ok {
		t.Fatalf("store %T has no SQL database", s)
	}
	return sqldialect.DB{DB: d.DB(), Dialect: d.Dialect()}
}

// MaxRetryDelay is the reconciler's bound on one tasks.RetryDelay.
const MaxRetryDelay = maxRetryDelay
