package hlscheck

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/internal/playlist"
)

// Playlists as ffmpeg's HLS muxer writes them with the packager's options
// (packager.HLSArgs: VOD, fMP4, independent segments), in single-file
// (byte-range) mode, and with MPEG-TS segments.
const (
	fuzzFFmpegMedia = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init.mp4"
#EXTINF:2.000000,
seg_00000.m4s
#EXTINF:2.000000,
seg_00001.m4s
#EXTINF:2.000000,
seg_00002.m4s
#EXTINF:1.000000,
seg_00003.m4s
#EXT-X-ENDLIST
`
	fuzzFFmpegSingleFile = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="index.m4s",BYTERANGE="1354@0"
#EXTINF:2.000000,
#EXT-X-BYTERANGE:197125@1354
index.m4s
#EXTINF:2.000000,
#EXT-X-BYTERANGE:216301@198479
index.m4s
#EXTINF:1.000000,
#EXT-X-BYTERANGE:113629
index.m4s
#EXT-X-ENDLIST
`
	fuzzFFmpegTS = `#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXTINF:2.000000,
index0.ts
#EXTINF:1.000000,
index1.ts
#EXT-X-ENDLIST
`
)

// FuzzCheckPlaylist runs the pure checks, CheckMasterPlaylist,
// CheckMediaPlaylist and CheckEventPlaylist, on arbitrary text. Seeds: kiln's master playlist
// writer (internal/playlist.Master, video and audio-only variants), ffmpeg's
// media playlists, and broken variants of them (CRLF, byte ranges,
// attributes out of range, a live playlist, a master with renditions).
//
// Properties: no panic; every problem has a rule of its checker (master.*
// or media.*, from the Rule constants), a non-empty detail and no URI; a
// type problem comes alone; a text is never both a master and a media
// playlist (when one checker finds its type, the other reports the type
// problem); the checks are deterministic (but for the wording of
// grafov/m3u8's own decoding error, see stable).
func FuzzCheckPlaylist(f *testing.F) {
	master := playlist.Master([]playlist.Variant{
		{Name: "720p", Width: 1280, Height: 720, FrameRate: 29.97, Bandwidth: 3_400_000, AverageBandwidth: 3_100_000, Codecs: "avc1.64001f,mp4a.40.2"},
		{Name: "360p", Width: 640, Height: 360, FrameRate: 29.97, Bandwidth: 950_000, AverageBandwidth: 900_000, Codecs: "avc1.64001e,mp4a.40.2"},
	})
	audio := playlist.Master([]playlist.Variant{{Name: "audio", Bandwidth: 140_000, AverageBandwidth: 130_000, Codecs: "mp4a.40.2"}})
	group := playlist.Master([]playlist.Variant{
		{Name: "720p", Width: 1280, Height: 720, FrameRate: 29.97, Bandwidth: 3_400_000, AverageBandwidth: 3_100_000, Codecs: "avc1.64001f"},
		{Name: "audio", Bandwidth: 140_000, AverageBandwidth: 130_000, Codecs: "mp4a.40.2"},
	})
	event := strings.Replace(strings.TrimSuffix(fuzzFFmpegMedia, "#EXT-X-ENDLIST\n"), "PLAYLIST-TYPE:VOD", "PLAYLIST-TYPE:EVENT", 1)
	for _, s := range []string{
		string(master),
		string(audio),
		string(group),
		strings.Replace(string(group), `CHANNELS="2",`, "", 1),
		strings.Replace(string(group), `AUDIO="audio"`, `AUDIO="other"`, 1),
		event,
		event + "#EXT-X-ENDLIST\n",
		fuzzFFmpegMedia,
		fuzzFFmpegSingleFile,
		fuzzFFmpegTS,
		strings.ReplaceAll(string(master), "\n", "\r\n"),
		strings.ReplaceAll(fuzzFFmpegMedia, "\n", "\r\n"),
		strings.Replace(string(master), "BANDWIDTH=950000", "BANDWIDTH=99999999999999999999", 1),
		strings.Replace(string(master), `CODECS="avc1.64001e,mp4a.40.2"`, `CODECS="avc1.64001e,avc1.64001e,mp4a.40.2,"`, 1),
		strings.Replace(string(master), "RESOLUTION=640x360", "RESOLUTION=0x-1", 1),
		strings.Replace(fuzzFFmpegSingleFile, "197125@1354", "-1@9223372036854775807", 1),
		strings.Replace(fuzzFFmpegMedia, "#EXTINF:2.000000,", "#EXTINF:NaN,", 1),
		strings.Replace(fuzzFFmpegMedia, "#EXT-X-TARGETDURATION:2", "#EXT-X-TARGETDURATION:-2", 1),
		strings.Replace(fuzzFFmpegMedia, "#EXT-X-PLAYLIST-TYPE:VOD\n", "", 1),
		"#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"a/index.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\nv/index.m3u8\n",
		"#EXTM3U\n#EXTINF:1,\n",
		"#EXTM3U\n",
		"",
	} {
		f.Add([]byte(s))
	}
	masterRules := ruleSet(RuleMasterParse, RuleMasterType, RuleMasterVariants, RuleMasterBandwidth,
		RuleMasterAverageBandwidth, RuleMasterAverageAbovePeak, RuleMasterCodecs, RuleMasterResolution,
		RuleMasterFrameRate, RuleMasterIndependent, RuleMasterProgramID, RuleMasterOrder, RuleMasterURIUnique,
		RuleMasterMedia, RuleMasterAudioGroup)
	mediaRules := ruleSet(RuleMediaParse, RuleMediaType, RuleMediaVOD, RuleMediaEndlist, RuleMediaMap,
		RuleMediaVersion, RuleMediaTargetDuration, RuleMediaExtinfTarget, RuleMediaSegments, RuleMediaSegmentDuration)
	f.Fuzz(func(t *testing.T, data []byte) {
		mp := CheckMasterPlaylist(data)
		checkProblems(t, "master", mp, masterRules, RuleMasterType)
		dp := CheckMediaPlaylist(data)
		checkProblems(t, "media", dp, mediaRules, RuleMediaType)
		ep := CheckEventPlaylist(data)
		checkProblems(t, "event", ep, mediaRules, RuleMediaType)
		if len(ep) > len(dp) {
			t.Fatalf("the EVENT check is stricter than the VOD one:\nvod: %v\nevent: %v", dp, ep)
		}
		isMaster := !hasRule(mp, RuleMasterParse) && !hasRule(mp, RuleMasterType)
		isMedia := !hasRule(dp, RuleMediaParse) && !hasRule(dp, RuleMediaType)
		if isMaster && isMedia {
			t.Fatalf("read as both a master and a media playlist:\nmaster: %v\nmedia: %v", mp, dp)
		}
		if isMaster && !hasRule(dp, RuleMediaType) || isMedia && !hasRule(mp, RuleMasterType) {
			t.Fatalf("one checker decoded the playlist, the other reports no type problem:\nmaster: %v\nmedia: %v", mp, dp)
		}
		if again := CheckMasterPlaylist(data); !reflect.DeepEqual(stable(again), stable(mp)) {
			t.Fatalf("master check not deterministic: %v, then %v", mp, again)
		}
		if again := CheckMediaPlaylist(data); !reflect.DeepEqual(stable(again), stable(dp)) {
			t.Fatalf("media check not deterministic: %v, then %v", dp, again)
		}
	})
}

// stable drops the text of grafov/m3u8's strict-decoding errors: with several
// bad attributes on one tag it names whichever its map iteration meets first.
func stable(ps []Problem) []Problem {
	out := make([]Problem, len(ps))
	for i, p := range ps {
		if strings.HasPrefix(p.Detail, "strict decoding: ") {
			p.Detail = "strict decoding: …"
		}
		out[i] = p
	}
	return out
}

func ruleSet(rules ...string) map[string]bool {
	m := map[string]bool{}
	for _, r := range rules {
		m[r] = true
	}
	return m
}

func hasRule(ps []Problem, rule string) bool {
	for _, p := range ps {
		if p.Rule == rule {
			return true
		}
	}
	return false
}

func checkProblems(t *testing.T, kind string, ps []Problem, rules map[string]bool, typeRule string) {
	t.Helper()
	for _, p := range ps {
		switch {
		case !rules[p.Rule]:
			t.Fatalf("%s check: problem with rule %q, not one of its rules: %+v", kind, p.Rule, p)
		case strings.TrimSpace(p.Detail) == "":
			t.Fatalf("%s check: problem %q without a message", kind, p.Rule)
		case p.URI != "":
			t.Fatalf("%s check: problem %q carries URI %q", kind, p.Rule, p.URI)
		case p.Rule == typeRule && len(ps) != 1:
			t.Fatalf("%s check: %s problem among others: %v", kind, typeRule, ps)
		}
	}
}
