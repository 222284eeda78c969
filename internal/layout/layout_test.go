package layout

import (
	"regexp"
	"strings"
	"testing"
)

func TestSafeName(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "clip.mp4", "clip.mp4"},
		{"spaces", "my clip (1).mp4", "my_clip_1_.mp4"},
		{"path traversal", "../../etc/passwd", "passwd"},
		{"absolute path", "/var/lib/secret.mov", "secret.mov"},
		{"backslashes", `..\..\Windows\System32\cmd.exe`, "cmd.exe"},
		{"windows drive", `C:\Users\me\Videos\holiday.MOV`, "holiday.MOV"},
		{"trailing slash", "dir/", "dir"},
		{"only dots", "..", "source"},
		{"three dots", "...", "source"},
		{"hidden file", ".env", "env"},
		{"root", "/", "source"},
		{"empty", "", "source"},
		{"only unsafe", "???", "source"},
		{"unicode", "vidéo été.mp4", "vid_o_t_.mp4"},
		{"cjk", "日本語.mp4", "_.mp4"},
		{"emoji", "🎬.mov", "_.mov"},
		{"nul and newline", "a\x00b\nc.mp4", "a_b_c.mp4"},
		{"query-like", "a.mp4?x=1&y=2", "a.mp4_x_1_y_2"},
		{"long keeps the end", strings.Repeat("a", 200) + ".mp4", strings.Repeat("a", 96) + ".mp4"},
		{"long cut at a dot", strings.Repeat("a", 50) + "." + strings.Repeat("b", 99), strings.Repeat("b", 99)},
		{"long all dots", strings.Repeat(".", 150), "source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SafeName(tt.in); got != tt.want {
				t.Fatalf("SafeName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$`)

func FuzzSafeName(f *testing.F) {
	for _, s := range []string{"", "..", "../../x", `a\b`, "vidéo.mp4", strings.Repeat("x.", 80)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := SafeName(in)
		if !safeName.MatchString(got) {
			t.Fatalf("SafeName(%q) = %q: not a safe name", in, got)
		}
	})
}

func TestNewSourceKey(t *testing.T) {
	a, b := NewSourceKey("../my clip.mp4"), NewSourceKey("../my clip.mp4")
	re := regexp.MustCompile(`^uploads/[0-9a-f]{24}/my_clip.mp4$`)
	if !re.MatchString(a) || !re.MatchString(b) || a == b {
		t.Fatalf("NewSourceKey = %q, %q: want two distinct uploads/<24 hex>/my_clip.mp4", a, b)
	}
}

func TestOutputKeys(t *testing.T) {
	tests := []struct{ got, want string }{
		{AssetPrefix("as1"), "assets/as1/"},
		{EncodedKey("as1", "720p"), "assets/as1/mp4/720p.mp4"},
		{EncodedKey("as1", AudioRendition), "assets/as1/mp4/audio.m4a"},
		{PosterKey("as1"), "assets/as1/thumbnails/poster.jpg"},
		{ThumbnailDir("as1"), "assets/as1/thumbnails"},
		{HLSDir("as1", "1080p"), "assets/as1/hls/1080p"},
		{PlaylistKey("as1", "1080p"), "assets/as1/hls/1080p/index.m3u8"},
		{SegmentKey("as1", "1080p", "seg_00001.m4s"), "assets/as1/hls/1080p/seg_00001.m4s"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("key %q, want %q", tt.got, tt.want)
		}
	}
	// Every output key lives under the asset's prefix (removing an asset's
	// prefix removes all of it).
	for _, k := range []string{EncodedKey("x", "240p"), EncodedKey("x", AudioRendition), PosterKey("x"),
		PlaylistKey("x", "240p"), SegmentKey("x", "240p", InitFile), ThumbnailDir("x")} {
		if !UnderAsset("x", k) {
			t.Errorf("%q is not under %q", k, AssetPrefix("x"))
		}
	}
}

func TestUnderAsset(t *testing.T) {
	for _, tt := range []struct {
		key  string
		want bool
	}{
		{"assets/a/hls/720p/index.m3u8", true},
		{"assets/a/", false},
		{"assets/b/hls/720p/index.m3u8", false},
		{"assets/a/../b/x", false},
		{"assets/a//x", false},
		{"assets/ab/x", false},
		{"uploads/a/x", false},
		{"assets/a/./x", false},
		{"assets/a/x/", false},
		{"assets/a/x/..", false},
		{"assets/a/..", false},
		{"assets/a/x\n", false},
		{"assets/a/" + strings.Repeat("x", MaxKeyBytes), false},
	} {
		if got := UnderAsset("a", tt.key); got != tt.want {
			t.Errorf("UnderAsset(a, %q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

func TestIsSourceKey(t *testing.T) {
	for _, tt := range []struct {
		key  string
		want bool
	}{
		{NewSourceKey("clip.mp4"), true},
		{"clip.mp4", true},
		{"direct/123/clip with spaces.mp4", true},
		{"vidéo/été.mov", true},
		{strings.Repeat("k", MaxKeyBytes), true},
		{"", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"uploads/../../etc/passwd", false},
		{"uploads/a/../b", false},
		{"uploads/./a", false},
		{"uploads//a", false},
		{"/uploads/a", false},
		{"uploads/a/", false},
		{"uploads/a\x00b", false},
		{"uploads/a\nb", false},
		{"uploads/a\x7f", false},
		{"uploads/\u0085", false},
		{"uploads/\xff", false},
		{strings.Repeat("k", MaxKeyBytes+1), false},
	} {
		if got := IsSourceKey(tt.key); got != tt.want {
			t.Errorf("IsSourceKey(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}
