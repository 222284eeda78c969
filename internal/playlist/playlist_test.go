package playlist

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/grafov/m3u8"
)

func TestMaster(t *testing.T) {
	renditions := []Variant{
		{Name: "720p", Width: 1280, Height: 720, FrameRate: 30000.0 / 1001, Bandwidth: 3_400_000, AverageBandwidth: 2_900_000, Codecs: "avc1.64001f,mp4a.40.2"},
		{Name: "240p", Width: 426, Height: 240, FrameRate: 30000.0 / 1001, Bandwidth: 450_000, AverageBandwidth: 390_000, Codecs: "avc1.640015,mp4a.40.2"},
		{Name: "480p", Width: 854, Height: 480, FrameRate: 30000.0 / 1001, Bandwidth: 1_600_000, AverageBandwidth: 1_350_000, Codecs: "avc1.64001e,mp4a.40.2"},
	}
	raw := Master(renditions)
	text := string(raw)

	p := m3u8.NewMasterPlaylist()
	if err := p.DecodeFrom(bytes.NewReader(raw), true); err != nil {
		t.Fatalf("decode: %v\n%s", err, text)
	}
	if p.Version() != 7 {
		t.Errorf("version = %d, want 7", p.Version())
	}
	if !p.IndependentSegments() {
		t.Error("no EXT-X-INDEPENDENT-SEGMENTS")
	}
	if strings.Contains(text, "PROGRAM-ID") {
		t.Errorf("PROGRAM-ID in a version 7 playlist:\n%s", text)
	}
	want := []struct {
		uri        string
		bw, avg    uint32
		codecs     string
		resolution string
	}{
		{"240p/index.m3u8", 450_000, 390_000, "avc1.640015,mp4a.40.2", "426x240"},
		{"480p/index.m3u8", 1_600_000, 1_350_000, "avc1.64001e,mp4a.40.2", "854x480"},
		{"720p/index.m3u8", 3_400_000, 2_900_000, "avc1.64001f,mp4a.40.2", "1280x720"},
	}
	if len(p.Variants) != len(want) {
		t.Fatalf("%d variants, want %d:\n%s", len(p.Variants), len(want), text)
	}
	for i, w := range want {
		v := p.Variants[i]
		if v.URI != w.uri || v.Bandwidth != w.bw || v.AverageBandwidth != w.avg || v.Codecs != w.codecs || v.Resolution != w.resolution {
			t.Errorf("variant %d = %s %+v, want %+v", i, v.URI, v.VariantParams, w)
		}
		if math.Abs(v.FrameRate-29.97) > 0.001 {
			t.Errorf("variant %d frame rate = %v, want 29.970", i, v.FrameRate)
		}
		if v.Iframe || v.ProgramId != 0 {
			t.Errorf("variant %d: iframe %v program id %d", i, v.Iframe, v.ProgramId)
		}
	}
	if !strings.Contains(text, "FRAME-RATE=29.970") {
		t.Errorf("frame rate not printed with 3 decimals:\n%s", text)
	}
	if !strings.HasPrefix(text, "#EXTM3U\n") {
		t.Errorf("does not start with #EXTM3U:\n%s", text)
	}
}

func TestMasterAttributes(t *testing.T) {
	tests := []struct {
		name       string
		rendition  Variant
		wantLine   string
		notContain []string
	}{
		{
			name:      "all attributes",
			rendition: Variant{Name: "360p", Width: 640, Height: 360, FrameRate: 25, Bandwidth: 900_000, AverageBandwidth: 800_000, Codecs: "avc1.64001e,mp4a.40.2"},
			wantLine:  `#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=800000,CODECS="avc1.64001e,mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=25.000`,
		},
		{
			name:       "unknown average, size and rate omitted",
			rendition:  Variant{Name: "audio", Bandwidth: 140_000, Codecs: "mp4a.40.2"},
			wantLine:   `#EXT-X-STREAM-INF:BANDWIDTH=140000,CODECS="mp4a.40.2"`,
			notContain: []string{"AVERAGE-BANDWIDTH", "RESOLUTION", "FRAME-RATE"},
		},
		{
			name:      "bandwidth above uint32",
			rendition: Variant{Name: "8k", Width: 7680, Height: 4320, FrameRate: 60, Bandwidth: 5_000_000_000, AverageBandwidth: 4_500_000_000, Codecs: "avc1.640033"},
			wantLine:  `#EXT-X-STREAM-INF:BANDWIDTH=5000000000,AVERAGE-BANDWIDTH=4500000000,CODECS="avc1.640033",RESOLUTION=7680x4320,FRAME-RATE=60.000`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := string(Master([]Variant{tt.rendition}))
			lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
			want := []string{"#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS", tt.wantLine, tt.rendition.Name + "/index.m3u8"}
			if strings.Join(lines, "\n") != strings.Join(want, "\n") {
				t.Fatalf("playlist:\n%s\nwant:\n%s", text, strings.Join(want, "\n"))
			}
			for _, s := range tt.notContain {
				if strings.Contains(text, s) {
					t.Errorf("contains %s", s)
				}
			}
		})
	}
}

func TestMasterStableOrder(t *testing.T) {
	// Equal bandwidths keep their input order.
	text := string(Master([]Variant{
		{Name: "b", Bandwidth: 2, Codecs: "c"}, {Name: "a", Bandwidth: 1, Codecs: "c"}, {Name: "c", Bandwidth: 2, Codecs: "c"},
	}))
	var uris []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasSuffix(l, "/index.m3u8") {
			uris = append(uris, strings.TrimSuffix(l, "/index.m3u8"))
		}
	}
	if got := strings.Join(uris, ","); got != "a,b,c" {
		t.Fatalf("order = %s, want a,b,c", got)
	}
}

func TestMasterAudioGroup(t *testing.T) {
	raw := Master([]Variant{
		{Name: "720p", Width: 1280, Height: 720, FrameRate: 30, Bandwidth: 3_000_000, AverageBandwidth: 2_500_000, Codecs: "avc1.64001f"},
		{Name: "audio", Bandwidth: 140_000, AverageBandwidth: 130_000, Codecs: "mp4a.40.2"},
		{Name: "240p", Width: 426, Height: 240, FrameRate: 30, Bandwidth: 400_000, AverageBandwidth: 350_000, Codecs: "avc1.640015"},
	})
	text := string(raw)
	p := m3u8.NewMasterPlaylist()
	if err := p.DecodeFrom(bytes.NewReader(raw), true); err != nil {
		t.Fatalf("decode: %v\n%s", err, text)
	}
	want := []struct {
		uri     string
		bw, avg uint32
		codecs  string
	}{
		{"240p/index.m3u8", 540_000, 480_000, "avc1.640015,mp4a.40.2"},
		{"720p/index.m3u8", 3_140_000, 2_630_000, "avc1.64001f,mp4a.40.2"},
	}
	if len(p.Variants) != len(want) {
		t.Fatalf("%d variants, want %d (the audio is a group, not a variant):\n%s", len(p.Variants), len(want), text)
	}
	for i, w := range want {
		v := p.Variants[i]
		if v.URI != w.uri || v.Bandwidth != w.bw || v.AverageBandwidth != w.avg || v.Codecs != w.codecs || v.Audio != AudioGroup {
			t.Errorf("variant %d = %s %+v, want %+v with AUDIO=%q", i, v.URI, v.VariantParams, w, AudioGroup)
		}
		if len(v.Alternatives) != 1 {
			t.Fatalf("variant %d: %d alternatives, want the audio group:\n%s", i, len(v.Alternatives), text)
		}
		a := v.Alternatives[0]
		if a.Type != "AUDIO" || a.GroupId != AudioGroup || a.URI != "audio/index.m3u8" || a.Default != true ||
			a.Autoselect != "YES" || a.Name != "audio" {
			t.Errorf("variant %d: audio rendition %+v", i, *a)
		}
	}
	if n := strings.Count(text, "#EXT-X-MEDIA:"); n != 1 || !strings.Contains(text, `CHANNELS="2"`) {
		t.Errorf("%d EXT-X-MEDIA tags, want 1 with CHANNELS=\"2\":\n%s", n, text)
	}
}

func TestMasterAudioAlone(t *testing.T) {
	// An audio-only asset: the audio is its one variant, no group.
	text := string(Master([]Variant{{Name: "audio", Bandwidth: 140_000, AverageBandwidth: 130_000, Codecs: "mp4a.40.2"}}))
	want := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n" +
		"#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=130000,CODECS=\"mp4a.40.2\"\naudio/index.m3u8\n"
	if text != want {
		t.Fatalf("playlist:\n%s\nwant:\n%s", text, want)
	}
}
