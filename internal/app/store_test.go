package app

import (
	"path/filepath"
	"testing"

	"github.com/kilnvideo/kiln/catalog/postgres"
	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestOpenStoreByDatabase: KILN_DATABASE=postgres://… (or postgresql://)
// selects PostgreSQL, a file path SQLite.
func TestOpenStoreByDatabase(t *testing.T) {
	s, err := openStore(t.Context(), filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, ok := s.(*sqlite.Store); !ok {
		t.Errorf("a file path opened %T", s)
	}
	u := testenv.Postgres(t)
	for _, url := range []string{u, "postgresql" + u[len("postgres"):]} {
		s, err := openStore(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if _, ok := s.(*postgres.Store); !ok {
			t.Errorf("%s opened %T", url[:len("postgresql")], s)
		}
	}
}
