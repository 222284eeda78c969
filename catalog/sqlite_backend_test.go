package catalog_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/sqlite"
)

// The package's service and API tests run on the SQLite store.
func init() {
	catalog.OpenTestStore = func(t *testing.T, now func() time.Time) catalog.Store {
		t.Helper()
		s, err := sqlite.New(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "catalog.db"), Now: now})
		if err != nil {
			t.Fatalf("sqlite.New: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
}
