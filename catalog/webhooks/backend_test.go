package webhooks

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/postgres"
	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/catalog/sqlstore"
	"github.com/kilnvideo/kiln/internal/sqldialect"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// store is what the tests need of a catalog store: sqlite.Store and
// postgres.Store.
type store interface {
	catalog.Store
	DB() *sql.DB
	Dialect() sqldialect.Dialect
	OnApply(sqlstore.ApplyHook)
	OnDelete(sqlstore.DeleteHook)
}

// backend opens a fresh, empty store of one kind, closed when t ends.
type backend func(t *testing.T) store

// backends are every store the webhook outbox runs on: the tests that
// touch the database run once on each.
var backends = []struct {
	name string
	open backend
}{
	{"sqlite", func(t *testing.T) store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "kiln.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}},
	{"postgres", func(t *testing.T) store {
		s, err := postgres.Open(t.Context(), testenv.Postgres(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}},
}

// eachBackend runs fn as a subtest per backend.
func eachBackend(t *testing.T, fn func(t *testing.T, open backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.open) })
	}
}
