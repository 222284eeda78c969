package hlscheck

import (
	"bytes"
	"fmt"
	"math"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/grafov/m3u8"
)

// variant is one EXT-X-STREAM-INF of a master playlist, read from the raw
// text (grafov/m3u8 caps BANDWIDTH at uint32 and hides absent attributes).
type variant struct {
	URI   string
	Attrs map[string]string
}

func lines(data []byte) []string {
	ls := strings.Split(string(data), "\n")
	for i, l := range ls {
		ls[i] = strings.TrimSpace(l)
	}
	return ls
}

func parseVariants(data []byte) []variant {
	var out []variant
	var cur *variant
	for _, l := range lines(data) {
		switch {
		case strings.HasPrefix(l, "#EXT-X-STREAM-INF:"):
			cur = &variant{Attrs: m3u8.DecodeAttributeList(strings.TrimPrefix(l, "#EXT-X-STREAM-INF:"))}
		case l == "" || strings.HasPrefix(l, "#"):
		case cur != nil:
			cur.URI = l
			out = append(out, *cur)
			cur = nil
		}
	}
	return out
}

var (
	reAVC1       = regexp.MustCompile(`^avc1\.[0-9A-Fa-f]{6}$`)
	reResolution = regexp.MustCompile(`^[1-9][0-9]*x[1-9][0-9]*$`)
	reDecimal    = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
)

// codecList splits a CODECS value, or explains why it is malformed: each
// entry is avc1.PPCCLL (hex) or mp4a.40.2 / mp4a.40.5, at most one video
// and one audio.
func codecList(s string) (video, audio string, err error) {
	if strings.TrimSpace(s) == "" {
		return "", "", fmt.Errorf("empty")
	}
	for c := range strings.SplitSeq(s, ",") {
		switch {
		case reAVC1.MatchString(c):
			if video != "" {
				return "", "", fmt.Errorf("two video codecs in %q", s)
			}
			video = c
		case c == "mp4a.40.2" || c == "mp4a.40.5":
			if audio != "" {
				return "", "", fmt.Errorf("two audio codecs in %q", s)
			}
			audio = c
		default:
			return "", "", fmt.Errorf("%q is not avc1.PPCCLL, mp4a.40.2 or mp4a.40.5", c)
		}
	}
	return video, audio, nil
}

func positiveInt(attrs map[string]string, key string) (int64, error) {
	v, ok := attrs[key]
	if !ok {
		return 0, fmt.Errorf("no %s", key)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q is not a positive integer", key, v)
	}
	return n, nil
}

// decode is grafov/m3u8's strict Decode, its panics turned into errors: it
// dereferences nil on some malformed playlists (e.g. "#EXT-X-MAP:\n0"; open
// upstream, grafov/m3u8 #166 and #203), which a checker must report, not
// crash on.
func decode(data []byte) (typ m3u8.ListType, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("grafov/m3u8 panicked: %v", r)
		}
	}()
	_, typ, err = m3u8.Decode(*bytes.NewBuffer(data), true)
	return typ, err
}

// CheckMasterPlaylist applies the master playlist rules to its text.
// Problems carry no URI; details name the variant.
func CheckMasterPlaylist(data []byte) []Problem {
	var ps []Problem
	add := func(rule, format string, args ...any) {
		ps = append(ps, Problem{Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	typ, err := decode(data)
	switch {
	case err != nil:
		add(RuleMasterParse, "strict decoding: %v", err)
	case typ != m3u8.MASTER:
		add(RuleMasterType, "not a master playlist")
		return ps
	}
	ls := lines(data)
	independent := false
	for _, l := range ls {
		if l == "#EXT-X-INDEPENDENT-SEGMENTS" {
			independent = true
		}
	}
	if !independent {
		add(RuleMasterIndependent, "no #EXT-X-INDEPENDENT-SEGMENTS")
	}
	vs := parseVariants(data)
	if len(vs) == 0 {
		add(RuleMasterVariants, "no EXT-X-STREAM-INF variant")
		return ps
	}
	seen := map[string]bool{}
	prevBW := int64(-1)
	for i, v := range vs {
		name := fmt.Sprintf("variant %d (%s)", i, v.URI)
		if _, ok := v.Attrs["PROGRAM-ID"]; ok {
			add(RuleMasterProgramID, "%s: PROGRAM-ID was removed in protocol version 6", name)
		}
		bw, err := positiveInt(v.Attrs, "BANDWIDTH")
		if err != nil {
			add(RuleMasterBandwidth, "%s: %v", name, err)
		}
		avg, aerr := positiveInt(v.Attrs, "AVERAGE-BANDWIDTH")
		if aerr != nil {
			add(RuleMasterAverageBandwidth, "%s: %v", name, aerr)
		}
		if err == nil && aerr == nil && avg > bw {
			add(RuleMasterAverageAbovePeak, "%s: AVERAGE-BANDWIDTH %d > BANDWIDTH %d", name, avg, bw)
		}
		isVideo := true // without a readable CODECS, assume video
		if c, ok := v.Attrs["CODECS"]; !ok {
			add(RuleMasterCodecs, "%s: no CODECS", name)
		} else if video, _, err := codecList(c); err != nil {
			add(RuleMasterCodecs, "%s: CODECS: %v", name, err)
		} else {
			isVideo = video != ""
		}
		if isVideo {
			if r, ok := v.Attrs["RESOLUTION"]; !ok {
				add(RuleMasterResolution, "%s: no RESOLUTION", name)
			} else if !reResolution.MatchString(r) {
				add(RuleMasterResolution, "%s: RESOLUTION=%q is not WIDTHxHEIGHT", name, r)
			}
			if fr, ok := v.Attrs["FRAME-RATE"]; !ok {
				add(RuleMasterFrameRate, "%s: no FRAME-RATE", name)
			} else if f, err := strconv.ParseFloat(fr, 64); err != nil || !reDecimal.MatchString(fr) || f <= 0 {
				add(RuleMasterFrameRate, "%s: FRAME-RATE=%q is not a positive decimal", name, fr)
			}
		}
		if err == nil {
			if bw < prevBW {
				add(RuleMasterOrder, "%s: BANDWIDTH %d after %d (kiln orders variants by BANDWIDTH ascending)", name, bw, prevBW)
			}
			prevBW = max(prevBW, bw)
		}
		if seen[v.URI] {
			add(RuleMasterURIUnique, "%s: URI listed twice", name)
		}
		seen[v.URI] = true
	}
	return ps
}

// segment is one media segment of a media playlist.
type segment struct {
	URI      string
	Duration float64
	DurErr   error
	Map      *byteRef // the EXT-X-MAP in force, nil without one
	Range    *byteRange
}

type byteRange struct{ Length, Offset int64 }

type byteRef struct {
	URI   string
	Range *byteRange
}

// media is a media playlist read from its raw text.
type media struct {
	Version     int // 0 when absent
	HasVersion  bool
	Target      int
	TargetErr   error
	VOD         bool
	Endlist     bool
	HasMap      bool
	Segments    []segment
	ParseErrors []string
}

func parseByteRange(s string, prevEnd int64) (*byteRange, error) {
	n, o, hasOff := strings.Cut(s, "@")
	length, err := strconv.ParseInt(n, 10, 64)
	if err != nil || length < 0 {
		return nil, fmt.Errorf("bad byte range %q", s)
	}
	off := prevEnd
	if hasOff {
		if off, err = strconv.ParseInt(o, 10, 64); err != nil || off < 0 {
			return nil, fmt.Errorf("bad byte range %q", s)
		}
	}
	return &byteRange{Length: length, Offset: off}, nil
}

func parseMedia(data []byte) media {
	var m media
	m.TargetErr = fmt.Errorf("no #EXT-X-TARGETDURATION")
	var (
		curMap   *byteRef
		dur      float64
		durErr   error
		inSeg    bool
		rng      *byteRange
		prevEnd  = map[string]int64{}
		rangeStr string
	)
	for _, l := range lines(data) {
		switch {
		case strings.HasPrefix(l, "#EXT-X-VERSION:"):
			v, err := strconv.Atoi(strings.TrimPrefix(l, "#EXT-X-VERSION:"))
			if err != nil {
				m.ParseErrors = append(m.ParseErrors, "bad "+l)
			}
			m.Version, m.HasVersion = v, err == nil
		case strings.HasPrefix(l, "#EXT-X-TARGETDURATION:"):
			v := strings.TrimPrefix(l, "#EXT-X-TARGETDURATION:")
			t, err := strconv.Atoi(v)
			if err != nil || t < 0 {
				m.TargetErr = fmt.Errorf("EXT-X-TARGETDURATION %q is not a decimal integer", v)
			} else {
				m.Target, m.TargetErr = t, nil
			}
		case l == "#EXT-X-PLAYLIST-TYPE:VOD":
			m.VOD = true
		case l == "#EXT-X-ENDLIST":
			m.Endlist = true
		case strings.HasPrefix(l, "#EXT-X-MAP:"):
			m.HasMap = true
			a := m3u8.DecodeAttributeList(strings.TrimPrefix(l, "#EXT-X-MAP:"))
			curMap = &byteRef{URI: a["URI"]}
			if r, ok := a["BYTERANGE"]; ok {
				if br, err := parseByteRange(r, 0); err == nil {
					curMap.Range = br
				}
			}
		case strings.HasPrefix(l, "#EXTINF:"):
			v, _, _ := strings.Cut(strings.TrimPrefix(l, "#EXTINF:"), ",")
			dur, durErr = strconv.ParseFloat(strings.TrimSpace(v), 64)
			if durErr == nil && (math.IsNaN(dur) || math.IsInf(dur, 0)) {
				durErr = fmt.Errorf("EXTINF %q", v)
			}
			inSeg = true
		case strings.HasPrefix(l, "#EXT-X-BYTERANGE:"):
			rangeStr = strings.TrimPrefix(l, "#EXT-X-BYTERANGE:")
		case l == "" || strings.HasPrefix(l, "#"):
		default: // a URI line
			if !inSeg {
				m.ParseErrors = append(m.ParseErrors, "URI without EXTINF: "+l)
				continue
			}
			if rangeStr != "" {
				var err error
				if rng, err = parseByteRange(rangeStr, prevEnd[l]); err != nil {
					m.ParseErrors = append(m.ParseErrors, err.Error())
					rng = nil
				} else {
					prevEnd[l] = rng.Offset + rng.Length
				}
			}
			m.Segments = append(m.Segments, segment{URI: l, Duration: dur, DurErr: durErr, Map: curMap, Range: rng})
			inSeg, rng, rangeStr, dur, durErr = false, nil, "", 0, nil
		}
	}
	return m
}

// isFMP4 reports whether the playlist uses fMP4 (CMAF) segments: it has an
// EXT-X-MAP, or its segments are named like fragmented MP4.
func (m *media) isFMP4() bool {
	if m.HasMap {
		return true
	}
	for _, s := range m.Segments {
		u := s.URI
		if i := strings.IndexAny(u, "?#"); i >= 0 {
			u = u[:i]
		}
		switch strings.ToLower(path.Ext(u)) {
		case ".m4s", ".mp4", ".m4v", ".m4a", ".cmfv", ".cmfa":
			return true
		}
	}
	return false
}

// CheckMediaPlaylist applies the media playlist rules to its text. Problems
// carry no URI.
func CheckMediaPlaylist(data []byte) []Problem {
	var ps []Problem
	add := func(rule, format string, args ...any) {
		ps = append(ps, Problem{Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	typ, err := decode(data)
	switch {
	case err != nil:
		add(RuleMediaParse, "strict decoding: %v", err)
	case typ != m3u8.MEDIA:
		add(RuleMediaType, "not a media playlist")
		return ps
	}
	m := parseMedia(data)
	for _, e := range m.ParseErrors {
		add(RuleMediaParse, "%s", e)
	}
	if !m.VOD {
		add(RuleMediaVOD, "no #EXT-X-PLAYLIST-TYPE:VOD")
	}
	if !m.Endlist {
		add(RuleMediaEndlist, "no #EXT-X-ENDLIST")
	}
	if m.isFMP4() {
		if !m.HasMap {
			add(RuleMediaMap, "fMP4 segments without #EXT-X-MAP")
		}
		switch {
		case !m.HasVersion:
			add(RuleMediaVersion, "fMP4 needs #EXT-X-VERSION ≥ 6; none given (means 1)")
		case m.Version < 6:
			add(RuleMediaVersion, "fMP4 needs #EXT-X-VERSION ≥ 6, got %d", m.Version)
		}
	}
	if m.TargetErr != nil {
		add(RuleMediaTargetDuration, "%v", m.TargetErr)
	}
	if len(m.Segments) == 0 {
		add(RuleMediaSegments, "no segment")
	}
	for i, s := range m.Segments {
		switch {
		case s.DurErr != nil:
			add(RuleMediaSegmentDuration, "segment %d (%s): unreadable EXTINF: %v", i, s.URI, s.DurErr)
		case s.Duration <= 0:
			add(RuleMediaSegmentDuration, "segment %d (%s): EXTINF %g ≤ 0", i, s.URI, s.Duration)
		case m.TargetErr == nil && math.Round(s.Duration) > float64(m.Target):
			add(RuleMediaExtinfTarget, "segment %d (%s): EXTINF %g rounds above TARGETDURATION %d", i, s.URI, s.Duration, m.Target)
		}
	}
	return ps
}
