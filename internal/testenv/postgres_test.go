package testenv

import (
	"database/sql"
	"net/url"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
)

// TestPostgresFreshDatabase: each call is a new, empty database, dropped
// when its test ends.
func TestPostgresFreshDatabase(t *testing.T) {
	admin, err := sql.Open("pgx", need(t, "PostgreSQL", PostgresURLEnv)[0])
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var (
		names []string
		open  []*sql.DB
	)
	defer func() {
		for _, db := range open {
			_ = db.Close()
		}
	}()
	t.Run("make", func(t *testing.T) {
		for range 2 {
			u, err := url.Parse(Postgres(t))
			if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimPrefix(u.Path, "/")
			names = append(names, name)
			db, err := sql.Open("pgx", u.String())
			if err != nil {
				t.Fatal(err)
			}
			var tables int
			if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables); err != nil || tables != 0 {
				t.Fatalf("database %s: %d tables, %v", name, tables, err)
			}
			open = append(open, db) // still connected when the test ends: the drop ends it
			if _, err := db.ExecContext(t.Context(), `CREATE TABLE t (x INT)`); err != nil {
				t.Fatal(err)
			}
		}
		if names[0] == names[1] {
			t.Fatalf("the same database twice: %s", names[0])
		}
	})
	for _, name := range names {
		var n int
		if err := admin.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil || n != 0 {
			t.Errorf("database %s still there after its test (%d, %v)", name, n, err)
		}
	}
}
