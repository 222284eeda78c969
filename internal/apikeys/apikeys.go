// Package apikeys is the directory of API keys created through the tenant
// API, on Redis, where every HTTP role reads it: the catalog, which keeps
// the keys in its database (digests only), mirrors each key record here
// when it creates or revokes one (and all of them when it starts), and
// httpapi.Keys looks a bearer key's SHA-256 digest up here (with a short
// cache) when it is not one of KILN_API_KEYS. Ingest has no database: this
// is how it knows a key the catalog made.
//
// Layout: one hash, Key, whose fields are hex SHA-256 digests and whose
// values are the JSON of httpapi.KeyRecord. A revoked key's field is gone.
package apikeys

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/kilnvideo/kiln/internal/httpapi"
)

// Key is the Redis hash of the directory.
const Key = "kiln:api-keys"

// Directory is the key directory on Redis.
type Directory struct {
	Redis redis.UniversalClient
}

var _ httpapi.KeyDirectory = (*Directory)(nil)

// LookupKey returns the record of the key whose secret has digest d.
func (d *Directory) LookupKey(ctx context.Context, digest [sha256.Size]byte) (httpapi.KeyRecord, bool, error) {
	v, err := d.Redis.HGet(ctx, Key, hex.EncodeToString(digest[:])).Result()
	if errors.Is(err, redis.Nil) {
		return httpapi.KeyRecord{}, false, nil
	}
	if err != nil {
		return httpapi.KeyRecord{}, false, fmt.Errorf("apikeys: lookup: %w", err)
	}
	var rec httpapi.KeyRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return httpapi.KeyRecord{}, false, fmt.Errorf("apikeys: lookup: %w", err)
	}
	return rec, true, nil
}

// Put records (or replaces) the key of digest hexDigest.
func (d *Directory) Put(ctx context.Context, hexDigest string, rec httpapi.KeyRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("apikeys: put: %w", err)
	}
	if err := d.Redis.HSet(ctx, Key, hexDigest, b).Err(); err != nil {
		return fmt.Errorf("apikeys: put: %w", err)
	}
	return nil
}

// Remove drops the keys of these digests (revoked): removing an absent one
// is not an error.
func (d *Directory) Remove(ctx context.Context, hexDigests ...string) error {
	if len(hexDigests) == 0 {
		return nil
	}
	if err := d.Redis.HDel(ctx, Key, hexDigests...).Err(); err != nil {
		return fmt.Errorf("apikeys: remove: %w", err)
	}
	return nil
}

// Replace makes the directory exactly keys (hex digest → record),
// atomically: what the catalog, the keys' owner, does when it starts.
func (d *Directory) Replace(ctx context.Context, keys map[string]httpapi.KeyRecord) error {
	_, err := d.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, Key)
		for digest, rec := range keys {
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			p.HSet(ctx, Key, digest, b)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apikeys: replace: %w", err)
	}
	return nil
}
