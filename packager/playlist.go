package packager

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/grafov/m3u8"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// MasterPlaylist renders the HLS master playlist of renditions (written with
// grafov/m3u8): version 7, independent segments, one EXT-X-STREAM-INF per
// rendition with measured BANDWIDTH and AVERAGE-BANDWIDTH, CODECS,
// RESOLUTION and FRAME-RATE, ordered by bandwidth (lowest first, so players
// that start with the first variant start fast), URIs "<name>/index.m3u8".
func MasterPlaylist(renditions []*kilnv1.Rendition) []byte {
	rs := append([]*kilnv1.Rendition(nil), renditions...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Bandwidth < rs[j].Bandwidth })
	m := m3u8.NewMasterPlaylist()
	m.SetVersion(7)
	m.SetIndependentSegments(true)
	for _, r := range rs {
		m.Append(r.Name+"/index.m3u8", nil, m3u8.VariantParams{
			Bandwidth:        uint32(min(r.Bandwidth, math.MaxUint32)),
			AverageBandwidth: uint32(min(r.AverageBandwidth, math.MaxUint32)),
			Codecs:           r.Codecs,
			Resolution:       fmt.Sprintf("%dx%d", r.Width, r.Height),
			FrameRate:        math.Round(r.FrameRate*1000) / 1000,
		})
	}
	return m.Encode().Bytes()
}

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
