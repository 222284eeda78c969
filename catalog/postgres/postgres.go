// Package postgres opens the catalog's Store (catalog/sqlstore) on
// PostgreSQL through pgx, the store of many catalog replicas on one
// database. The schema is migrated from the embedded migrations at open,
// under an advisory lock, so replicas that start at once migrate one after
// the other.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kilnvideo/kiln/catalog/sqlstore"
	"github.com/kilnvideo/kiln/internal/sqldialect"
)

// VersionTable records the applied catalog migrations.
const VersionTable = "schema_version"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the catalog's PostgreSQL schema versions, one .sql file
// each. They are not SQLite's: each backend numbers its own.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sub
}

// Store keeps catalog state in PostgreSQL (see catalog/sqlstore). It is
// safe for concurrent use, also by several processes on one database.
type Store struct {
	*sqlstore.Store
}

// DefaultMaxConns bounds a store's connections.
const DefaultMaxConns = 10

// Config configures New.
type Config struct {
	// URL is the database, postgres://user:password@host:port/db?… (any
	// libpq connection URL or key=value string pgx parses). Required.
	URL string
	// MaxConns bounds the open connections; default DefaultMaxConns.
	MaxConns int
	// Now is the clock of record times; default time.Now.
	Now func() time.Time
}

// IsURL reports whether s names a PostgreSQL database (postgres:// or
// postgresql://) rather than a SQLite file.
func IsURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// Open connects to the database at url and migrates its schema (see New).
func Open(ctx context.Context, url string) (*Store, error) {
	return New(ctx, Config{URL: url})
}

// New connects to cfg.URL, checks the connection and migrates the schema.
// Errors never carry the URL (it may hold a password).
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("catalog: postgres: no database URL")
	}
	pc, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("catalog: postgres: invalid database URL: %w", err)
	}
	db := stdlib.OpenDB(*pc)
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	db.SetMaxOpenConns(cfg.MaxConns)
	db.SetMaxIdleConns(cfg.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("catalog: postgres %s:%d/%s: %w", pc.Host, pc.Port, pc.Database, err)
	}
	if err := sqldialect.Postgres.Migrate(ctx, db, VersionTable, Migrations()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("catalog: migrate: %w", err)
	}
	return &Store{Store: sqlstore.New(db, sqldialect.Postgres, cfg.Now)}, nil
}

var _ interface{ DB() *sql.DB } = (*Store)(nil)
