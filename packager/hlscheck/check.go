package hlscheck

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
)

// Tolerances of the measured rules.
const (
	// bandwidthTolerance: declared BANDWIDTH must be ≥ (1 − tolerance) × the
	// measured peak; AVERAGE-BANDWIDTH within ± tolerance of the measured
	// average.
	bandwidthTolerance = 0.10
	// alignTolerance (seconds): segment durations and start times across
	// variants.
	alignTolerance = 0.001
)

// variantResult is what CheckMaster learnt about one variant.
type variantResult struct {
	uri      string
	attrs    map[string]string
	media    media
	segments int
	starts   []float64 // first video frame pts of each segment (InspectSegments); NaN when unknown
	hasVideo bool
	codec    string // video codec from ffprobe
	// measured: every segment was read; peak and avg are then its
	// measured bit rates (bit/s).
	measured  bool
	peak, avg float64
}

type checker struct {
	cfg    Config
	report *Report
	tmp    string
}

// CheckMaster validates the master playlist at masterURI (an http(s) URL or
// a local path), every variant playlist and every segment. The error is
// only for failing to read the master playlist itself; every other finding
// is a Problem in the report.
func CheckMaster(ctx context.Context, cfg Config, masterURI string) (*Report, error) {
	if cfg.Fetcher == nil {
		cfg.Fetcher = AutoFetcher{}
	}
	if cfg.FFprobe == "" {
		cfg.FFprobe = "ffprobe"
	}
	if cfg.FFmpeg == "" {
		cfg.FFmpeg = "ffmpeg"
	}
	data, err := cfg.Fetcher.Fetch(ctx, masterURI)
	if err != nil {
		return nil, fmt.Errorf("hlscheck: master playlist %s: %w", masterURI, err)
	}
	c := &checker{cfg: cfg, report: &Report{}}
	for _, p := range CheckMasterPlaylist(data) {
		if p.URI == "" {
			p.URI = masterURI
		}
		c.report.Problems = append(c.report.Problems, p)
	}
	if cfg.InspectSegments {
		tmp, err := os.MkdirTemp(cfg.TempDir, "hlscheck-")
		if err != nil {
			return nil, fmt.Errorf("hlscheck: %w", err)
		}
		defer os.RemoveAll(tmp)
		c.tmp = tmp
	}
	variants := parseVariants(data)
	// The audio renditions first: a variant's bit rate is its own and its
	// audio's together.
	audio := map[string]*variantResult{} // GROUP-ID → its first rendition
	groups := audioGroups(data)
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		for _, r := range groups[g] {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if r["URI"] == "" {
				continue // reported by the master rules
			}
			uri, err := Resolve(masterURI, r["URI"])
			if err != nil {
				c.report.add(RuleMediaFetch, masterURI, "%v", err)
				continue
			}
			attrs := map[string]string{}
			if codec := groupAudioCodec(variants, g); codec != "" {
				attrs["CODECS"] = codec
			}
			if res := c.checkVariant(ctx, uri, attrs); res != nil && audio[g] == nil {
				audio[g] = res
			}
		}
	}
	var results []*variantResult
	for _, v := range variants {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		uri, err := Resolve(masterURI, v.URI)
		if err != nil {
			c.report.add(RuleMediaFetch, masterURI, "%v", err)
			continue
		}
		res := c.checkVariant(ctx, uri, streamAttrs(v.Attrs))
		if res == nil {
			continue
		}
		results = append(results, res)
		if !res.measured || res.media.growing() {
			continue // an EVENT playlist: a part of the encode, declared bit rates are estimates
		}
		peak, avg := res.peak, res.avg
		if g, ok := v.Attrs["AUDIO"]; ok {
			a := audio[g]
			if a == nil || !a.measured || a.media.growing() {
				continue // the audio is unknown: reported as such
			}
			peak, avg = peak+a.peak, avg+a.avg
		}
		c.checkBandwidth(uri, v.Attrs, peak, avg)
	}
	c.compareVariants(results)
	return c.report, nil
}

// streamAttrs are the attributes a variant's own segments must match: with
// an audio group, CODECS without the audio codec (the group's segments
// carry the audio, checked against it).
func streamAttrs(attrs map[string]string) map[string]string {
	if _, ok := attrs["AUDIO"]; !ok {
		return attrs
	}
	video, _, err := codecList(attrs["CODECS"])
	if err != nil || video == "" {
		return attrs // reported by the master rules
	}
	out := maps.Clone(attrs)
	out["CODECS"] = video
	return out
}

// groupAudioCodec is the audio codec the variants playing audio group g
// declare (the first one's), "" when none does.
func groupAudioCodec(vs []variant, g string) string {
	for _, v := range vs {
		if v.Attrs["AUDIO"] != g {
			continue
		}
		if _, a, err := codecList(v.Attrs["CODECS"]); err == nil && a != "" {
			return a
		}
	}
	return ""
}

// checkVariant checks one variant playlist and its segments; nil when the
// playlist cannot be read.
func (c *checker) checkVariant(ctx context.Context, uri string, attrs map[string]string) *variantResult {
	data, err := c.cfg.Fetcher.Fetch(ctx, uri)
	if err != nil {
		c.report.add(RuleMediaFetch, uri, "%v", err)
		return nil
	}
	c.report.Variants++
	for _, p := range checkMediaPlaylist(data, c.cfg.AllowEvent) {
		p.URI = uri
		c.report.Problems = append(c.report.Problems, p)
	}
	res := &variantResult{uri: uri, attrs: attrs, media: parseMedia(data)}
	inits := map[string][]byte{} // resolved init URI → bytes
	var (
		bits, seconds, peak float64
		complete            = true
		probedStreams       bool
	)
	for i, s := range res.media.Segments {
		res.starts = append(res.starts, math.NaN())
		segURI, err := Resolve(uri, s.URI)
		if err != nil {
			c.report.add(RuleSegmentFetch, uri, "segment %d: %v", i, err)
			complete = false
			continue
		}
		body, err := c.cfg.Fetcher.Fetch(ctx, segURI)
		if err == nil && s.Range != nil {
			body, err = slice(body, s.Range)
		}
		if err != nil {
			c.report.add(RuleSegmentFetch, segURI, "%v", err)
			complete = false
			continue
		}
		c.report.Segments++
		res.segments++
		b := float64(len(body)) * 8
		if s.DurErr == nil && s.Duration > 0 {
			bits += b
			seconds += s.Duration
			peak = max(peak, b/s.Duration)
		}
		if !c.cfg.InspectSegments {
			continue
		}
		var init []byte
		if s.Map != nil {
			initURI, err := Resolve(uri, s.Map.URI)
			if err != nil {
				c.report.add(RuleSegmentFetch, uri, "init section: %v", err)
				continue
			}
			key := initURI
			if s.Map.Range != nil {
				key += "#" + strconv.FormatInt(s.Map.Range.Offset, 10) + "-" + strconv.FormatInt(s.Map.Range.Length, 10)
			}
			var ok bool
			if init, ok = inits[key]; !ok {
				init, err = c.cfg.Fetcher.Fetch(ctx, initURI)
				if err == nil && s.Map.Range != nil {
					init, err = slice(init, s.Map.Range)
				}
				if err != nil {
					c.report.add(RuleSegmentFetch, initURI, "init section: %v", err)
					continue
				}
				inits[key] = init
			}
		}
		file, err := c.writeTemp(init, body)
		if err != nil {
			c.report.add(RuleSegmentProbe, segURI, "%v", err)
			continue
		}
		if !probedStreams {
			probedStreams = true
			res.codec = c.checkStreams(ctx, segURI, file, attrs, init)
			res.hasVideo = res.codec != ""
		}
		if res.hasVideo {
			res.starts[i] = c.checkSegmentStart(ctx, segURI, file, res.codec)
		}
		_ = os.Remove(file)
	}
	if complete && seconds > 0 {
		res.measured, res.peak, res.avg = true, peak, bits/seconds
	}
	return res
}

func slice(b []byte, r *byteRange) ([]byte, error) {
	if r.Offset+r.Length > int64(len(b)) {
		return nil, fmt.Errorf("byte range %d@%d beyond %d bytes", r.Length, r.Offset, len(b))
	}
	return b[r.Offset : r.Offset+r.Length], nil
}

func (c *checker) writeTemp(parts ...[]byte) (string, error) {
	f, err := os.CreateTemp(c.tmp, "seg-*.mp4")
	if err != nil {
		return "", err
	}
	for _, p := range parts {
		if _, err := f.Write(p); err != nil {
			f.Close()
			return "", err
		}
	}
	return f.Name(), f.Close()
}

// checkBandwidth compares the declared bit rates with the measured ones.
func (c *checker) checkBandwidth(uri string, attrs map[string]string, peak, avg float64) {
	if bw, err := positiveInt(attrs, "BANDWIDTH"); err == nil && float64(bw) < (1-bandwidthTolerance)*peak {
		c.report.add(RuleVariantBandwidth, uri, "BANDWIDTH %d < %.0f%% of the measured peak segment bit rate %.0f", bw, 100*(1-bandwidthTolerance), peak)
	}
	if a, err := positiveInt(attrs, "AVERAGE-BANDWIDTH"); err == nil && math.Abs(float64(a)-avg) > bandwidthTolerance*avg {
		c.report.add(RuleVariantAverageBandwidth, uri, "AVERAGE-BANDWIDTH %d not within ±%.0f%% of the measured average %.0f", a, 100*bandwidthTolerance, avg)
	}
}

// compareVariants checks what must agree across the variants (the video
// ones: audio renditions are not among them, their AAC frames never end
// exactly on a video segment's boundary). Growing EVENT playlists are
// compared on the segments they all have so far.
func (c *checker) compareVariants(rs []*variantResult) {
	if len(rs) < 2 {
		return
	}
	ref := rs[0]
	for _, r := range rs[1:] {
		if ref.media.TargetErr == nil && r.media.TargetErr == nil && r.media.Target != ref.media.Target {
			c.report.add(RuleVariantsTargetDuration, r.uri, "TARGETDURATION %d, %s has %d", r.media.Target, ref.uri, ref.media.Target)
		}
		n := len(r.media.Segments)
		if growing := r.media.growing() || ref.media.growing(); len(ref.media.Segments) != n && !growing {
			c.report.add(RuleVariantsSegmentCount, r.uri, "%d segments, %s has %d", len(r.media.Segments), ref.uri, len(ref.media.Segments))
			continue
		}
		n = min(n, len(ref.media.Segments))
		for i, s := range r.media.Segments[:n] {
			if d := ref.media.Segments[i].Duration; math.Abs(s.Duration-d) > alignTolerance+1e-9 {
				c.report.add(RuleVariantsSegmentDurations, r.uri, "segment %d lasts %gs, in %s %gs", i, s.Duration, ref.uri, d)
				break
			}
		}
	}
	// Measured start times: compare every video variant with the first one.
	var vref *variantResult
	for _, r := range rs {
		if !r.hasVideo {
			continue
		}
		if vref == nil {
			vref = r
			continue
		}
		if len(r.starts) != len(vref.starts) && !r.media.growing() && !vref.media.growing() {
			continue // reported as a segment count problem
		}
		for i, st := range r.starts[:min(len(r.starts), len(vref.starts))] {
			if w := vref.starts[i]; !math.IsNaN(st) && !math.IsNaN(w) && math.Abs(st-w) > alignTolerance+1e-9 {
				c.report.add(RuleVariantsSegmentStart, r.uri, "segment %d starts at %.6fs, in %s at %.6fs", i, st, vref.uri, w)
				break
			}
		}
	}
}
