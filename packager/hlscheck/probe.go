package hlscheck

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
)

// run runs a binary and returns its stdout, with a stderr tail in errors.
func run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tail := stderr.String()
		if len(tail) > 1024 {
			tail = tail[len(tail)-1024:]
		}
		return nil, fmt.Errorf("%s: %w: %s", bin, err, strings.TrimSpace(tail))
	}
	return stdout.Bytes(), nil
}

type probeStream struct {
	CodecType string `json:"codec_type"`
	CodecName string `json:"codec_name"`
	Profile   string `json:"profile"`
	Level     int    `json:"level"`
	Width     int    `json:"width"`
	Height    int    `json:"height"`
}

// h264ProfileIDC maps ffprobe's H.264 profile names to profile_idc.
var h264ProfileIDC = map[string]int{
	"Baseline": 66, "Constrained Baseline": 66, "Main": 77, "Extended": 88,
	"High": 100, "High 10": 110, "High 4:2:2": 122, "High 4:4:4 Predictive": 244,
}

// checkStreams probes init + first segment and compares CODECS and
// RESOLUTION with the streams; it returns the video codec name, "" without
// video.
func (c *checker) checkStreams(ctx context.Context, segURI, file string, attrs map[string]string, init []byte) string {
	out, err := run(ctx, c.cfg.FFprobe, "-v", "error", "-f", "mp4",
		"-show_entries", "stream=codec_type,codec_name,profile,level,width,height",
		"-of", "json", file)
	if err != nil {
		c.report.add(RuleSegmentProbe, segURI, "%v", err)
		return ""
	}
	var res struct {
		Streams []probeStream `json:"streams"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		c.report.add(RuleSegmentProbe, segURI, "ffprobe output: %v", err)
		return ""
	}
	var video, audio *probeStream
	for i := range res.Streams {
		s := &res.Streams[i]
		switch {
		case s.CodecType == "video" && video == nil:
			video = s
		case s.CodecType == "audio" && audio == nil:
			audio = s
		}
	}
	declared, hasCodecs := attrs["CODECS"]
	dVideo, dAudio, cerr := codecList(declared)
	if hasCodecs && cerr == nil { // a malformed CODECS is reported by the master rules
		c.compareCodecs(segURI, declared, dVideo, dAudio, video, audio, init)
	}
	if r, ok := attrs["RESOLUTION"]; ok && video != nil {
		if got := fmt.Sprintf("%dx%d", video.Width, video.Height); got != r {
			c.report.add(RuleSegmentResolution, segURI, "RESOLUTION=%s, the video is %s", r, got)
		}
	}
	if video == nil {
		return ""
	}
	return video.CodecName
}

func (c *checker) compareCodecs(segURI, declared, dVideo, dAudio string, video, audio *probeStream, init []byte) {
	bad := func(format string, args ...any) {
		c.report.add(RuleSegmentCodecs, segURI, "CODECS=%q: %s", declared, fmt.Sprintf(format, args...))
	}
	switch {
	case video == nil && dVideo != "":
		bad("declares %s but there is no video stream", dVideo)
	case video != nil && dVideo == "":
		bad("no video codec for the %s video stream", video.CodecName)
	case video != nil:
		if video.CodecName != "h264" {
			bad("declares %s, the video is %s", dVideo, video.CodecName)
			break
		}
		pIDC, _ := strconv.ParseUint(dVideo[5:7], 16, 8)
		lvl, _ := strconv.ParseUint(dVideo[9:11], 16, 8)
		if want, ok := h264ProfileIDC[video.Profile]; !ok || int(pIDC) != want {
			bad("profile_idc 0x%02x, the video is H.264 %q", pIDC, video.Profile)
		}
		if int(lvl) != video.Level {
			bad("level %d, the video is level %d", lvl, video.Level)
		}
		// RFC 6381: the six hex digits are the avcC profile,
		// compatibility and level bytes.
		if want, ok := avcCCodec(init); ok && !strings.EqualFold(want, dVideo) {
			bad("the init section's avcC says %s", want)
		}
	}
	var wantAudio string
	if audio != nil {
		switch {
		case audio.CodecName == "aac" && (audio.Profile == "LC" || audio.Profile == ""):
			wantAudio = "mp4a.40.2"
		case audio.CodecName == "aac" && audio.Profile == "HE-AAC":
			wantAudio = "mp4a.40.5"
		default:
			wantAudio = audio.CodecName + "/" + audio.Profile
		}
	}
	if wantAudio != dAudio {
		switch {
		case audio == nil:
			bad("declares %s but there is no audio stream", dAudio)
		case dAudio == "":
			bad("no audio codec for the %s audio stream", wantAudio)
		default:
			bad("declares %s, the audio is %s", dAudio, wantAudio)
		}
	}
}

// avcCCodec returns avc1.PPCCLL from the first avcC box in init.
func avcCCodec(init []byte) (string, bool) {
	i := bytes.Index(init, []byte("avcC"))
	if i < 0 || i+8 > len(init) {
		return "", false
	}
	b := init[i+4:]
	if b[0] != 1 { // configurationVersion
		return "", false
	}
	return fmt.Sprintf("avc1.%02x%02x%02x", b[1], b[2], b[3]), true
}

// checkSegmentStart checks that the segment starts with an IDR key frame
// and returns the pts of its first video frame (NaN when unknown).
func (c *checker) checkSegmentStart(ctx context.Context, segURI, file, codec string) float64 {
	// showall: output frames even before a key frame, so a segment that
	// starts with a P frame shows that P frame first.
	out, err := run(ctx, c.cfg.FFprobe, "-v", "error", "-f", "mp4", "-flags2", "showall",
		"-select_streams", "v:0", "-show_entries", "frame=key_frame,pict_type,pts_time",
		"-read_intervals", "%+#1", "-of", "json", file)
	if err != nil {
		c.report.add(RuleSegmentProbe, segURI, "%v", err)
		return math.NaN()
	}
	var res struct {
		Frames []struct {
			KeyFrame int    `json:"key_frame"`
			PictType string `json:"pict_type"`
			PTSTime  string `json:"pts_time"`
		} `json:"frames"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		c.report.add(RuleSegmentProbe, segURI, "ffprobe output: %v", err)
		return math.NaN()
	}
	if len(res.Frames) == 0 {
		c.report.add(RuleSegmentKeyframe, segURI, "the first video packet yields no frame (not a key frame)")
		return math.NaN()
	}
	f := res.Frames[0]
	if f.KeyFrame != 1 || f.PictType != "I" {
		c.report.add(RuleSegmentKeyframe, segURI, "first video frame is key_frame=%d pict_type=%s", f.KeyFrame, f.PictType)
	}
	pts, err := strconv.ParseFloat(f.PTSTime, 64)
	if err != nil {
		pts = math.NaN()
	}

	if codec != "h264" {
		return pts
	}
	// The NAL units of the first access unit: an I frame with a recovery
	// point (open GOP) is a key frame for ffprobe but not an IDR.
	// -copyinkf: stream copy otherwise drops packets before a key frame.
	au, err := run(ctx, c.cfg.FFmpeg, "-v", "error", "-nostdin", "-f", "mp4", "-i", file,
		"-map", "0:v:0", "-c", "copy", "-copyinkf", "-frames:v", "1", "-bsf:v", "h264_mp4toannexb", "-f", "h264", "-")
	if err != nil {
		c.report.add(RuleSegmentProbe, segURI, "first access unit: %v", err)
		return pts
	}
	if t, ok := firstVCLType(au); !ok {
		c.report.add(RuleSegmentIDR, segURI, "no coded slice in the first access unit")
	} else if t != 5 {
		c.report.add(RuleSegmentIDR, segURI, "first access unit is a NAL type %d slice, not IDR (5)", t)
	}
	return pts
}

// firstVCLType returns the nal_unit_type of the first coded slice (types
// 1–5) of an H.264 Annex B byte stream.
func firstVCLType(b []byte) (int, bool) {
	for i := 0; i+3 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			t := int(b[i+3] & 0x1f)
			if t >= 1 && t <= 5 {
				return t, true
			}
			i += 2
		}
	}
	return 0, false
}
