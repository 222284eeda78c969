// Package hlscheck validates HLS output the way kiln promises it: RFC 8216
// and Apple's HLS authoring specification for fMP4 VOD, plus kiln's own
// choices (variants ordered by bandwidth, aligned segment boundaries).
//
// The pure functions CheckMasterPlaylist, CheckMediaPlaylist and
// CheckEventPlaylist look at the text of one playlist, CheckEventAppend at
// two readings of a growing one; CheckMaster fetches a master playlist,
// every variant, every audio rendition (EXT-X-MEDIA TYPE=AUDIO) and every
// segment (over HTTP or from local files), measures the bit rates (a
// variant's with its audio group's), compares the video variants with each
// other and, when asked, inspects the segments with ffprobe (IDR at the
// start of every segment, aligned start times, CODECS and RESOLUTION
// matching the coded streams).
package hlscheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
)

// Rule ids. They are stable: tests and callers match on them.
const (
	// Master playlist (text alone).
	RuleMasterParse              = "master.parse"                 // grafov/m3u8 strict decoding fails
	RuleMasterType               = "master.type"                  // the playlist is not a master playlist
	RuleMasterVariants           = "master.variants"              // no EXT-X-STREAM-INF
	RuleMasterBandwidth          = "master.bandwidth"             // BANDWIDTH missing or not a positive integer
	RuleMasterAverageBandwidth   = "master.average-bandwidth"     // AVERAGE-BANDWIDTH missing or not a positive integer
	RuleMasterAverageAbovePeak   = "master.average-bandwidth.max" // AVERAGE-BANDWIDTH > BANDWIDTH
	RuleMasterCodecs             = "master.codecs"                // CODECS missing or malformed
	RuleMasterResolution         = "master.resolution"            // RESOLUTION missing or malformed (video variants)
	RuleMasterFrameRate          = "master.frame-rate"            // FRAME-RATE missing or malformed (video variants)
	RuleMasterIndependent        = "master.independent-segments"  // no EXT-X-INDEPENDENT-SEGMENTS
	RuleMasterProgramID          = "master.program-id"            // PROGRAM-ID (removed in protocol version 6)
	RuleMasterOrder              = "master.order"                 // kiln rule: variants not ordered by BANDWIDTH ascending
	RuleMasterURIUnique          = "master.uri-unique"            // two variants with the same URI
	RuleMasterMedia              = "master.media"                 // EXT-X-MEDIA malformed: TYPE, GROUP-ID, NAME, an AUDIO one's URI or CHANNELS; several DEFAULT=YES in a group
	RuleMasterAudioGroup         = "master.audio-group"           // AUDIO names no audio group, CODECS lacks its audio, or only some video variants play one
	RuleMediaParse               = "media.parse"                  // grafov/m3u8 strict decoding fails
	RuleMediaType                = "media.type"                   // the playlist is not a media playlist
	RuleMediaVOD                 = "media.vod"                    // no EXT-X-PLAYLIST-TYPE:VOD (or EVENT, Config.AllowEvent)
	RuleMediaEndlist             = "media.endlist"                // no EXT-X-ENDLIST (an EVENT playlist may lack it, Config.AllowEvent)
	RuleMediaEventAppend         = "media.event-append"           // an EVENT playlist changed other than by appending (CheckEventAppend)
	RuleMediaMap                 = "media.map"                    // fMP4 segments without EXT-X-MAP
	RuleMediaVersion             = "media.version"                // fMP4 with EXT-X-VERSION missing or < 6
	RuleMediaTargetDuration      = "media.target-duration"        // EXT-X-TARGETDURATION missing or not an integer
	RuleMediaExtinfTarget        = "media.extinf-target"          // an EXTINF rounded to the nearest integer > TARGETDURATION
	RuleMediaSegments            = "media.segments"               // no segment
	RuleMediaSegmentDuration     = "media.segment-duration"       // an EXTINF ≤ 0 or unreadable
	RuleMediaFetch               = "media.fetch"                  // a variant playlist cannot be read
	RuleSegmentFetch             = "segment.fetch"                // a segment or init section cannot be read
	RuleVariantBandwidth         = "variant.bandwidth"            // declared BANDWIDTH < 0.9 × measured peak segment bit rate
	RuleVariantAverageBandwidth  = "variant.average-bandwidth"    // declared AVERAGE-BANDWIDTH not within ±10 % of measured average
	RuleVariantsTargetDuration   = "variants.target-duration"     // variants with different TARGETDURATION
	RuleVariantsSegmentCount     = "variants.segment-count"       // variants with different numbers of segments
	RuleVariantsSegmentDurations = "variants.segment-durations"   // segment durations differ by more than 1 ms across variants
	RuleVariantsSegmentStart     = "variants.segment-start"       // measured segment start times differ by more than 1 ms across variants
	RuleSegmentProbe             = "segment.probe"                // ffprobe/ffmpeg cannot read init + segment
	RuleSegmentKeyframe          = "segment.keyframe"             // the first video frame is not a key (I) frame
	RuleSegmentIDR               = "segment.idr"                  // the first video access unit is not an IDR picture
	RuleSegmentCodecs            = "segment.codecs"               // CODECS does not match the streams
	RuleSegmentResolution        = "segment.resolution"           // RESOLUTION does not match the coded video size
)

// Fetcher reads a URL or a local path.
type Fetcher interface {
	Fetch(ctx context.Context, uri string) ([]byte, error)
}

// maxFetch bounds what one fetch reads.
const maxFetch = 512 << 20

// HTTPFetcher GETs http(s) URLs, following redirects; a non-2xx answer is an
// error. A nil Client is http.DefaultClient.
type HTTPFetcher struct{ Client *http.Client }

// Fetch implements Fetcher.
func (f HTTPFetcher) Fetch(ctx context.Context, uri string) ([]byte, error) {
	c := f.Client
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: status %d: %s", uri, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxFetch+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", uri, err)
	}
	if len(data) > maxFetch {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", uri, maxFetch)
	}
	return data, nil
}

// FileFetcher reads local paths and file:// URLs.
type FileFetcher struct{}

// Fetch implements Fetcher.
func (FileFetcher) Fetch(_ context.Context, uri string) ([]byte, error) {
	if u, err := url.Parse(uri); err == nil && u.Scheme == "file" {
		uri = u.Path
	}
	return os.ReadFile(uri)
}

// AutoFetcher uses HTTP for http(s) URLs and the file system otherwise; it
// is the default Fetcher.
type AutoFetcher struct{ HTTP HTTPFetcher }

// Fetch implements Fetcher.
func (f AutoFetcher) Fetch(ctx context.Context, uri string) ([]byte, error) {
	if isHTTP(uri) {
		return f.HTTP.Fetch(ctx, uri)
	}
	return FileFetcher{}.Fetch(ctx, uri)
}

var (
	_ Fetcher = HTTPFetcher{}
	_ Fetcher = FileFetcher{}
	_ Fetcher = AutoFetcher{}
)

func isHTTP(uri string) bool {
	u, err := url.Parse(uri)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https")
}

// Resolve returns the URI ref names relative to the playlist at base:
// RFC 3986 reference resolution for URLs (the base's query is not carried
// over: only what the playlist says), path.Join next to the playlist for
// local paths.
func Resolve(base, ref string) (string, error) {
	if r, err := url.Parse(ref); err == nil && r.Scheme != "" {
		return ref, nil // absolute URL
	}
	if strings.Contains(base, "://") {
		b, err := url.Parse(base)
		if err != nil {
			return "", fmt.Errorf("resolve %q: bad base %q: %w", ref, base, err)
		}
		r, err := url.Parse(ref)
		if err != nil {
			return "", fmt.Errorf("resolve %q: %w", ref, err)
		}
		return b.ResolveReference(r).String(), nil
	}
	if path.IsAbs(ref) {
		return ref, nil
	}
	return path.Join(path.Dir(base), ref), nil
}

// Problem is one broken rule.
type Problem struct {
	Rule   string // stable id, one of the Rule constants
	URI    string // the playlist or segment concerned (empty from the pure checks)
	Detail string
}

func (p Problem) String() string {
	if p.URI == "" {
		return p.Rule + ": " + p.Detail
	}
	return p.Rule + " " + p.URI + ": " + p.Detail
}

// Report is the outcome of CheckMaster.
type Report struct {
	Problems []Problem
	Variants int // variant playlists read
	Segments int // segments read, every variant together
}

// Err is nil without problems, otherwise an error listing them.
func (r *Report) Err() error {
	if r == nil || len(r.Problems) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "hls: %d problem(s):", len(r.Problems))
	for _, p := range r.Problems {
		b.WriteString("\n  " + p.String())
	}
	return errors.New(b.String())
}

// Rules returns the distinct rule ids of the problems, in order of first
// appearance.
func (r *Report) Rules() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range r.Problems {
		if !seen[p.Rule] {
			seen[p.Rule] = true
			out = append(out, p.Rule)
		}
	}
	return out
}

func (r *Report) add(rule, uri, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Rule: rule, URI: uri, Detail: fmt.Sprintf(format, args...)})
}

// Config tunes CheckMaster. The zero value reads over HTTP or local files
// and does not run ffprobe.
type Config struct {
	// Fetcher reads playlists and segments; default AutoFetcher.
	Fetcher Fetcher
	// FFprobe is the ffprobe binary; default "ffprobe".
	FFprobe string
	// FFmpeg is the ffmpeg binary, used to read the NAL units of each
	// segment's first video access unit; default "ffmpeg".
	FFmpeg string
	// InspectSegments runs ffprobe/ffmpeg on init section + segment: IDR at
	// the start of each segment, aligned start times, CODECS and RESOLUTION.
	InspectSegments bool
	// TempDir holds the temporary init+segment files; default os.TempDir().
	TempDir string
	// AllowEvent accepts EXT-X-PLAYLIST-TYPE:EVENT media playlists without
	// EXT-X-ENDLIST (CheckEventPlaylist): an asset played while it is
	// still encoding. Their segments are checked as any other; the
	// bandwidth rules skip them (a part of the encode, against estimated
	// bit rates) and the variants are compared on the segments they all
	// have so far.
	AllowEvent bool
}
