// Package sqldialect is what differs between the SQL databases the catalog
// runs on (SQLite, PostgreSQL) for code that writes its SQL once: how
// parameters are marked and how migrations are serialised between
// processes. Queries are written in SQLite's marks — "?" for the next
// argument, "?N" for argument N, ":name" for sql.Named("name", …) — and
// Bind turns them into what the database's driver takes.
package sqldialect

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/kilnvideo/kiln/internal/sqlmigrate"
)

// Dialect is a SQL database kind. The zero value is SQLite.
type Dialect int

// Dialects.
const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return "dialect(" + strconv.Itoa(int(d)) + ")"
}

// ClaimRow is the suffix of a SELECT, in a transaction, that claims the
// rows it reads until the transaction ends, skipping those another
// transaction holds: FOR UPDATE SKIP LOCKED on PostgreSQL, where several
// catalog replicas share the database. SQLite needs none: its transactions
// begin IMMEDIATE and have the database to themselves.
func (d Dialect) ClaimRow() string {
	if d == Postgres {
		return " FOR UPDATE SKIP LOCKED"
	}
	return ""
}

// Bind returns query and args as d's driver takes them. SQLite takes them
// as written. For PostgreSQL, "?" becomes "$n" (the next argument), "?N"
// becomes "$N", and ":name" becomes the position of sql.Named("name", v)
// in the returned args, which hold every named value once, in order of
// first use. Marks inside '…' string literals, "…" identifiers and "::"
// casts are left alone. A query mixes named and positional marks at its
// peril: Bind does not check.
func (d Dialect) Bind(query string, args []any) (string, []any) {
	if d != Postgres {
		return query, args
	}
	named := map[string]any{}
	for _, a := range args {
		if n, ok := a.(sql.NamedArg); ok {
			named[n.Name] = n.Value
		}
	}
	var (
		b    strings.Builder
		out  []any
		pos  = map[string]int{}
		next = 0
	)
	if len(named) == 0 {
		out = args
	}
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(query[i+1:], c)
			if j < 0 {
				b.WriteString(query[i:])
				return b.String(), out
			}
			b.WriteString(query[i : i+j+2])
			i += j + 1
		case c == ':' && i+1 < len(query) && query[i+1] == ':':
			b.WriteString("::")
			i++
		case c == ':' && len(named) > 0 && i+1 < len(query) && isIdentStart(query[i+1]):
			j := i + 1
			for j < len(query) && isIdent(query[j]) {
				j++
			}
			name := query[i+1 : j]
			v, ok := named[name]
			if !ok {
				b.WriteString(query[i:j])
				i = j - 1
				continue
			}
			p, seen := pos[name]
			if !seen {
				out = append(out, v)
				p = len(out)
				pos[name] = p
			}
			b.WriteString("$" + strconv.Itoa(p))
			i = j - 1
		case c == '?':
			j := i + 1
			for j < len(query) && query[j] >= '0' && query[j] <= '9' {
				j++
			}
			if j > i+1 { // ?N
				b.WriteString("$" + query[i+1:j])
				i = j - 1
				continue
			}
			next++
			b.WriteString("$" + strconv.Itoa(next))
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), out
}

func isIdentStart(c byte) bool { return c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isIdent(c byte) bool      { return isIdentStart(c) || (c >= '0' && c <= '9') }

// Migrate brings db to the newest of the migrations in files (see
// sqlmigrate.Apply). On PostgreSQL it holds a session advisory lock named
// after table while it does, so replicas starting at once migrate one after
// the other: the second finds the work done. SQLite's migrations are
// serialised by its single writer.
func (d Dialect) Migrate(ctx context.Context, db *sql.DB, table string, files fs.FS) error {
	if d != Postgres {
		return sqlmigrate.Apply(ctx, db, table, files)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlmigrate: %s: connect: %w", table, err)
	}
	defer conn.Close()
	key := "kiln:migrate:" + table
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtext($1))`, key); err != nil {
		return fmt.Errorf("sqlmigrate: %s: advisory lock: %w", table, err)
	}
	defer func() {
		// Not ctx: unlock even when it has ended (closing the session would
		// release the lock too, but the pool keeps it open).
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, key)
	}()
	return sqlmigrate.Apply(ctx, conn, table, files)
}

// DB is a database whose queries are written in SQLite's marks and bound
// for its dialect.
type DB struct {
	*sql.DB
	Dialect Dialect
}

// ExecContext binds query and runs it.
func (db DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	q, a := db.Dialect.Bind(query, args)
	return db.DB.ExecContext(ctx, q, a...)
}

// QueryContext binds query and runs it.
func (db DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	q, a := db.Dialect.Bind(query, args)
	return db.DB.QueryContext(ctx, q, a...)
}

// QueryRowContext binds query and runs it.
func (db DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	q, a := db.Dialect.Bind(query, args)
	return db.DB.QueryRowContext(ctx, q, a...)
}

// Tx is a transaction whose queries are bound for its dialect.
type Tx struct {
	*sql.Tx
	Dialect Dialect
}

// ExecContext binds query and runs it.
func (tx Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	q, a := tx.Dialect.Bind(query, args)
	return tx.Tx.ExecContext(ctx, q, a...)
}

// QueryContext binds query and runs it.
func (tx Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	q, a := tx.Dialect.Bind(query, args)
	return tx.Tx.QueryContext(ctx, q, a...)
}

// QueryRowContext binds query and runs it.
func (tx Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	q, a := tx.Dialect.Bind(query, args)
	return tx.Tx.QueryRowContext(ctx, q, a...)
}
