package ffmpeg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// MaxProbeOutput bounds the JSON ffprobe may print; a hostile file with
// thousands of streams must not exhaust memory.
const MaxProbeOutput = 8 << 20

// ErrOutputTooLarge is returned (wrapped) by Probe when ffprobe prints more
// than MaxProbeOutput bytes. It indicates hostile or absurd input.
var ErrOutputTooLarge = errors.New("ffprobe output too large")

// ReadTimeout is how long kiln lets ffmpeg and ffprobe wait on one network
// read or connect of an input (-rw_timeout): a stalled object store fails
// the task, to be retried, instead of holding it until its time limit.
const ReadTimeout = 30 * time.Second

// ProbeOptions are ffprobe input options, placed before -i. Zero values
// leave ffprobe's defaults. Untrusted input should always set
// FormatWhitelist (docs/architecture.md, "Untrusted media").
type ProbeOptions struct {
	FormatWhitelist   string        // -format_whitelist when non-empty, e.g. "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm"
	ProtocolWhitelist string        // -protocol_whitelist when non-empty, e.g. "file" or "https,tls,tcp"
	ProbeSize         int64         // -probesize in bytes when > 0
	AnalyzeDuration   time.Duration // -analyzeduration (sent in µs) when > 0
	// ReadTimeout is -rw_timeout (sent in µs) when > 0: a network read or
	// connect that waits longer fails with "Connection timed out".
	ReadTimeout time.Duration
	// Headers is -headers when non-empty: extra HTTP request headers,
	// each ending in CRLF, sent with every request for the input (e.g. an
	// If-Match pinning the object's ETag).
	Headers string
}

// args returns the ffprobe command line for input.
func (o ProbeOptions) args(input string) []string {
	args := []string{"-hide_banner", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"}
	if o.FormatWhitelist != "" {
		args = append(args, "-format_whitelist", o.FormatWhitelist)
	}
	if o.ProtocolWhitelist != "" {
		args = append(args, "-protocol_whitelist", o.ProtocolWhitelist)
	}
	if o.ProbeSize > 0 {
		args = append(args, "-probesize", strconv.FormatInt(o.ProbeSize, 10))
	}
	if o.AnalyzeDuration > 0 {
		args = append(args, "-analyzeduration", strconv.FormatInt(o.AnalyzeDuration.Microseconds(), 10))
	}
	if o.ReadTimeout > 0 {
		args = append(args, "-rw_timeout", strconv.FormatInt(o.ReadTimeout.Microseconds(), 10))
	}
	if o.Headers != "" {
		args = append(args, "-headers", o.Headers)
	}
	return append(args, "-i", input)
}

// Probe runs ffprobe on input (a local path or an http(s) URL) and parses
// its JSON. ffprobe failures are *ExitError; oversized output wraps
// ErrOutputTooLarge; unparsable output is a plain error.
func (r *Runner) Probe(ctx context.Context, input string, opts ProbeOptions) (*ProbeResult, error) {
	if input == "" {
		return nil, errors.New("ffprobe: empty input")
	}
	out := &limitedBuffer{max: MaxProbeOutput}
	err := r.run(ctx, "ffprobe", r.ffprobe, opts.args(input), out)
	if out.overflow {
		// Checked first: the write error may have surfaced as ffprobe's
		// death by SIGPIPE, which is not an infrastructure failure.
		return nil, fmt.Errorf("ffprobe %s: %w (> %d bytes)", redactURLs(input), ErrOutputTooLarge, MaxProbeOutput)
	}
	if err != nil {
		return nil, err
	}
	return ParseProbe(out.buf.Bytes())
}

// limitedBuffer collects up to max bytes and then fails writes, which makes
// exec close the pipe so the child stops.
type limitedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.buf.Len()+len(p) > b.max {
		b.overflow = true
		return 0, ErrOutputTooLarge
	}
	return b.buf.Write(p)
}

// ProbeResult is the typed ffprobe output: the fields kiln needs, plus the
// raw JSON for anything else.
type ProbeResult struct {
	Format  ProbeFormat
	Streams []ProbeStream
	Raw     json.RawMessage
}

// ProbeFormat is ffprobe's "format" section. Missing or "N/A" values are 0.
type ProbeFormat struct {
	FormatName string  // e.g. "mov,mp4,m4a,3gp,3g2,mj2"
	Duration   float64 // seconds
	Size       int64   // bytes
	BitRate    int64   // bits/s
	NbStreams  int
}

// ProbeStream is one of ffprobe's "streams". Missing or "N/A" values are
// zero.
type ProbeStream struct {
	Index             int
	CodecType         string // "video", "audio", "subtitle", "data", "attachment"
	CodecName         string
	Profile           string
	Level             int
	Width, Height     int
	PixFmt            string
	SampleAspectRatio string // "1:1"; "" or "0:1" when unknown
	FieldOrder        string // "progressive", "tt", "bb", "tb", "bt", "unknown"
	RFrameRate        string // "30000/1001"; see ParseRational
	AvgFrameRate      string
	ColorTransfer     string
	ColorPrimaries    string
	ColorSpace        string
	BitsPerRawSample  int
	Channels          int
	ChannelLayout     string
	SampleRate        int
	SampleFmt         string  // the decoder's ("fltp"…): "" until a packet was decoded
	Duration          float64 // seconds
	BitRate           int64
	NbFrames          int64
	// Rotation is the display-matrix rotation in degrees as ffprobe prints
	// it (side_data_list "Display Matrix" rotation), normalised to 0, 90,
	// 180 or 270 (ffprobe's -90 becomes 270; other angles snap to the
	// nearest quarter turn). Without a display matrix the legacy
	// tags.rotate is used, converted to the same convention (it is the
	// negation). For 90 and 270 the displayed width and height are swapped.
	Rotation int
	// AttachedPic marks cover art (disposition.attached_pic), which is a
	// video stream that is not the video.
	AttachedPic bool
}

// Video returns the first video stream that is not an attached picture, or nil.
func (p *ProbeResult) Video() *ProbeStream {
	for i := range p.Streams {
		if s := &p.Streams[i]; s.CodecType == "video" && !s.AttachedPic {
			return s
		}
	}
	return nil
}

// Audio returns the first audio stream, or nil.
func (p *ProbeResult) Audio() *ProbeStream {
	for i := range p.Streams {
		if s := &p.Streams[i]; s.CodecType == "audio" {
			return s
		}
	}
	return nil
}

// ParseRational parses an ffprobe rational such as "30000/1001" (→ 29.97)
// or a plain number. "0/0", "", garbage, and non-finite results give 0.
func ParseRational(s string) float64 {
	num, den, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return parseFloat(num)
	}
	d := parseFloat(den)
	if d == 0 {
		return 0
	}
	f := parseFloat(num) / d
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// ParseProbe parses the JSON printed by
// "ffprobe -print_format json -show_format -show_streams". Numbers may be
// JSON numbers or strings; missing, null and "N/A" values are 0.
func ParseProbe(data []byte) (*ProbeResult, error) {
	var raw struct {
		Format struct {
			FormatName string  `json:"format_name"`
			Duration   jsonNum `json:"duration"`
			Size       jsonNum `json:"size"`
			BitRate    jsonNum `json:"bit_rate"`
			NbStreams  jsonNum `json:"nb_streams"`
		} `json:"format"`
		Streams []struct {
			Index             jsonNum `json:"index"`
			CodecType         string  `json:"codec_type"`
			CodecName         string  `json:"codec_name"`
			Profile           string  `json:"profile"`
			Level             jsonNum `json:"level"`
			Width             jsonNum `json:"width"`
			Height            jsonNum `json:"height"`
			PixFmt            string  `json:"pix_fmt"`
			SampleAspectRatio string  `json:"sample_aspect_ratio"`
			FieldOrder        string  `json:"field_order"`
			RFrameRate        string  `json:"r_frame_rate"`
			AvgFrameRate      string  `json:"avg_frame_rate"`
			ColorTransfer     string  `json:"color_transfer"`
			ColorPrimaries    string  `json:"color_primaries"`
			ColorSpace        string  `json:"color_space"`
			BitsPerRawSample  jsonNum `json:"bits_per_raw_sample"`
			Channels          jsonNum `json:"channels"`
			ChannelLayout     string  `json:"channel_layout"`
			SampleRate        jsonNum `json:"sample_rate"`
			SampleFmt         string  `json:"sample_fmt"`
			Duration          jsonNum `json:"duration"`
			BitRate           jsonNum `json:"bit_rate"`
			NbFrames          jsonNum `json:"nb_frames"`
			Disposition       struct {
				AttachedPic jsonNum `json:"attached_pic"`
			} `json:"disposition"`
			Tags struct {
				Rotate jsonNum `json:"rotate"`
			} `json:"tags"`
			SideDataList []struct {
				SideDataType string  `json:"side_data_type"`
				Rotation     jsonNum `json:"rotation"`
			} `json:"side_data_list"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("ffprobe: parse json: %w", err)
	}

	res := &ProbeResult{
		Format: ProbeFormat{
			FormatName: raw.Format.FormatName,
			Duration:   raw.Format.Duration.float(),
			Size:       raw.Format.Size.int64(),
			BitRate:    raw.Format.BitRate.int64(),
			NbStreams:  raw.Format.NbStreams.int(),
		},
		Streams: make([]ProbeStream, 0, len(raw.Streams)),
		Raw:     json.RawMessage(bytes.Clone(data)),
	}
	for _, s := range raw.Streams {
		st := ProbeStream{
			Index:             s.Index.int(),
			CodecType:         s.CodecType,
			CodecName:         s.CodecName,
			Profile:           s.Profile,
			Level:             s.Level.int(),
			Width:             s.Width.int(),
			Height:            s.Height.int(),
			PixFmt:            s.PixFmt,
			SampleAspectRatio: s.SampleAspectRatio,
			FieldOrder:        s.FieldOrder,
			RFrameRate:        s.RFrameRate,
			AvgFrameRate:      s.AvgFrameRate,
			ColorTransfer:     s.ColorTransfer,
			ColorPrimaries:    s.ColorPrimaries,
			ColorSpace:        s.ColorSpace,
			BitsPerRawSample:  s.BitsPerRawSample.int(),
			Channels:          s.Channels.int(),
			ChannelLayout:     s.ChannelLayout,
			SampleRate:        s.SampleRate.int(),
			SampleFmt:         s.SampleFmt,
			Duration:          s.Duration.float(),
			BitRate:           s.BitRate.int64(),
			NbFrames:          s.NbFrames.int64(),
			AttachedPic:       s.Disposition.AttachedPic.int() != 0,
		}
		if st.SampleFmt == "unknown" { // what other ffprobe writers print
			st.SampleFmt = ""
		}
		if s.Tags.Rotate != "" {
			st.Rotation = normaliseRotation(-s.Tags.Rotate.float())
		}
		for _, sd := range s.SideDataList {
			if sd.SideDataType == "Display Matrix" && sd.Rotation != "" {
				st.Rotation = normaliseRotation(sd.Rotation.float())
				break
			}
		}
		res.Streams = append(res.Streams, st)
	}
	return res, nil
}

// normaliseRotation maps any angle in degrees to 0, 90, 180 or 270.
func normaliseRotation(deg float64) int {
	q := math.Round(deg / 90)
	if math.IsNaN(q) || math.IsInf(q, 0) {
		return 0
	}
	return int(math.Mod(math.Mod(q, 4)+4, 4)) * 90
}

// jsonNum holds a JSON number or a numeric string as ffprobe prints them
// ("2.000000", "N/A", 13). The zero value, null and garbage read as 0.
type jsonNum string

func (n *jsonNum) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*n = jsonNum(strings.TrimSpace(s))
		return nil
	}
	if string(b) == "null" {
		*n = ""
		return nil
	}
	// Anything else (number, bool, object) is kept as text; non-numbers
	// simply read as 0.
	*n = jsonNum(b)
	return nil
}

func (n jsonNum) float() float64 { return parseFloat(string(n)) }

func (n jsonNum) int64() int64 {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i
	}
	f := n.float()
	if f >= math.MaxInt64 || f <= math.MinInt64 {
		return 0
	}
	return int64(f)
}

func (n jsonNum) int() int {
	i := n.int64()
	if i > math.MaxInt32 || i < math.MinInt32 {
		return 0
	}
	return int(i)
}
