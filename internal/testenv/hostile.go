package testenv

// Hostile sources built from generated clips: MP4s that make a probe see
// one thing and a decoder another.

import (
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// box is one ISO BMFF box: its type and its bytes, header included.
type box struct {
	typ  string
	data []byte
}

// boxes splits b into boxes (32-bit sizes only: the small files of these
// tests).
func boxes(tb testing.TB, b []byte) []box {
	tb.Helper()
	var out []box
	for len(b) >= 8 {
		n := int(binary.BigEndian.Uint32(b))
		if n < 8 || n > len(b) {
			tb.Fatalf("bad box size %d", n)
		}
		out = append(out, box{string(b[4:8]), b[:n]})
		b = b[n:]
	}
	return out
}

// CoverFirstMP4 is a 320x180 H.264 + AAC MP4 whose first stream is a
// 2000x2000 PNG cover (attached picture): the mp4 muxer writes covers in
// moov/udta after the tracks, so udta is moved before them (moov keeps its
// size: no chunk offset moves).
func CoverFirstMP4(tb testing.TB) string {
	tb.Helper()
	clip := Clip(tb, ClipSpec{Seconds: 2})
	dir := tb.TempDir()
	cover, withCover := filepath.Join(dir, "cover.png"), filepath.Join(dir, "cover-last.mp4")
	ffmpeg(tb, "-f", "lavfi", "-i", "color=c=red:s=2000x2000:d=1", "-frames:v", "1", cover)
	ffmpeg(tb, "-i", cover, "-i", clip, "-map", "0", "-map", "1", "-c", "copy",
		"-disposition:v:0", "attached_pic", withCover)
	b, err := os.ReadFile(withCover)
	if err != nil {
		tb.Fatal(err)
	}
	var out []byte
	for _, top := range boxes(tb, b) {
		if top.typ != "moov" {
			out = append(out, top.data...)
			continue
		}
		var udta, rest []byte
		for _, k := range boxes(tb, top.data[8:]) {
			if k.typ == "udta" {
				udta = append(udta, k.data...)
			} else {
				rest = append(rest, k.data...)
			}
		}
		out = append(append(append(out, top.data[:8]...), udta...), rest...)
	}
	path := filepath.Join(dir, "cover-first.mp4")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		tb.Fatal(err)
	}
	if got := probe(tb, path, "-show_entries", "stream=index,codec_name,width:stream_disposition=attached_pic"); !strings.HasPrefix(got, "0,png,2000,1") {
		tb.Fatalf("the cover is not the first stream: %q", got)
	}
	return path
}

// LyingMP4 is a clip of seconds whose headers (mvhd, tkhd, mdhd) claim it
// lasts claim seconds.
func LyingMP4(tb testing.TB, seconds, claim float64) string {
	tb.Helper()
	clip := Clip(tb, ClipSpec{Seconds: seconds, Width: 160, Height: 90, Rate: "10",
		ExtraArgs: []string{"-use_editlist", "0"}})
	b, err := os.ReadFile(clip)
	if err != nil {
		tb.Fatal(err)
	}
	var movieScale uint32
	var patch func(bs []box)
	patch = func(bs []box) {
		for _, x := range bs {
			p := x.data[8:]
			switch x.typ {
			case "moov", "trak", "mdia":
				patch(boxes(tb, p))
			case "mvhd": // version, flags, ctime, mtime, timescale, duration
				movieScale = binary.BigEndian.Uint32(p[12:])
				binary.BigEndian.PutUint32(p[16:], uint32(claim*float64(movieScale)))
			case "tkhd": // version, flags, ctime, mtime, track id, reserved, duration
				binary.BigEndian.PutUint32(p[20:], uint32(claim*float64(movieScale)))
			case "mdhd": // version, flags, ctime, mtime, timescale, duration
				binary.BigEndian.PutUint32(p[16:], uint32(claim*float64(binary.BigEndian.Uint32(p[12:]))))
			}
		}
	}
	patch(boxes(tb, b))
	path := filepath.Join(tb.TempDir(), "lying.mp4")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	if d, _ := strconv.ParseFloat(probe(tb, path, "-show_entries", "format=duration"), 64); math.Abs(d-claim) > 0.1 {
		tb.Fatalf("the header says %v s, want %v", d, claim)
	}
	return path
}

// probe runs ffprobe on file with args, CSV without keys.
func probe(tb testing.TB, file string, args ...string) string {
	tb.Helper()
	full := append(append([]string{"-v", "error"}, args...), "-of", "csv=p=0", file)
	out, err := exec.Command("ffprobe", full...).Output()
	if err != nil {
		tb.Fatalf("ffprobe %q: %v", full, err)
	}
	return strings.TrimSpace(string(out))
}
