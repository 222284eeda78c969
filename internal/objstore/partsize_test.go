package objstore

import "testing"

func TestPartSizeFor(t *testing.T) {
	for _, tt := range []struct {
		max  int64
		want uint64
	}{
		{0, MinPartSize},
		{10 << 30, MinPartSize}, // 10 GiB: 1.07 MiB parts would do
		{48 << 30, MinPartSize}, // 4.9 MiB a part
		{50 << 30, 6 << 20},     // 5.12 MiB: the next MiB
		{1 << 40, 105 << 20},    // 1 TiB: 104.9 MiB
		{5 << 40, 525 << 20},    // S3's 5 TiB object limit
	} {
		got := PartSizeFor(tt.max)
		if got != tt.want {
			t.Errorf("PartSizeFor(%d) = %d MiB, want %d MiB", tt.max, got>>20, tt.want>>20)
		}
		if int64(got)*maxParts < tt.max {
			t.Errorf("PartSizeFor(%d): %d parts of %d do not hold it", tt.max, maxParts, got)
		}
	}
}
