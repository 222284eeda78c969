package hlscheck

import (
	"slices"
	"strings"
	"testing"
)

const goodMaster = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=300000,AVERAGE-BANDWIDTH=250000,CODECS="avc1.64000c,mp4a.40.2",RESOLUTION=160x90,FRAME-RATE=30.000
90p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=600000,AVERAGE-BANDWIDTH=500000,CODECS="avc1.64000d,mp4a.40.2",RESOLUTION=320x180,FRAME-RATE=30.000
180p/index.m3u8
`

const goodMedia = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init.mp4"
#EXTINF:6.000000,
seg_00000.m4s
#EXTINF:1.000000,
seg_00001.m4s
#EXT-X-ENDLIST
`

// edit applies old→new replacements (each must match) to s.
func edit(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("edit: %q not in playlist", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func rules(ps []Problem) []string {
	var out []string
	for _, p := range ps {
		if !slices.Contains(out, p.Rule) {
			out = append(out, p.Rule)
		}
	}
	return out
}

func problemsText(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

func TestCheckMasterPlaylist(t *testing.T) {
	const v1 = `#EXT-X-STREAM-INF:BANDWIDTH=300000,AVERAGE-BANDWIDTH=250000,CODECS="avc1.64000c,mp4a.40.2",RESOLUTION=160x90,FRAME-RATE=30.000`
	tests := []struct {
		name  string
		pairs []string // edits of goodMaster
		text  string   // instead of goodMaster when set
		want  string   // the one rule, "" for none
	}{
		{name: "good", want: ""},
		{name: "kiln MasterPlaylist shape with 3 decimals", pairs: []string{"FRAME-RATE=30.000", "FRAME-RATE=29.970"}, want: ""},
		{name: "audio-only variant needs no resolution", pairs: []string{v1, `#EXT-X-STREAM-INF:BANDWIDTH=300000,AVERAGE-BANDWIDTH=250000,CODECS="mp4a.40.2"`}, want: ""},
		{name: "no EXTM3U", pairs: []string{"#EXTM3U\n", ""}, want: RuleMasterParse},
		{name: "media playlist", text: goodMedia, want: RuleMasterType},
		{name: "no variant", text: "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"a/index.m3u8\"\n", want: RuleMasterVariants},
		{name: "no BANDWIDTH", pairs: []string{"STREAM-INF:BANDWIDTH=300000,", "STREAM-INF:"}, want: RuleMasterBandwidth},
		{name: "zero BANDWIDTH", pairs: []string{"STREAM-INF:BANDWIDTH=300000,", "STREAM-INF:BANDWIDTH=0,"}, want: RuleMasterBandwidth},
		{name: "no AVERAGE-BANDWIDTH", pairs: []string{"AVERAGE-BANDWIDTH=250000,", ""}, want: RuleMasterAverageBandwidth},
		{name: "AVERAGE-BANDWIDTH above BANDWIDTH", pairs: []string{"AVERAGE-BANDWIDTH=250000", "AVERAGE-BANDWIDTH=350000"}, want: RuleMasterAverageAbovePeak},
		{name: "no CODECS", pairs: []string{`CODECS="avc1.64000c,mp4a.40.2",`, ""}, want: RuleMasterCodecs},
		{name: "avc1 not hex", pairs: []string{"avc1.64000c", "avc1.64000g"}, want: RuleMasterCodecs},
		{name: "avc1 short", pairs: []string{"avc1.64000c", "avc1.6400c"}, want: RuleMasterCodecs},
		{name: "unknown audio object type", pairs: []string{"avc1.64000c,mp4a.40.2", "avc1.64000c,mp4a.40.34"}, want: RuleMasterCodecs},
		{name: "hevc", pairs: []string{"avc1.64000c,mp4a.40.2", "hvc1.1.6.L93.B0,mp4a.40.2"}, want: RuleMasterCodecs},
		{name: "no RESOLUTION", pairs: []string{"RESOLUTION=160x90,", ""}, want: RuleMasterResolution},
		{name: "bad RESOLUTION", pairs: []string{"RESOLUTION=160x90", "RESOLUTION=160*90"}, want: RuleMasterResolution},
		{name: "no FRAME-RATE", pairs: []string{",FRAME-RATE=30.000\n90p", "\n90p"}, want: RuleMasterFrameRate},
		{name: "bad FRAME-RATE", pairs: []string{"FRAME-RATE=30.000\n90p", "FRAME-RATE=-30\n90p"}, want: RuleMasterFrameRate},
		{name: "no INDEPENDENT-SEGMENTS", pairs: []string{"#EXT-X-INDEPENDENT-SEGMENTS\n", ""}, want: RuleMasterIndependent},
		{name: "PROGRAM-ID", pairs: []string{"STREAM-INF:BANDWIDTH=300000", "STREAM-INF:PROGRAM-ID=1,BANDWIDTH=300000"}, want: RuleMasterProgramID},
		{name: "descending bandwidth (kiln rule)", pairs: []string{"BANDWIDTH=600000,", "BANDWIDTH=290000,", "AVERAGE-BANDWIDTH=500000", "AVERAGE-BANDWIDTH=200000"}, want: RuleMasterOrder},
		{name: "duplicate URI", pairs: []string{"180p/index.m3u8", "90p/index.m3u8"}, want: RuleMasterURIUnique},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := tt.text
			if text == "" {
				text = edit(t, goodMaster, tt.pairs...)
			}
			ps := CheckMasterPlaylist([]byte(text))
			var want []string
			if tt.want != "" {
				want = []string{tt.want}
			}
			if got := rules(ps); !slices.Equal(got, want) {
				t.Fatalf("rules = %v, want %v%s\n%s", got, want, problemsText(ps), text)
			}
		})
	}
}

func TestCheckMediaPlaylist(t *testing.T) {
	tests := []struct {
		name  string
		pairs []string
		text  string
		want  string
	}{
		{name: "good", want: ""},
		{name: "byte ranges", pairs: []string{"#EXTINF:1.000000,\n", "#EXTINF:1.000000,\n#EXT-X-BYTERANGE:100@0\n"}, want: ""},
		{name: "no EXTM3U", pairs: []string{"#EXTM3U\n", ""}, want: RuleMediaParse},
		{name: "master playlist", text: goodMaster, want: RuleMediaType},
		{name: "not VOD", pairs: []string{"#EXT-X-PLAYLIST-TYPE:VOD\n", ""}, want: RuleMediaVOD},
		{name: "EVENT", pairs: []string{"#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-PLAYLIST-TYPE:EVENT"}, want: RuleMediaVOD},
		{name: "no ENDLIST", pairs: []string{"#EXT-X-ENDLIST\n", ""}, want: RuleMediaEndlist},
		{name: "fMP4 without MAP", pairs: []string{"#EXT-X-MAP:URI=\"init.mp4\"\n", ""}, want: RuleMediaMap},
		{name: "fMP4 at version 5", pairs: []string{"#EXT-X-VERSION:7", "#EXT-X-VERSION:5"}, want: RuleMediaVersion},
		{name: "fMP4 without version", pairs: []string{"#EXT-X-VERSION:7\n", ""}, want: RuleMediaVersion},
		{name: "no TARGETDURATION", pairs: []string{"#EXT-X-TARGETDURATION:6\n", ""}, want: RuleMediaTargetDuration},
		{name: "decimal TARGETDURATION", pairs: []string{"#EXT-X-TARGETDURATION:6", "#EXT-X-TARGETDURATION:6.5"}, want: RuleMediaTargetDuration},
		{name: "EXTINF rounds above target", pairs: []string{"#EXTINF:6.000000", "#EXTINF:6.500000"}, want: RuleMediaExtinfTarget},
		{name: "EXTINF just below rounding up", pairs: []string{"#EXTINF:6.000000", "#EXTINF:6.499000"}, want: ""},
		{name: "no segment", pairs: []string{"#EXTINF:6.000000,\nseg_00000.m4s\n#EXTINF:1.000000,\nseg_00001.m4s\n", ""}, want: RuleMediaSegments},
		{name: "zero duration", pairs: []string{"#EXTINF:1.000000", "#EXTINF:0"}, want: RuleMediaSegmentDuration},
		{name: "negative duration", pairs: []string{"#EXTINF:1.000000", "#EXTINF:-1.0"}, want: RuleMediaSegmentDuration},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := tt.text
			if text == "" {
				text = edit(t, goodMedia, tt.pairs...)
			}
			ps := CheckMediaPlaylist([]byte(text))
			var want []string
			if tt.want != "" {
				want = []string{tt.want}
			}
			if got := rules(ps); !slices.Equal(got, want) {
				t.Fatalf("rules = %v, want %v%s\n%s", got, want, problemsText(ps), text)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	tests := []struct{ base, ref, want string }{
		{"http://h/v1/play/a/master.m3u8?token=x", "360p/index.m3u8", "http://h/v1/play/a/360p/index.m3u8"},
		{"http://h/v1/play/a/360p/index.m3u8?token=x", "seg_00001.m4s", "http://h/v1/play/a/360p/seg_00001.m4s"},
		{"http://h/v1/play/a/360p/index.m3u8?token=x", "seg_00001.m4s?token=y", "http://h/v1/play/a/360p/seg_00001.m4s?token=y"},
		{"http://h/a/b/index.m3u8", "../c/init.mp4", "http://h/a/c/init.mp4"},
		{"http://h/a/b/index.m3u8", "/root.mp4", "http://h/root.mp4"},
		{"http://h/a/index.m3u8", "https://cdn/x.m4s", "https://cdn/x.m4s"},
		{"/tmp/hls/master.m3u8", "360p/index.m3u8", "/tmp/hls/360p/index.m3u8"},
		{"/tmp/hls/360p/index.m3u8", "../240p/init.mp4", "/tmp/hls/240p/init.mp4"},
		{"rel/master.m3u8", "a/index.m3u8", "rel/a/index.m3u8"},
		{"/tmp/hls/master.m3u8", "/abs/x.m4s", "/abs/x.m4s"},
	}
	for _, tt := range tests {
		got, err := Resolve(tt.base, tt.ref)
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q, %q) = %q, %v; want %q", tt.base, tt.ref, got, err, tt.want)
		}
	}
}

func TestFirstVCLType(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want int
		ok   bool
	}{
		{"sps pps idr", []byte{0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 9}, 5, true},
		{"sei then non-idr", []byte{0, 0, 0, 1, 0x06, 5, 0, 0, 1, 0x41, 7}, 1, true},
		{"no slice", []byte{0, 0, 0, 1, 0x67, 1}, 0, false},
		{"empty", nil, 0, false},
	}
	for _, tt := range tests {
		if got, ok := firstVCLType(tt.in); got != tt.want || ok != tt.ok {
			t.Errorf("%s: = %d %v, want %d %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

const groupMaster = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=440000,AVERAGE-BANDWIDTH=378000,CODECS="avc1.64000c,mp4a.40.2",RESOLUTION=160x90,FRAME-RATE=30.000,AUDIO="audio"
90p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=740000,AVERAGE-BANDWIDTH=628000,CODECS="avc1.64000d,mp4a.40.2",RESOLUTION=320x180,FRAME-RATE=30.000,AUDIO="audio"
180p/index.m3u8
`

func TestCheckMasterAudioGroupRules(t *testing.T) {
	second := `#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio/index.m3u8"`
	tests := []struct {
		name  string
		pairs []string
		want  string
	}{
		{name: "good", want: ""},
		{name: "no such group", pairs: []string{`AUDIO="audio"` + "\n90p", `AUDIO="other"` + "\n90p"}, want: RuleMasterAudioGroup},
		{name: "CODECS without the audio", pairs: []string{`CODECS="avc1.64000c,mp4a.40.2"`, `CODECS="avc1.64000c"`}, want: RuleMasterAudioGroup},
		{name: "one variant without the group", pairs: []string{`,AUDIO="audio"` + "\n180p", "\n180p"}, want: RuleMasterAudioGroup},
		{name: "no CHANNELS", pairs: []string{`CHANNELS="2",`, ""}, want: RuleMasterMedia},
		{name: "bad CHANNELS", pairs: []string{`CHANNELS="2"`, `CHANNELS="stereo"`}, want: RuleMasterMedia},
		{name: "no URI", pairs: []string{`,URI="audio/index.m3u8"`, ""}, want: RuleMasterMedia},
		{name: "no NAME", pairs: []string{`NAME="audio",`, ""}, want: RuleMasterMedia},
		{name: "bad TYPE", pairs: []string{"TYPE=AUDIO", "TYPE=SOUND"}, want: RuleMasterAudioGroup}, // the group is then missing too
		{name: "two defaults, one name", pairs: []string{second, second + "\n" + second}, want: RuleMasterMedia},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := CheckMasterPlaylist([]byte(edit(t, groupMaster, tt.pairs...)))
			got := rules(ps)
			switch {
			case tt.want == "" && len(got) != 0:
				t.Fatalf("problems:%s", problemsText(ps))
			case tt.want != "" && !slices.Contains(got, tt.want):
				t.Fatalf("rules = %v, want %s:%s", got, tt.want, problemsText(ps))
			}
		})
	}
}

const eventMedia = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-PLAYLIST-TYPE:EVENT
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init.mp4"
#EXTINF:6.000000,
seg_00001.m4s
`

func TestCheckEventPlaylist(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		vod, evt []string // rules of CheckMediaPlaylist, CheckEventPlaylist
	}{
		{"VOD", goodMedia, nil, nil},
		{"EVENT growing", eventMedia, []string{RuleMediaVOD, RuleMediaEndlist}, nil},
		{"EVENT ended", eventMedia + "#EXT-X-ENDLIST\n", []string{RuleMediaVOD}, nil},
		{"no type", strings.Replace(eventMedia, "#EXT-X-PLAYLIST-TYPE:EVENT\n", "", 1), []string{RuleMediaVOD, RuleMediaEndlist}, []string{RuleMediaVOD, RuleMediaEndlist}},
		{"VOD without ENDLIST", strings.Replace(goodMedia, "#EXT-X-ENDLIST\n", "", 1), []string{RuleMediaEndlist}, []string{RuleMediaEndlist}},
		{"EVENT beyond its target duration", strings.Replace(eventMedia, "#EXTINF:6.000000,", "#EXTINF:6.600000,", 1), []string{RuleMediaVOD, RuleMediaEndlist, RuleMediaExtinfTarget}, []string{RuleMediaExtinfTarget}},
		{"EVENT without segments", strings.Replace(eventMedia, "#EXTINF:6.000000,\nseg_00001.m4s\n", "", 1), []string{RuleMediaVOD, RuleMediaEndlist, RuleMediaSegments}, []string{RuleMediaSegments}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rules(CheckMediaPlaylist([]byte(tt.text))); !slices.Equal(got, tt.vod) {
				t.Errorf("CheckMediaPlaylist rules = %v, want %v", got, tt.vod)
			}
			if got := rules(CheckEventPlaylist([]byte(tt.text))); !slices.Equal(got, tt.evt) {
				t.Errorf("CheckEventPlaylist rules = %v, want %v", got, tt.evt)
			}
		})
	}
}

func TestCheckEventAppend(t *testing.T) {
	grown := eventMedia + "#EXTINF:6.000000,\nseg_00002.m4s\n"
	ended := strings.Replace(grown, "EVENT", "VOD", 1) + "#EXT-X-ENDLIST\n"
	tests := []struct {
		name          string
		before, after string
		ok            bool
	}{
		{"unchanged", eventMedia, eventMedia, true},
		{"a segment appended", eventMedia, grown, true},
		{"ended as EVENT", grown, grown + "#EXT-X-ENDLIST\n", true},
		{"ended as VOD", grown, ended, true},
		{"VOD without ENDLIST", grown, strings.Replace(grown, "EVENT", "VOD", 1), false},
		{"segment removed", grown, eventMedia, false},
		{"segment renamed", grown, strings.Replace(grown, "seg_00001", "seg_00009", 1), false},
		{"duration changed", grown, strings.Replace(grown, "#EXTINF:6.000000,", "#EXTINF:5.000000,", 1), false},
		{"map changed", grown, strings.Replace(grown, `URI="init.mp4"`, `URI="init2.mp4"`, 1), false},
		{"media sequence changed", grown, strings.Replace(grown, "SEQUENCE:1", "SEQUENCE:2", 1), false},
		{"target duration changed", grown, strings.Replace(grown, "TARGETDURATION:6", "TARGETDURATION:8", 1), false},
		{"an ended playlist changed", ended, strings.Replace(ended, "#EXT-X-ENDLIST", "#EXTINF:1.0,\nseg_00003.m4s\n#EXT-X-ENDLIST", 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := CheckEventAppend([]byte(tt.before), []byte(tt.after))
			if got := rules(ps); tt.ok != (len(got) == 0) || (!tt.ok && !slices.Equal(got, []string{RuleMediaEventAppend})) {
				t.Fatalf("problems:%s", problemsText(ps))
			}
		})
	}
}
