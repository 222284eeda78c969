package playlist

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Segment is one media segment of a media playlist.
type Segment struct {
	// URI is the segment's file name, relative to the playlist
	// ("seg_00000.m4s"): URL-safe.
	URI string
	// Duration in seconds.
	Duration float64
}

// MediaPlaylist is a rendition's fMP4 media playlist.
type MediaPlaylist struct {
	// TargetDuration is EXT-X-TARGETDURATION in seconds. It must not change
	// while an EVENT playlist grows (RFC 8216, 6.2.1): the transcode sets it
	// to the plan's segment length, which its fixed GOP cuts every segment
	// to (MediaTargetDuration).
	TargetDuration int
	// Map is the EXT-X-MAP URI of the initialisation segment ("init.mp4").
	Map string
	// Segments in order; the media sequence starts at 0.
	Segments []Segment
	// Ended: every segment is there (EXT-X-PLAYLIST-TYPE:VOD and
	// EXT-X-ENDLIST). Until then the playlist is an EVENT playlist that only
	// ever grows: a segment, once listed, keeps its URI, duration and map.
	Ended bool
	// IndependentSegments: every segment starts with a key frame
	// (EXT-X-INDEPENDENT-SEGMENTS); true for video and audio alike.
	IndependentSegments bool
}

// MediaTargetDuration is the target duration of segments cut every
// segmentSeconds: at least that, and at least every duration rounded to the
// nearest second, as RFC 8216 (4.3.3.1) requires of EXTINF durations.
func MediaTargetDuration(segmentSeconds int, segments []Segment) int {
	t := segmentSeconds
	for _, s := range segments {
		t = max(t, int(math.Round(s.Duration)))
	}
	return max(t, 1)
}

// Media renders a media playlist: version 7 (fMP4 with EXT-X-MAP), the
// target duration, media sequence 0, EVENT or VOD, the map and the
// segments, and EXT-X-ENDLIST once ended. Written by hand for the reasons
// Master is (and so that an EVENT playlist is byte-for-byte the prefix of
// what it grows into, up to the closing tags).
func Media(p MediaPlaylist) []byte {
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:0\n", p.TargetDuration)
	if p.Ended {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:VOD\n")
	} else {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:EVENT\n")
	}
	if p.IndependentSegments {
		b.WriteString("#EXT-X-INDEPENDENT-SEGMENTS\n")
	}
	b.WriteString(`#EXT-X-MAP:URI="` + p.Map + "\"\n")
	for _, s := range p.Segments {
		b.WriteString("#EXTINF:" + strconv.FormatFloat(s.Duration, 'f', 6, 64) + ",\n" + s.URI + "\n")
	}
	if p.Ended {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return []byte(b.String())
}
