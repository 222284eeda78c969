package hlscheck

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"path"
	"regexp"
	"slices"
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

// parseRenditions returns the attributes of every EXT-X-MEDIA tag.
func parseRenditions(data []byte) []map[string]string {
	var out []map[string]string
	for _, l := range lines(data) {
		if a, ok := strings.CutPrefix(l, "#EXT-X-MEDIA:"); ok {
			out = append(out, m3u8.DecodeAttributeList(a))
		}
	}
	return out
}

// audioGroups are the AUDIO renditions of a master playlist by GROUP-ID.
func audioGroups(data []byte) map[string][]map[string]string {
	groups := map[string][]map[string]string{}
	for _, r := range parseRenditions(data) {
		if r["TYPE"] == "AUDIO" {
			groups[r["GROUP-ID"]] = append(groups[r["GROUP-ID"]], r)
		}
	}
	return groups
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
	groups := checkRenditions(data, add)
	withAudio, withoutAudio := 0, 0
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
		hasAudio := true
		if c, ok := v.Attrs["CODECS"]; !ok {
			add(RuleMasterCodecs, "%s: no CODECS", name)
		} else if video, audio, err := codecList(c); err != nil {
			add(RuleMasterCodecs, "%s: CODECS: %v", name, err)
		} else {
			isVideo, hasAudio = video != "", audio != ""
		}
		if g, ok := v.Attrs["AUDIO"]; ok {
			withAudio++
			if len(groups[g]) == 0 {
				add(RuleMasterAudioGroup, "%s: AUDIO=%q names no EXT-X-MEDIA TYPE=AUDIO group", name, g)
			}
			if !hasAudio {
				add(RuleMasterAudioGroup, "%s: plays audio group %q but its CODECS has no audio codec (a variant's CODECS lists its audio rendition's)", name, g)
			}
		} else if isVideo {
			withoutAudio++
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
	if withAudio > 0 && withoutAudio > 0 {
		add(RuleMasterAudioGroup, "%d video variant(s) play an audio group, %d do not: every video variant refers to the audio", withAudio, withoutAudio)
	}
	return ps
}

// checkRenditions applies the EXT-X-MEDIA rules and returns the AUDIO
// groups.
func checkRenditions(data []byte, add func(rule, format string, args ...any)) map[string][]map[string]string {
	for i, r := range parseRenditions(data) {
		name := fmt.Sprintf("rendition %d (%s)", i, r["NAME"])
		switch r["TYPE"] {
		case "AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS":
		default:
			add(RuleMasterMedia, "%s: TYPE=%q is not AUDIO, VIDEO, SUBTITLES or CLOSED-CAPTIONS", name, r["TYPE"])
			continue
		}
		if r["GROUP-ID"] == "" {
			add(RuleMasterMedia, "%s: no GROUP-ID", name)
		}
		if r["NAME"] == "" {
			add(RuleMasterMedia, "%s: no NAME", name)
		}
		if r["TYPE"] != "AUDIO" {
			continue
		}
		if r["URI"] == "" {
			add(RuleMasterMedia, "%s: an AUDIO rendition without URI (its audio would be muxed in the variants)", name)
		}
		if ch := r["CHANNELS"]; ch == "" {
			add(RuleMasterMedia, "%s: no CHANNELS (Apple's authoring spec asks for it on every audio rendition)", name)
		} else if n, _, _ := strings.Cut(ch, "/"); !reDecimal.MatchString(n) || strings.Contains(n, ".") || n == "0" {
			add(RuleMasterMedia, "%s: CHANNELS=%q does not start with a channel count", name, ch)
		}
	}
	groups := audioGroups(data)
	for _, g := range slices.Sorted(maps.Keys(groups)) { // problems in a stable order
		rs := groups[g]
		defaults, names := 0, map[string]bool{}
		for _, r := range rs {
			if r["DEFAULT"] == "YES" {
				defaults++
			}
			if names[r["NAME"]] {
				add(RuleMasterMedia, "audio group %q: NAME %q twice", g, r["NAME"])
			}
			names[r["NAME"]] = true
		}
		if defaults > 1 {
			add(RuleMasterMedia, "audio group %q: %d renditions with DEFAULT=YES, at most one", g, defaults)
		}
	}
	return groups
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
	Event       bool // EXT-X-PLAYLIST-TYPE:EVENT: segments are only ever appended
	Sequence    int  // EXT-X-MEDIA-SEQUENCE, 0 when absent
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
		case l == "#EXT-X-PLAYLIST-TYPE:EVENT":
			m.Event = true
		case strings.HasPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"):
			n, err := strconv.Atoi(strings.TrimPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"))
			if err != nil || n < 0 {
				m.ParseErrors = append(m.ParseErrors, "bad "+l)
			}
			m.Sequence = n
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

// growing reports whether the playlist is an EVENT playlist still being
// written (no EXT-X-ENDLIST yet).
func (m *media) growing() bool { return m.Event && !m.Endlist }

// CheckMediaPlaylist applies the media playlist rules to its text: a VOD
// playlist with EXT-X-ENDLIST. Problems carry no URI.
func CheckMediaPlaylist(data []byte) []Problem { return checkMediaPlaylist(data, false) }

// CheckEventPlaylist is CheckMediaPlaylist for an asset that may still be
// encoding: an EXT-X-PLAYLIST-TYPE:EVENT playlist, with or without
// EXT-X-ENDLIST, passes too (every other rule, the target duration
// included, applies alike).
func CheckEventPlaylist(data []byte) []Problem { return checkMediaPlaylist(data, true) }

func checkMediaPlaylist(data []byte, allowEvent bool) []Problem {
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
	switch {
	case m.VOD && m.Event:
		add(RuleMediaVOD, "both #EXT-X-PLAYLIST-TYPE:VOD and EVENT")
	case allowEvent && m.Event: // EXT-X-ENDLIST comes when the encode ends
	case allowEvent && !m.VOD:
		add(RuleMediaVOD, "no #EXT-X-PLAYLIST-TYPE:VOD or EVENT")
	case !m.VOD:
		add(RuleMediaVOD, "no #EXT-X-PLAYLIST-TYPE:VOD")
	}
	if !m.Endlist && !(allowEvent && m.Event) {
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

// CheckEventAppend compares two readings of one EVENT media playlist,
// before and after: RFC 8216 (6.2.1) lets its server only append segments
// and add EXT-X-ENDLIST, so every segment of before is in after, in the
// same place, with the same URI, duration and EXT-X-MAP, under the same
// EXT-X-MEDIA-SEQUENCE; an ended playlist does not change at all. The type
// may turn from EVENT to VOD as EXT-X-ENDLIST is added (what kiln does at
// READY; players read both as a finished playlist). Problems carry no URI.
func CheckEventAppend(before, after []byte) []Problem {
	var ps []Problem
	add := func(format string, args ...any) {
		ps = append(ps, Problem{Rule: RuleMediaEventAppend, Detail: fmt.Sprintf(format, args...)})
	}
	b, a := parseMedia(before), parseMedia(after)
	switch {
	case !b.Event && !b.VOD:
		add("the first reading is neither an EVENT nor a VOD playlist")
		return ps
	case b.Endlist && !bytes.Equal(before, after):
		add("an ended playlist changed")
		return ps
	case a.VOD && !a.Endlist, !a.Event && !a.VOD:
		add("the EVENT playlist changed type without ending")
	case b.Sequence != a.Sequence:
		add("EXT-X-MEDIA-SEQUENCE changed from %d to %d", b.Sequence, a.Sequence)
	case b.TargetErr == nil && a.TargetErr == nil && b.Target != a.Target:
		add("EXT-X-TARGETDURATION changed from %d to %d", b.Target, a.Target)
	}
	if len(a.Segments) < len(b.Segments) {
		add("%d segments, %d before: segments were removed", len(a.Segments), len(b.Segments))
		return ps
	}
	for i, s := range b.Segments {
		n := a.Segments[i]
		switch {
		case n.URI != s.URI:
			add("segment %d is %s, was %s", i, n.URI, s.URI)
		case n.Duration != s.Duration:
			add("segment %d (%s) lasts %g s, was %g s", i, s.URI, n.Duration, s.Duration)
		case (n.Map == nil) != (s.Map == nil) || (n.Map != nil && n.Map.URI != s.Map.URI):
			add("segment %d (%s): its EXT-X-MAP changed", i, s.URI)
		default:
			continue
		}
		return ps
	}
	return ps
}
