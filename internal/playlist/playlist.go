// Package playlist writes HLS master playlists. It is the one writer of
// kiln's master playlist: the catalog serves it from its own state, tests and
// tools render it from packaged renditions.
package playlist

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ContentType is the media type of HLS playlists.
const ContentType = "application/vnd.apple.mpegurl"

// Variant is one EXT-X-STREAM-INF of a master playlist.
type Variant struct {
	// Name is the rendition name; the variant's URI is "<Name>/index.m3u8".
	// It must be URL-safe.
	Name string
	// Width and Height are the picture size; 0 for audio (see Master).
	Width, Height int
	// FrameRate in frames per second; 0 for audio only.
	FrameRate float64
	// Bandwidth is the peak segment bit rate, AverageBandwidth the average,
	// in bit/s.
	Bandwidth, AverageBandwidth int64
	// Codecs is the RFC 6381 codecs list; it must be attribute-safe (no
	// quote).
	Codecs string
}

// Master renders the HLS master playlist of variants: version 7,
// independent segments, one EXT-X-STREAM-INF per variant with measured
// BANDWIDTH and AVERAGE-BANDWIDTH, CODECS, RESOLUTION and FRAME-RATE,
// ordered by bandwidth (lowest first, so a player that starts with the first
// variant starts fast), URIs "<name>/index.m3u8".
//
// An audio variant (no picture, see Variant.Audio) beside video variants is
// not a variant of its own but the audio group "audio" every video variant
// refers to, as Apple's HLS authoring spec asks: one EXT-X-MEDIA
// TYPE=AUDIO (default, autoselect, stereo: the transcode always encodes
// two channels), and on each EXT-X-STREAM-INF AUDIO="audio", CODECS the
// video's and the audio's, BANDWIDTH and AVERAGE-BANDWIDTH the video's plus
// the audio's (a variant's bit rate is all a player downloads to play it).
// Alone (an audio-only asset) the audio is a plain variant, and video
// variants with their audio muxed in (assets made before the audio group)
// are written as they come.
//
// It is written by hand rather than with github.com/grafov/m3u8 (which the
// tests use to parse it back): that library always emits PROGRAM-ID, an
// attribute removed in protocol version 6, and caps BANDWIDTH at uint32.
// Callers must pass variants whose names and codecs are URL- and
// attribute-safe (the packager makes them; the catalog validates them).
func Master(variants []Variant) []byte {
	vs := slices.SortedStableFunc(slices.Values(variants), func(a, b Variant) int {
		return cmp.Compare(a.Bandwidth, b.Bandwidth)
	})
	audio, video := splitAudio(vs)
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	if audio != nil {
		fmt.Fprintf(&b, `#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="%s",NAME="%s",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="%s/index.m3u8"`+"\n",
			AudioGroup, audio.Name, audio.Name)
		vs = video
	}
	for _, v := range vs {
		bw, avg, codecs := v.Bandwidth, v.AverageBandwidth, v.Codecs
		if audio != nil {
			bw += audio.Bandwidth
			if avg > 0 {
				avg += cmp.Or(audio.AverageBandwidth, audio.Bandwidth)
			}
			codecs += "," + audio.Codecs
		}
		fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%d", bw)
		if avg > 0 {
			fmt.Fprintf(&b, ",AVERAGE-BANDWIDTH=%d", avg)
		}
		b.WriteString(`,CODECS="` + codecs + `"`)
		if v.Width > 0 && v.Height > 0 {
			fmt.Fprintf(&b, ",RESOLUTION=%dx%d", v.Width, v.Height)
		}
		if v.FrameRate > 0 {
			b.WriteString(",FRAME-RATE=" + strconv.FormatFloat(v.FrameRate, 'f', 3, 64))
		}
		if audio != nil {
			b.WriteString(`,AUDIO="` + AudioGroup + `"`)
		}
		b.WriteString("\n" + v.Name + "/index.m3u8\n")
	}
	return []byte(b.String())
}

// AudioGroup is the GROUP-ID of the audio rendition in master playlists.
const AudioGroup = "audio"

// Audio reports whether v is an audio rendition: no picture.
func (v Variant) Audio() bool { return v.Width == 0 && v.Height == 0 }

// splitAudio returns the audio variant that becomes the audio group (the
// first, when there are several) and the video variants, or nil and vs
// when there is no audio variant or nothing but audio.
func splitAudio(vs []Variant) (*Variant, []Variant) {
	i := slices.IndexFunc(vs, Variant.Audio)
	if i < 0 {
		return nil, vs
	}
	video := slices.DeleteFunc(slices.Clone(vs), Variant.Audio)
	if len(video) == 0 {
		return nil, vs
	}
	return &vs[i], video
}
