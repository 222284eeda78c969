package playlist

import (
	"bytes"
	"strings"
	"testing"

	"github.com/grafov/m3u8"
)

func TestMedia(t *testing.T) {
	segs := []Segment{{"seg_00000.m4s", 6.006}, {"seg_00001.m4s", 6}, {"seg_00002.m4s", 2.5}}
	event := Media(MediaPlaylist{TargetDuration: MediaTargetDuration(6, segs[:2]), Map: "init.mp4", Segments: segs[:2], IndependentSegments: true})
	vod := Media(MediaPlaylist{TargetDuration: MediaTargetDuration(6, segs), Map: "init.mp4", Segments: segs, Ended: true, IndependentSegments: true})
	want := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n" +
		"#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:6.006000,\nseg_00000.m4s\n#EXTINF:6.000000,\nseg_00001.m4s\n"
	if string(event) != want {
		t.Errorf("event playlist\n%s\nwant\n%s", event, want)
	}
	if !strings.HasSuffix(string(vod), "#EXTINF:2.500000,\nseg_00002.m4s\n#EXT-X-ENDLIST\n") || !strings.Contains(string(vod), "#EXT-X-PLAYLIST-TYPE:VOD\n") {
		t.Errorf("vod playlist\n%s", vod)
	}
	// What an EVENT playlist listed stays, byte for byte, in what it grows into.
	head := string(event)[strings.Index(string(event), "#EXT-X-INDEPENDENT"):]
	if !strings.Contains(string(vod), head) {
		t.Errorf("the VOD playlist does not keep the EVENT playlist's segments")
	}
	for _, pl := range [][]byte{event, vod} {
		p, typ, err := m3u8.Decode(*bytes.NewBuffer(pl), true)
		if err != nil || typ != m3u8.MEDIA {
			t.Fatalf("decode: %v\n%s", err, pl)
		}
		if mp := p.(*m3u8.MediaPlaylist); len(mp.Segments) == 0 || mp.Map == nil || mp.Map.URI != "init.mp4" {
			t.Errorf("decoded %+v", mp)
		}
	}
	got, err := ParseSegments(vod)
	if err != nil || len(got) != 3 || got[2] != segs[2] {
		t.Errorf("ParseSegments = %v, %v", got, err)
	}
	if _, err := ParseSegments([]byte("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\n../other/seg.m4s\n#EXT-X-ENDLIST\n")); err == nil {
		t.Error("a segment outside the playlist's folder was accepted")
	}
	if d := MediaTargetDuration(6, []Segment{{"a", 7.4}}); d != 7 {
		t.Errorf("target of a 7.4 s segment = %d, want 7", d)
	}
}
