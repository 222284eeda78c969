package ingest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Idempotency of POST /v1/uploads: a request carrying an Idempotency-Key
// reserves the key, streams the file to storage while hashing it, then
// replaces the reservation with the answer (and the request's hash) for
// IdempotencyTTL. A later request with the same key hashes its body without
// storing it: the same hash gets the original answer again, another one a
// 409 idempotency_conflict, so nothing is created twice or half.
const (
	// IdempotencyHeader is the request header carrying the key.
	IdempotencyHeader = "Idempotency-Key"
	// MaxIdempotencyKey bounds the key's length, in bytes.
	MaxIdempotencyKey = 255
	// IdempotencyTTL is how long an answer is remembered.
	IdempotencyTTL = 24 * time.Hour
	// reservationTTL bounds a reservation whose holder died; a live upload
	// extends it every reservationTTL/3.
	reservationTTL = 5 * time.Minute
)

// CodeIdempotencyConflict (409): the key was used with another request, or
// its first request is still in progress.
const CodeIdempotencyConflict = "idempotency_conflict"

// IdempotencyRecord is what a key holds: a reservation (Token) while its
// first request runs, then the request's Hash and answer.
type IdempotencyRecord struct {
	Token    string          `json:"token,omitempty"`
	Hash     string          `json:"hash,omitempty"`
	Status   int             `json:"status,omitempty"`
	Response json.RawMessage `json:"response,omitempty"`
}

// Done reports whether the record holds an answer (not a reservation).
func (r IdempotencyRecord) Done() bool { return r.Hash != "" }

// IdempotencyStore remembers Idempotency-Keys (RedisIdempotency).
type IdempotencyStore interface {
	// Reserve claims key for token for ttl. When the key is taken it
	// returns the key's record instead, with reserved false.
	Reserve(ctx context.Context, key, token string, ttl time.Duration) (rec IdempotencyRecord, reserved bool, err error)
	// Extend keeps token's reservation for ttl more; false when the key is
	// no longer token's.
	Extend(ctx context.Context, key, token string, ttl time.Duration) (bool, error)
	// Complete replaces token's reservation with rec for ttl; false when the
	// key is no longer token's (nothing is written then).
	Complete(ctx context.Context, key, token string, rec IdempotencyRecord, ttl time.Duration) (bool, error)
	// Release drops token's reservation, so the key can be used again.
	Release(ctx context.Context, key, token string) error
	// Get returns the key's record; ok is false when there is none.
	Get(ctx context.Context, key string) (rec IdempotencyRecord, ok bool, err error)
}

// RedisIdempotency keeps Idempotency-Keys in Redis (go-redis client, e.g.
// tasks.NewRedisClient), one string per key under "kiln:idem:".
type RedisIdempotency struct {
	Redis redis.UniversalClient
}

var _ IdempotencyStore = (*RedisIdempotency)(nil)

func redisIdemKey(key string) string { return "kiln:idem:" + key }

const pendingPrefix = "pending:"

// ifToken runs a command on KEYS[1] only while it holds ARGV[1].
var (
	extendScript   = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)
	completeScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2]) return 1 end return 0`)
	releaseScript  = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
)

// Reserve implements IdempotencyStore.
func (s *RedisIdempotency) Reserve(ctx context.Context, key, token string, ttl time.Duration) (IdempotencyRecord, bool, error) {
	for range 3 { // the key may expire between SETNX and GET
		ok, err := s.Redis.SetNX(ctx, redisIdemKey(key), pendingPrefix+token, ttl).Result()
		if err != nil {
			return IdempotencyRecord{}, false, fmt.Errorf("ingest: idempotency reserve: %w", err)
		}
		if ok {
			return IdempotencyRecord{Token: token}, true, nil
		}
		rec, found, err := s.Get(ctx, key)
		if err != nil || found {
			return rec, false, err
		}
	}
	return IdempotencyRecord{}, false, errors.New("ingest: idempotency reserve: key keeps changing")
}

// Get implements IdempotencyStore.
func (s *RedisIdempotency) Get(ctx context.Context, key string) (IdempotencyRecord, bool, error) {
	v, err := s.Redis.Get(ctx, redisIdemKey(key)).Result()
	if errors.Is(err, redis.Nil) {
		return IdempotencyRecord{}, false, nil
	}
	if err != nil {
		return IdempotencyRecord{}, false, fmt.Errorf("ingest: idempotency get: %w", err)
	}
	if t, ok := strings.CutPrefix(v, pendingPrefix); ok {
		return IdempotencyRecord{Token: t}, true, nil
	}
	var rec IdempotencyRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return IdempotencyRecord{}, false, fmt.Errorf("ingest: idempotency record: %w", err)
	}
	return rec, true, nil
}

// Extend implements IdempotencyStore.
func (s *RedisIdempotency) Extend(ctx context.Context, key, token string, ttl time.Duration) (bool, error) {
	n, err := extendScript.Run(ctx, s.Redis, []string{redisIdemKey(key)}, pendingPrefix+token, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("ingest: idempotency extend: %w", err)
	}
	return n == 1, nil
}

// Complete implements IdempotencyStore.
func (s *RedisIdempotency) Complete(ctx context.Context, key, token string, rec IdempotencyRecord, ttl time.Duration) (bool, error) {
	rec.Token = ""
	data, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	n, err := completeScript.Run(ctx, s.Redis, []string{redisIdemKey(key)}, pendingPrefix+token, ttl.Milliseconds(), data).Int()
	if err != nil {
		return false, fmt.Errorf("ingest: idempotency complete: %w", err)
	}
	return n == 1, nil
}

// Release implements IdempotencyStore.
func (s *RedisIdempotency) Release(ctx context.Context, key, token string) error {
	if err := releaseScript.Run(ctx, s.Redis, []string{redisIdemKey(key)}, pendingPrefix+token).Err(); err != nil {
		return fmt.Errorf("ingest: idempotency release: %w", err)
	}
	return nil
}

// validIdempotencyKey: 1 to MaxIdempotencyKey printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if k == "" || len(k) > MaxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// scopedIdempotencyKey keeps keys of different API keys apart: the stored
// key is a digest of the caller and the client's key.
func scopedIdempotencyKey(caller, key string) string {
	sum := sha256.Sum256([]byte(caller + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// keepReserved extends the reservation until stop is called.
func keepReserved(ctx context.Context, store IdempotencyStore, key, token string) (stop func()) {
	return renewEvery(context.WithoutCancel(ctx), reservationTTL/3, func(ctx context.Context) {
		_, _ = store.Extend(ctx, key, token, reservationTTL)
	})
}

// renewEvery calls renew every d, in a goroutine, until stop is called
// (or ctx ends); stop returns once renew is no longer running.
func renewEvery(ctx context.Context, d time.Duration, renew func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				renew(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}
