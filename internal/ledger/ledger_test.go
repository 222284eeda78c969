package ledger_test

import (
	"sync"
	"testing"

	"github.com/kilnvideo/kiln/internal/ledger"
	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestRecordSeesEveryPart: parts recording at once — the last of them
// sees all the others (the one that completes the job knows it does);
// attempts have ledgers of their own, with a TTL.
func TestRecordSeesEveryPart(t *testing.T) {
	rdb := testenv.RedisClient(t, testenv.RedisDB(t, 1))
	l := ledger.New(rdb)
	ctx := t.Context()
	const parts = 20
	var (
		mu   sync.Mutex
		full int
		wg   sync.WaitGroup
	)
	for i := range parts {
		wg.Go(func() {
			all, err := l.Record(ctx, "job1", 1, "c"+string(rune('a'+i)), []byte{byte(i)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if len(all) == parts {
				full++
			}
		})
	}
	wg.Wait()
	if full < 1 {
		t.Errorf("no part saw all %d parts recorded", parts)
	}
	all, err := l.Read(ctx, "job1", 1)
	if err != nil || len(all) != parts || all["cc"][0] != 2 {
		t.Fatalf("read: %d fields (%v), cc=%v", len(all), err, all["cc"])
	}
	if other, err := l.Read(ctx, "job1", 2); err != nil || len(other) != 0 {
		t.Errorf("attempt 2's ledger: %v, %v; want empty", other, err)
	}
	if ttl := rdb.TTL(ctx, "kiln:ledger:job1:a1").Val(); ttl <= 0 || ttl > ledger.TTL {
		t.Errorf("TTL %s, want up to %s", ttl, ledger.TTL)
	}
}
