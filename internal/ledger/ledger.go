// Package ledger keeps, in Redis, what the parts of a chunked transcode
// have done: one hash per attempt of a job, one field per part (its
// result), so that whichever part finishes last sees every other's and
// completes the job. A part writes its result once it is stored; writing
// it again (a retry) changes nothing.
package ledger

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// TTL is how long a job's ledger outlives its last write: far beyond any
// transcode, short enough that finished jobs leave nothing behind.
const TTL = 7 * 24 * time.Hour

// Ledger is the Redis-backed ledger.
type Ledger struct {
	rdb redis.UniversalClient
}

// New returns a ledger on rdb.
func New(rdb redis.UniversalClient) *Ledger { return &Ledger{rdb: rdb} }

func key(jobID string, attempt int32) string {
	return "kiln:ledger:" + jobID + ":a" + strconv.Itoa(int(max(attempt, 1)))
}

// Record writes field of the job's ledger and returns every field, as one
// transaction: of two parts recording at once, the second sees both.
func (l *Ledger) Record(ctx context.Context, jobID string, attempt int32, field string, value []byte) (map[string][]byte, error) {
	k := key(jobID, attempt)
	var all *redis.MapStringStringCmd
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k, field, value)
		p.Expire(ctx, k, TTL)
		all = p.HGetAll(ctx, k)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: record %s: %w", field, err)
	}
	return bytesOf(all.Val()), nil
}

// Read returns every field of the job's ledger (none when it has none).
func (l *Ledger) Read(ctx context.Context, jobID string, attempt int32) (map[string][]byte, error) {
	m, err := l.rdb.HGetAll(ctx, key(jobID, attempt)).Result()
	if err != nil {
		return nil, fmt.Errorf("ledger: read: %w", err)
	}
	return bytesOf(m), nil
}

func bytesOf(m map[string]string) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out
}
