package sqlmigrate

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	_ "modernc.org/sqlite"
)

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func files(sqls ...string) fstest.MapFS {
	fsys := fstest.MapFS{}
	names := []string{"0001_init.sql", "0002_more.sql", "0003_again.sql"}
	for i, s := range sqls {
		fsys[names[i]] = &fstest.MapFile{Data: []byte(s)}
	}
	return fsys
}

func tables(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	return strings.Join(names, ",")
}

func TestApply(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	v1 := files(`CREATE TABLE a (x INTEGER); CREATE TABLE b (y INTEGER);`)
	if err := Apply(ctx, db, "v", v1); err != nil {
		t.Fatal(err)
	}
	if got := tables(t, db); got != "a,b,v" {
		t.Errorf("tables = %s", got)
	}
	// Idempotent, then forward.
	if err := Apply(ctx, db, "v", v1); err != nil {
		t.Fatal(err)
	}
	v2 := files(`CREATE TABLE a (x INTEGER); CREATE TABLE b (y INTEGER);`, `ALTER TABLE a ADD COLUMN z TEXT; INSERT INTO a (x, z) VALUES (1, 'one');`)
	if err := Apply(ctx, db, "v", v2); err != nil {
		t.Fatal(err)
	}
	if v, err := Version(ctx, db, "v"); err != nil || v != 2 {
		t.Errorf("version = %d, %v", v, err)
	}
	var z string
	if err := db.QueryRowContext(ctx, `SELECT z FROM a`).Scan(&z); err != nil || z != "one" {
		t.Errorf("z = %q, %v", z, err)
	}
	// A database newer than the files is refused.
	if err := Apply(ctx, db, "v", v1); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Errorf("older binary: %v", err)
	}
	// Another version table is independent.
	if err := Apply(ctx, db, "w", files(`CREATE TABLE c (x INTEGER)`)); err != nil {
		t.Fatal(err)
	}
	if v, err := Version(ctx, db, "w"); err != nil || v != 1 {
		t.Errorf("w version = %d, %v", v, err)
	}
}

func TestApplyFailureRollsBackTheMigration(t *testing.T) {
	db := openDB(t)
	ctx := t.Context()
	bad := files(`CREATE TABLE a (x INTEGER)`, `CREATE TABLE b (y INTEGER); INSERT INTO nowhere VALUES (1);`)
	if err := Apply(ctx, db, "v", bad); err == nil {
		t.Fatal("a failing migration applied")
	}
	if v, err := Version(ctx, db, "v"); err != nil || v != 1 {
		t.Errorf("version = %d, %v; want 1", v, err)
	}
	if got := tables(t, db); got != "a,v" {
		t.Errorf("tables = %s: the failed migration was not rolled back", got)
	}
}

func TestLoadRejects(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"gap":       {"0001_a.sql": {}, "0003_c.sql": {}},
		"duplicate": {"0001_a.sql": {}, "0001_b.sql": {}},
		"from two":  {"0002_a.sql": {}},
		"bad name":  {"0001_a.sql": {}, "README.md": {}},
	} {
		if _, err := Load(fsys); err == nil {
			t.Errorf("%s: Load accepted it", name)
		}
	}
	db := openDB(t)
	if err := Apply(t.Context(), db, "v; DROP TABLE x", files(`SELECT 1`)); err == nil {
		t.Error("Apply accepted an unsafe table name")
	}
}
