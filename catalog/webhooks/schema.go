package webhooks

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/kilnvideo/kiln/internal/sqldialect"
)

// webhooks_schema_version records which of the embedded migrations (one
// .sql file per version) have run, separate from the catalog's
// schema_version so the two evolve independently in one database. Never
// edit one that has shipped: add a file.
const versionTable = "webhooks_schema_version"

// Each dialect has its own migrations, under migrations/<dialect>.
//
//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationFiles embed.FS

func migrate(ctx context.Context, db sqldialect.DB) error {
	files, err := fs.Sub(migrationFiles, "migrations/"+db.Dialect.String())
	if err != nil {
		return fmt.Errorf("webhooks: migrate: %w", err)
	}
	if err := db.Dialect.Migrate(ctx, db.DB, versionTable, files); err != nil {
		return fmt.Errorf("webhooks: migrate: %w", err)
	}
	return nil
}

func inTx(ctx context.Context, db sqldialect.DB, fn func(sqldialect.Tx) error) error {
	raw, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("webhooks: begin: %w", err)
	}
	tx := sqldialect.Tx{Tx: raw, Dialect: db.Dialect}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("webhooks: commit: %w", err)
	}
	return nil
}

// timeLayout is fixed-width UTC so stored times sort as text (the catalog's).
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) { return time.Parse(timeLayout, s) }
