package sqldialect

import (
	"database/sql"
	"slices"
	"testing"
)

func TestBind(t *testing.T) {
	for _, tt := range []struct {
		query, want string
		args, out   []any
	}{
		{`SELECT a FROM t WHERE b = ? AND c = ?`, `SELECT a FROM t WHERE b = $1 AND c = $2`, []any{1, 2}, []any{1, 2}},
		{`SELECT ?1, ?2 WHERE x = ?1`, `SELECT $1, $2 WHERE x = $1`, []any{1, 2}, []any{1, 2}},
		{`UPDATE t SET a = :a, b = :b WHERE a <> :a AND s = ':a?' AND "q?" = 1 AND x::text = 'it''s'`,
			`UPDATE t SET a = $1, b = $2 WHERE a <> $1 AND s = ':a?' AND "q?" = 1 AND x::text = 'it''s'`,
			[]any{sql.Named("b", 2), sql.Named("a", 1)}, []any{1, 2}},
		{`SELECT 'unterminated ?`, `SELECT 'unterminated ?`, nil, nil},
	} {
		got, out := Postgres.Bind(tt.query, tt.args)
		if got != tt.want || !slices.Equal(out, tt.out) {
			t.Errorf("Bind(%q)\n = %q %v\nwant %q %v", tt.query, got, out, tt.want, tt.out)
		}
		if q, a := SQLite.Bind(tt.query, tt.args); q != tt.query || !slices.Equal(a, tt.args) {
			t.Errorf("SQLite.Bind changed %q", tt.query)
		}
	}
}
