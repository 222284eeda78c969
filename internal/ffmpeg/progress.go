package ffmpeg

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Progress is one block of ffmpeg -progress output.
type Progress struct {
	Frame   int64
	FPS     float64
	OutTime time.Duration // from out_time_us (out_time_ms is also µs in ffmpeg 5); negative → 0
	Speed   float64       // "1.5x" → 1.5; "N/A" → 0
	Done    bool          // progress=end
}

// maxProgressLine bounds a single key=value line; ffmpeg's are tiny.
const maxProgressLine = 64 << 10

// ParseProgress reads ffmpeg -progress key=value blocks from r and calls fn
// once per block; a block ends at a "progress=" line. Unknown keys and
// malformed lines are ignored, unparsable values read as zero. It returns
// at EOF with nil, or with the read error (including bufio.ErrTooLong for
// an absurdly long line).
func ParseProgress(r io.Reader, fn func(Progress)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxProgressLine)
	var (
		p      Progress
		haveUs bool // out_time_us seen in this block; it wins over out_time_ms
	)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "frame":
			p.Frame = max(parseInt(val), 0)
		case "fps":
			p.FPS = parseFloat(val)
		case "out_time_us":
			p.OutTime, haveUs = micros(parseInt(val)), true
		case "out_time_ms": // misnamed: microseconds too
			if !haveUs {
				p.OutTime = micros(parseInt(val))
			}
		case "speed":
			p.Speed = parseFloat(strings.TrimSuffix(val, "x"))
		case "progress":
			p.Done = val == "end"
			fn(p)
			p, haveUs = Progress{}, false
		}
	}
	return sc.Err()
}

// micros converts microseconds to a Duration, clamping negatives (ffmpeg
// reports large negative values before the first packet) and overflow.
func micros(us int64) time.Duration {
	switch {
	case us <= 0:
		return 0
	case us > math.MaxInt64/int64(time.Microsecond):
		return math.MaxInt64
	}
	return time.Duration(us) * time.Microsecond
}

// parseInt parses a decimal integer, 0 on failure ("N/A", empty, …).
func parseInt(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// parseFloat parses a finite float, 0 on failure or NaN/Inf.
func parseFloat(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
