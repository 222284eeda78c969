// Package sqlite opens the catalog's Store (catalog/sqlstore) on SQLite: one
// file in WAL mode, one connection, IMMEDIATE transactions, the schema
// migrated from the embedded migrations at open. It is the one-replica
// default; catalog/postgres is the store of many.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/kilnvideo/kiln/catalog/sqlstore"
	"github.com/kilnvideo/kiln/internal/sqldialect"
)

// VersionTable records the applied catalog migrations.
const VersionTable = "schema_version"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the catalog's schema versions, one .sql file each.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sub
}

// Store keeps catalog state in SQLite (see catalog/sqlstore). It is safe
// for concurrent use.
type Store struct {
	*sqlstore.Store
	db *sql.DB
}

// ApplyHook and DeleteHook are sqlstore's hooks.
type (
	ApplyHook  = sqlstore.ApplyHook
	DeleteHook = sqlstore.DeleteHook
)

// Config configures New.
type Config struct {
	// Path is the database file. Required.
	Path string
	// Now is the clock of record times; default time.Now.
	Now func() time.Time
}

// Open opens (creating if needed) the SQLite database at path and migrates
// its schema (see New).
func Open(ctx context.Context, path string) (*Store, error) {
	return New(ctx, Config{Path: path})
}

// New opens (creating if needed) the SQLite database at cfg.Path in WAL
// mode with foreign keys on and a 5 s busy timeout, and migrates its schema.
// Transactions begin IMMEDIATE so concurrent writers queue on the busy
// timeout instead of failing on lock upgrade.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Path == "" || strings.ContainsAny(cfg.Path, "?#") {
		return nil, fmt.Errorf("catalog: invalid sqlite path %q", cfg.Path)
	}
	dsn := cfg.Path + "?_busy_timeout=5000&_journal_mode=WAL&_foreign_keys=1&_synchronous=NORMAL&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("catalog: open %s: %w", cfg.Path, err)
	}
	// SQLite has one writer; one connection serialises writes in-process and
	// keeps the per-connection PRAGMAs trivially consistent.
	db.SetMaxOpenConns(1)
	if err := sqldialect.SQLite.Migrate(ctx, db, VersionTable, Migrations()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("catalog: migrate: %w", err)
	}
	return &Store{Store: sqlstore.New(db, sqldialect.SQLite, cfg.Now), db: db}, nil
}
