package playlist

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/grafov/m3u8"
)

// MaxMediaBytes bounds a read of a stored media playlist: kiln's list
// about 40 bytes a segment, so 8 MiB holds any video the limits accept.
const MaxMediaBytes = 8 << 20

// ParseSegments reads the segments of a media playlist (with
// grafov/m3u8). Only plain file names next to the playlist are accepted:
// kiln's and ffmpeg's playlists name nothing else.
func ParseSegments(data []byte) ([]Segment, error) {
	pl, typ, err := m3u8.Decode(*bytes.NewBuffer(data), true)
	if err != nil {
		return nil, fmt.Errorf("playlist: %w", err)
	}
	media, ok := pl.(*m3u8.MediaPlaylist)
	if !ok || typ != m3u8.MEDIA {
		return nil, errors.New("playlist: not a media playlist")
	}
	var out []Segment
	for _, seg := range media.Segments {
		if seg == nil {
			continue
		}
		if seg.URI == "" || strings.ContainsAny(seg.URI, `/\?#`) || seg.URI == ".." || seg.Duration < 0 {
			return nil, fmt.Errorf("playlist: unexpected segment %q", seg.URI)
		}
		out = append(out, Segment{URI: seg.URI, Duration: seg.Duration})
	}
	return out, nil
}
