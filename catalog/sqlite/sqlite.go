// Package sqlite opens the catalog's Store (catalog/sqlstore) on SQLite: one
// file in WAL mode, one writing connection with IMMEDIATE transactions, a
// pool of read-only ones for the API and playback, the schema migrated from
// the embedded migrations at open. It is the one-replica default;
// catalog/postgres is the store of many.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
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
//
// Writes go through db, one connection (SQLite has one writer); reads that
// need no transaction (Job, ListJobs, Asset, … — the API and the open
// playback routes) go through ro, a pool of read-only connections
// (sqlstore.WithReadDB): in WAL mode readers never wait for the writer, so
// playback never queues behind event application.
type Store struct {
	*sqlstore.Store
	db   *sql.DB
	ro   *sql.DB
	lock *os.File
}

// ReadConns is the size of the read-only connection pool.
const ReadConns = 8

// ErrInUse means another catalog (process or store) has the database file
// open: SQLite is the one-replica store, and two catalogs on one file would
// both dispatch its webhooks and run its reconciler. Use PostgreSQL for
// several replicas.
var ErrInUse = errors.New("catalog: sqlite database in use by another catalog")

// LockSuffix names the lock file held beside the database, path+LockSuffix.
const LockSuffix = ".lock"

// lockFile takes an exclusive, non-blocking flock on path+LockSuffix
// (created if needed); the kernel releases it when the process dies.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path+LockSuffix, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("catalog: lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (lock %s%s held); a second catalog replica needs KILN_DATABASE=postgres://…",
				ErrInUse, path, path, LockSuffix)
		}
		return nil, fmt.Errorf("catalog: lock %s: %w", path, err)
	}
	return f, nil
}

// Close closes the database (both pools) and releases its file.
func (s *Store) Close() error {
	err := s.Store.Close()
	_ = s.lock.Close() // releases the flock
	return err
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
// timeout instead of failing on lock upgrade. The store holds the file
// alone: opening a file another store holds (in this process or another)
// fails with ErrInUse.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Path == "" || strings.ContainsAny(cfg.Path, "?#") {
		return nil, fmt.Errorf("catalog: invalid sqlite path %q", cfg.Path)
	}
	lock, err := lockFile(cfg.Path)
	if err != nil {
		return nil, err
	}
	s, err := open(ctx, cfg)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

func open(ctx context.Context, cfg Config) (*Store, error) {
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
	// The read pool: query_only connections of the same file (WAL, which the
	// writer set, is a property of the file), deferred transactions.
	ro, err := sql.Open("sqlite", cfg.Path+"?_busy_timeout=5000&_foreign_keys=1&_query_only=1&_txlock=deferred")
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("catalog: open %s read-only: %w", cfg.Path, err)
	}
	ro.SetMaxOpenConns(ReadConns)
	ro.SetMaxIdleConns(ReadConns)
	if err := ro.PingContext(ctx); err != nil {
		_, _ = ro.Close(), db.Close()
		return nil, fmt.Errorf("catalog: open %s read-only: %w", cfg.Path, err)
	}
	st := sqlstore.New(db, sqldialect.SQLite, cfg.Now, sqlstore.WithReadDB(ro))
	return &Store{Store: st, db: db, ro: ro}, nil
}
