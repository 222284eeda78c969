// Package playlist writes HLS master playlists. It is the one writer of
// kiln's master playlist: the catalog serves it from its own state, tests and
// tools render it from packaged renditions.
package playlist

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ContentType is the media type of HLS playlists.
const ContentType = "application/vnd.apple.mpegurl"

// Variant is one EXT-X-STREAM-INF of a master playlist.
type Variant struct {
	// Name is the rendition name; the variant's URI is "<Name>/index.m3u8".
	// It must be URL-safe.
	Name string
	// Width and Height are the picture size; 0 for audio only.
	Width, Height int
	// FrameRate in frames per second; 0 for audio only.
	FrameRate float64
	// Bandwidth is the peak segment bit rate, AverageBandwidth the average,
	// in bit/s.
	Bandwidth, AverageBandwidth int64
	// Codecs is the RFC 6381 codecs list; it must be attribute-safe (no
	// quote).
	Codecs string
}

// Master renders the HLS master playlist of variants: version 7,
// independent segments, one EXT-X-STREAM-INF per variant with measured
// BANDWIDTH and AVERAGE-BANDWIDTH, CODECS, RESOLUTION and FRAME-RATE,
// ordered by bandwidth (lowest first, so a player that starts with the first
// variant starts fast), URIs "<name>/index.m3u8".
//
// It is written by hand rather than with github.com/grafov/m3u8 (which the
// tests use to parse it back): that library always emits PROGRAM-ID, an
// attribute removed in protocol version 6, and caps BANDWIDTH at uint32.
// Callers must pass variants whose names and codecs are URL- and
// attribute-safe (the packager makes them; the catalog validates them).
func Master(variants []Variant) []byte {
	vs := slices.SortedStableFunc(slices.Values(variants), func(a, b Variant) int {
		return cmp.Compare(a.Bandwidth, b.Bandwidth)
	})
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	for _, v := range vs {
		fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%d", v.Bandwidth)
		if v.AverageBandwidth > 0 {
			fmt.Fprintf(&b, ",AVERAGE-BANDWIDTH=%d", v.AverageBandwidth)
		}
		b.WriteString(`,CODECS="` + v.Codecs + `"`)
		if v.Width > 0 && v.Height > 0 {
			fmt.Fprintf(&b, ",RESOLUTION=%dx%d", v.Width, v.Height)
		}
		if v.FrameRate > 0 {
			b.WriteString(",FRAME-RATE=" + strconv.FormatFloat(v.FrameRate, 'f', 3, 64))
		}
		b.WriteString("\n" + v.Name + "/index.m3u8\n")
	}
	return []byte(b.String())
}
