package workers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadPresets(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "presets.json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := LoadPresets("")
	if err != nil || len(got) != 1 || got["default"].Name != "default" {
		t.Fatalf("no file: %v %v", got, err)
	}
	got, err = LoadPresets(write(`[{"name":"mobile","rungs":[{"height":720,"video_bit_rate":2500000},{"height":360,"video_bit_rate":700000}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	m := got["mobile"]
	if len(m.Rungs) != 2 || m.AudioBitRate != 128_000 || m.SegmentSeconds != 6 || m.GOPSeconds != 2 || m.MaxFrameRate != 60 {
		t.Errorf("mobile preset with defaults = %+v", m)
	}
	if names := strings.Join(PresetNames(got), ","); names != "default,mobile" {
		t.Errorf("names %s", names)
	}
	bad := []struct{ name, body, want string }{
		{"not json", `{`, "presets"},
		{"bad name", `[{"name":"Has Space","rungs":[{"height":360,"video_bit_rate":700000}]}]`, "preset name"},
		{"no rungs", `[{"name":"x","rungs":[]}]`, "no rungs"},
		{"ascending rungs", `[{"name":"x","rungs":[{"height":360,"video_bit_rate":700000},{"height":720,"video_bit_rate":2500000}]}]`, "highest first"},
		{"segment not a GOP multiple", `[{"name":"x","segment_seconds":5,"gop_seconds":2,"rungs":[{"height":360,"video_bit_rate":700000}]}]`, "multiple"},
		{"absurd bit rate", `[{"name":"x","rungs":[{"height":360,"video_bit_rate":7}]}]`, "out of range"},
		{"absurd audio", `[{"name":"x","audio_bit_rate":1,"rungs":[{"height":360,"video_bit_rate":700000}]}]`, "audio_bit_rate"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := LoadPresets(write(tt.body)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := LoadPresets(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}
