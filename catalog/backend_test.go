package catalog_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/postgres"
	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// BackendEnv picks the store the package's service and API tests run on:
// "postgres" for a fresh database of the test stack's PostgreSQL, else
// SQLite. `go tool task test` runs them once on each.
const BackendEnv = "KILN_TEST_CATALOG_BACKEND"

func init() {
	catalog.OpenTestStore = func(t *testing.T, now func() time.Time) catalog.Store {
		t.Helper()
		var (
			s   catalog.Store
			err error
		)
		if os.Getenv(BackendEnv) == "postgres" {
			s, err = postgres.New(t.Context(), postgres.Config{URL: testenv.Postgres(t), Now: now})
		} else {
			s, err = sqlite.New(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "catalog.db"), Now: now})
		}
		if err != nil {
			t.Fatalf("open the test store: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}
