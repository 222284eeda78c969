package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/quota"
)

// runningStates are the states of jobs that have not ended, as query
// arguments, and their placeholders.
func runningStates() ([]any, string) {
	var running []any
	for _, st := range catalog.States() {
		if !st.Terminal() {
			running = append(running, string(st))
		}
	}
	return running, strings.TrimSuffix(strings.Repeat("?, ", len(running)), ", ")
}

// TenantUsage returns what tenants use of their counted quotas (see
// catalog.Store).
func (s *Store) TenantUsage(ctx context.Context, tenant string, since time.Time) (map[string]quota.Usage, error) {
	out := map[string]quota.Usage{}
	where, args := "deleted_at IS NULL AND tenant_id <> ''", []any{}
	if tenant != "" {
		where, args = "deleted_at IS NULL AND tenant_id = ?", []any{tenant}
	}
	rows, err := s.r.QueryContext(ctx, `SELECT tenant_id, SUM(source_size) FROM jobs WHERE `+where+` GROUP BY tenant_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: usage: stored bytes: %w", err)
	}
	for rows.Next() {
		var t string
		var n int64
		if err := rows.Scan(&t, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog: usage: stored bytes: %w", err)
		}
		u := out[t]
		u.StoredBytes = n
		out[t] = u
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: usage: stored bytes: %w", err)
	}
	// Deleted or not: the encoding happened.
	where, args = "j.state = ? AND j.ready_at >= ? AND j.tenant_id <> ''", []any{string(catalog.StateReady), fmtTime(since)}
	if tenant != "" {
		where, args = "j.state = ? AND j.ready_at >= ? AND j.tenant_id = ?", []any{string(catalog.StateReady), fmtTime(since), tenant}
	}
	rows, err = s.r.QueryContext(ctx, `SELECT j.tenant_id, SUM(a.duration_seconds) FROM jobs j JOIN assets a ON a.job_id = j.id
		WHERE `+where+` GROUP BY j.tenant_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("catalog: usage: encoded seconds: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t string
		var sec float64
		if err := rows.Scan(&t, &sec); err != nil {
			return nil, fmt.Errorf("catalog: usage: encoded seconds: %w", err)
		}
		u := out[t]
		u.EncodedSeconds = sec
		out[t] = u
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: usage: encoded seconds: %w", err)
	}
	return out, nil
}

// RunningSources returns the source keys of the jobs that have not ended,
// by tenant (see catalog.Store).
func (s *Store) RunningSources(ctx context.Context) (map[string][]string, error) {
	running, marks := runningStates()
	rows, err := s.r.QueryContext(ctx, `SELECT tenant_id, source_key FROM jobs
		WHERE state IN (`+marks+`) AND deleted_at IS NULL AND tenant_id <> '' ORDER BY tenant_id, source_key`, running...)
	if err != nil {
		return nil, fmt.Errorf("catalog: running sources: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var t, k string
		if err := rows.Scan(&t, &k); err != nil {
			return nil, fmt.Errorf("catalog: running sources: %w", err)
		}
		out[t] = append(out[t], k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: running sources: %w", err)
	}
	return out, nil
}

// maxKeysPerQuery bounds the placeholders of one EndedSources query.
const maxKeysPerQuery = 500

// EndedSources returns which of keys are source keys of recorded jobs that
// ended, or were deleted (see catalog.Store).
func (s *Store) EndedSources(ctx context.Context, keys []string) ([]string, error) {
	var out []string
	for len(keys) > 0 {
		batch := keys[:min(len(keys), maxKeysPerQuery)]
		keys = keys[len(batch):]
		running, marks := runningStates()
		args := make([]any, 0, len(batch)+len(running))
		for _, k := range batch {
			args = append(args, k)
		}
		args = append(args, running...)
		rows, err := s.r.QueryContext(ctx, `SELECT DISTINCT source_key FROM jobs
			WHERE source_key IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(batch)), ", ")+`)
			AND (state NOT IN (`+marks+`) OR deleted_at IS NOT NULL) ORDER BY source_key`, args...)
		if err != nil {
			return nil, fmt.Errorf("catalog: ended sources: %w", err)
		}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return nil, fmt.Errorf("catalog: ended sources: %w", err)
			}
			out = append(out, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("catalog: ended sources: %w", err)
		}
	}
	return out, nil
}
