package webhooks

import (
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/internal/tenant"
)

// TestSchemaOfOldBinary: a database whose webhook tables the previous binary
// created (webhooks_schema_version 1) keeps working; a newer one is refused.
func TestSchemaOfOldBinary(t *testing.T) { eachBackend(t, testSchemaOfOldBinary) }

func testSchemaOfOldBinary(t *testing.T, open backend) {
	store := open(t)
	db, d, ctx := store.DB(), store.Dialect(), t.Context()
	b, err := migrationFiles.ReadFile("migrations/" + d.String() + "/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{`CREATE TABLE IF NOT EXISTS webhooks_schema_version (version INTEGER PRIMARY KEY)`}
	for _, s := range strings.Split(string(b), ";") {
		if strings.TrimSpace(s) != "" {
			stmts = append(stmts, s) // one by one, as the old binary ran them
		}
	}
	stmts = append(stmts, `INSERT INTO webhooks_schema_version (version) VALUES (1)`,
		`INSERT INTO webhook_endpoints (id, url, event_types, created_at, updated_at)
			VALUES ('we_old', 'https://example.com/hook', 'job.ready', '2025-01-01T00:00:00.000000000Z', '2025-01-01T00:00:00.000000000Z')`)
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if _, err := New(ctx, Config{DB: db, Dialect: d}); err != nil {
		t.Fatalf("New on the old schema: %v", err)
	}
	var n, v int
	if err := db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM webhook_endpoints), (SELECT MAX(version) FROM webhooks_schema_version)`).
		Scan(&n, &v); err != nil || n != 1 || v != 4 {
		t.Fatalf("endpoints %d, version %d, %v", n, v, err)
	}
	var owner string
	if err := db.QueryRowContext(ctx, `SELECT tenant_id FROM webhook_endpoints WHERE id = 'we_old'`).Scan(&owner); err != nil || owner != tenant.Default {
		t.Fatalf("the old endpoint's tenant is %q (%v), want the default tenant's", owner, err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO webhooks_schema_version (version) VALUES (5)`); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, Config{DB: db, Dialect: d}); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("New on a newer schema: %v", err)
	}
}
