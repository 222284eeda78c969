package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgresURLEnv is the test stack's PostgreSQL server (exported by
// deploy/local/stack.sh test): a URL of a role that may create databases,
// e.g. postgres://kiln@127.0.0.1:5710/postgres.
const PostgresURLEnv = "KILN_TEST_DATABASE_URL"

// Postgres returns the URL of a new, empty database on the test stack's
// PostgreSQL (KILN_TEST_DATABASE_URL), dropped at the end of the test
// (connections still open to it are ended). The test skips without a
// PostgreSQL, or fails under `go tool task test`. Every call makes another
// database, so tests that use one may run in parallel.
func Postgres(tb testing.TB) string {
	tb.Helper()
	server := need(tb, "PostgreSQL", PostgresURLEnv)[0]
	cfg, err := pgx.ParseConfig(server)
	if err != nil {
		tb.Fatalf("%s: %v", PostgresURLEnv, err)
	}
	admin := stdlib.OpenDB(*cfg)
	tb.Cleanup(func() { _ = admin.Close() })
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		Missing(tb, "PostgreSQL at %s:%d (%s) does not answer: %v", cfg.Host, cfg.Port, PostgresURLEnv, err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "kiln_test_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() { dropDatabase(tb, admin, name) })
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		tb.Fatalf("%s must be a postgres:// URL", PostgresURLEnv)
	}
	u.Path = "/" + name
	return u.String()
}

func dropDatabase(tb testing.TB, admin *sql.DB, name string) {
	// Not tb.Context(): cleanups run after it is canceled.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(tb.Context()), 10*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil &&
		!strings.Contains(err.Error(), "does not exist") {
		tb.Errorf("drop test database %s: %v", name, err)
	}
}
