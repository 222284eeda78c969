package packager

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/grafov/m3u8"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/playlist"
)

// PlaylistStats are bit rates measured from a media playlist and the sizes
// of its segments.
type PlaylistStats struct {
	Segments       int
	Duration       float64
	PeakBitRate    int64 // the largest segment bit rate (HLS BANDWIDTH)
	AverageBitRate int64 // total bits over total duration (AVERAGE-BANDWIDTH)
}

// MeasurePlaylist reads a VOD media playlist and the segment files next to
// it and measures its bit rates.
func MeasurePlaylist(path string) (PlaylistStats, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return PlaylistStats{}, fmt.Errorf("measure: %w", err)
	}
	pl, typ, err := m3u8.Decode(*bytes.NewBuffer(data), true)
	if err != nil {
		return PlaylistStats{}, fmt.Errorf("measure %s: %w", path, err)
	}
	media, ok := pl.(*m3u8.MediaPlaylist)
	if !ok || typ != m3u8.MEDIA {
		return PlaylistStats{}, fmt.Errorf("measure %s: not a media playlist", path)
	}
	var s PlaylistStats
	var bits float64
	for _, seg := range media.Segments {
		if seg == nil {
			continue
		}
		if strings.Contains(seg.URI, "/") {
			return PlaylistStats{}, fmt.Errorf("measure %s: unexpected segment URI %q", path, seg.URI)
		}
		fi, err := os.Stat(filepath.Join(filepath.Dir(path), seg.URI))
		if err != nil {
			return PlaylistStats{}, fmt.Errorf("measure: %w", err)
		}
		b := float64(fi.Size()) * 8
		bits += b
		s.Duration += seg.Duration
		s.Segments++
		if seg.Duration > 0 {
			s.PeakBitRate = max(s.PeakBitRate, int64(math.Ceil(b/seg.Duration)))
		}
	}
	if s.Segments == 0 || s.Duration <= 0 {
		return PlaylistStats{}, fmt.Errorf("measure %s: no segments", path)
	}
	s.AverageBitRate = int64(math.Ceil(bits / s.Duration))
	return s, nil
}

// Codecs returns the RFC 6381 CODECS value of probed streams, e.g.
// "avc1.64001f,mp4a.40.2".
func Codecs(p *ffmpeg.ProbeResult) (string, error) {
	var out []string
	if v := p.Video(); v != nil {
		c, err := avc1(v.CodecName, v.Profile, v.Level)
		if err != nil {
			return "", err
		}
		out = append(out, c)
	}
	if a := p.Audio(); a != nil {
		switch {
		case a.CodecName == "aac" && (a.Profile == "LC" || a.Profile == ""):
			out = append(out, "mp4a.40.2")
		case a.CodecName == "aac" && a.Profile == "HE-AAC":
			out = append(out, "mp4a.40.5")
		default:
			return "", fmt.Errorf("codecs: unsupported audio %s/%s", a.CodecName, a.Profile)
		}
	}
	if len(out) == 0 {
		return "", errors.New("codecs: no streams")
	}
	return strings.Join(out, ","), nil
}

// avc1 renders avc1.PPCCLL from ffprobe's H.264 profile name and level.
func avc1(codec, profile string, level int) (string, error) {
	if codec != "h264" {
		return "", fmt.Errorf("codecs: unsupported video codec %q", codec)
	}
	var pc string
	switch profile {
	case "Constrained Baseline":
		pc = "42e0"
	case "Baseline":
		pc = "4200"
	case "Main":
		pc = "4d00"
	case "High":
		pc = "6400"
	default:
		return "", fmt.Errorf("codecs: unsupported H.264 profile %q", profile)
	}
	if level <= 0 || level > 0xff {
		return "", fmt.Errorf("codecs: bad H.264 level %d", level)
	}
	return fmt.Sprintf("avc1.%s%02x", pc, level), nil
}

// PreferAVCC replaces the avc1 entry of codecs with the exact value from
// the init segment's avcC box (playlist.AVC1FromInit).
func PreferAVCC(codecs string, init []byte) string {
	exact, ok := playlist.AVC1FromInit(init)
	if !ok {
		return codecs
	}
	parts := strings.Split(codecs, ",")
	for j, p := range parts {
		if strings.HasPrefix(p, "avc1.") {
			parts[j] = exact
		}
	}
	return strings.Join(parts, ",")
}
