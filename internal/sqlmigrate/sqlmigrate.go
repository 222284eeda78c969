// Package sqlmigrate applies versioned schema migrations to a SQL database.
// A migration is one file "NNNN_name.sql" (NNNN its version, from 1 with no
// gaps) of statements separated by ";"; a version table records which have
// run. Migrations that have shipped are never edited: a change is a new file.
package sqlmigrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
)

var (
	fileName  = regexp.MustCompile(`^([0-9]{4})_[a-z0-9_]+\.sql$`)
	tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

// Migration is one version of a schema.
type Migration struct {
	Version int
	Name    string // the file name
	SQL     string
}

// Load reads the migrations in the root of files, ordered by version. Other
// files are an error, and so are gaps and duplicate versions.
func Load(files fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, fmt.Errorf("sqlmigrate: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			return nil, fmt.Errorf("sqlmigrate: %q is not a migration file (NNNN_name.sql)", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(files, e.Name())
		if err != nil {
			return nil, fmt.Errorf("sqlmigrate: %w", err)
		}
		out = append(out, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("sqlmigrate: %s: want version %d (versions start at 1, without gaps or repeats)", m.Name, i+1)
		}
	}
	return out, nil
}

// Apply brings db to the newest version of the migrations in files. The
// version table (created if needed) has one row per applied version; each
// pending migration runs in a transaction of its own together with its row,
// so a failed one leaves the database at the version before it. A database
// whose version is newer than files' newest is refused: this binary does not
// know its schema.
//
// The statements Apply itself issues need no placeholders, so it works with
// any driver whose Exec runs several statements (SQLite, PostgreSQL).
func Apply(ctx context.Context, db Conn, table string, files fs.FS) error {
	if !tableName.MatchString(table) {
		return fmt.Errorf("sqlmigrate: invalid version table name %q", table)
	}
	migrations, err := Load(files)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (version INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("sqlmigrate: %s: %w", table, err)
	}
	v, err := Version(ctx, db, table)
	if err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("sqlmigrate: %s: database schema version %d is newer than this binary (%d)", table, v, len(migrations))
	}
	for _, m := range migrations[v:] {
		if err := apply(ctx, db, table, m); err != nil {
			return err
		}
	}
	return nil
}

// Conn is what Apply needs of a database: *sql.DB, or one *sql.Conn of it
// (so that a session lock taken on that connection is held throughout).
type Conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

var (
	_ Conn = (*sql.DB)(nil)
	_ Conn = (*sql.Conn)(nil)
)

// Version is the newest version recorded in table (0 for none).
func Version(ctx context.Context, db interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, table string) (int, error) {
	if !tableName.MatchString(table) {
		return 0, fmt.Errorf("sqlmigrate: invalid version table name %q", table)
	}
	var v int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM `+table).Scan(&v); err != nil {
		return 0, fmt.Errorf("sqlmigrate: %s: read version: %w", table, err)
	}
	return v, nil
}

func apply(ctx context.Context, db Conn, table string, m Migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlmigrate: %s: begin: %w", m.Name, err)
	}
	defer func() { _ = tx.Rollback() }()
	// Another process may have migrated since the version was read.
	v, err := Version(ctx, tx, table)
	if err != nil {
		return err
	}
	if v >= m.Version {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("sqlmigrate: %s: migrate to version %d: %w", table, m.Version, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (version) VALUES (`+strconv.Itoa(m.Version)+`)`); err != nil {
		return fmt.Errorf("sqlmigrate: %s: record version %d: %w", table, m.Version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlmigrate: %s: commit version %d: %w", table, m.Version, err)
	}
	return nil
}
