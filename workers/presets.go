package workers

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
)

var presetName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// LoadPresets reads presets from a JSON file (an array of Preset) and
// returns them with "default" added unless the file defines it. An empty
// path gives just the default.
func LoadPresets(path string) (map[string]Preset, error) {
	out := map[string]Preset{"default": DefaultPreset()}
	if path == "" {
		return out, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("presets: %w", err)
	}
	var list []Preset
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("presets %s: %w", path, err)
	}
	for _, p := range list {
		p = p.withDefaults()
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("presets %s: %w", path, err)
		}
		out[p.Name] = p
	}
	return out, nil
}

// PresetNames lists preset names, sorted.
func PresetNames(presets map[string]Preset) []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (p Preset) withDefaults() Preset {
	d := DefaultPreset()
	if p.AudioBitRate == 0 {
		p.AudioBitRate = d.AudioBitRate
	}
	if p.SegmentSeconds == 0 {
		p.SegmentSeconds = d.SegmentSeconds
	}
	if p.GOPSeconds == 0 {
		p.GOPSeconds = d.GOPSeconds
	}
	if p.MaxFrameRate == 0 {
		p.MaxFrameRate = d.MaxFrameRate
	}
	return p
}

// Validate checks that a preset can be encoded and packaged as HLS.
func (p Preset) Validate() error {
	switch {
	case !presetName.MatchString(p.Name):
		return fmt.Errorf("preset name %q: want 1-32 of a-z 0-9 _ -", p.Name)
	case len(p.Rungs) == 0:
		return fmt.Errorf("preset %q: no rungs", p.Name)
	case p.GOPSeconds <= 0 || p.SegmentSeconds <= 0 || p.SegmentSeconds%p.GOPSeconds != 0:
		return fmt.Errorf("preset %q: segment_seconds (%d) must be a positive multiple of gop_seconds (%d)", p.Name, p.SegmentSeconds, p.GOPSeconds)
	case p.AudioBitRate < 32_000 || p.AudioBitRate > 512_000:
		return fmt.Errorf("preset %q: audio_bit_rate %d out of 32000..512000", p.Name, p.AudioBitRate)
	case p.MaxFrameRate < 1 || p.MaxFrameRate > 120:
		return fmt.Errorf("preset %q: max_frame_rate %v out of 1..120", p.Name, p.MaxFrameRate)
	}
	if !slices.IsSortedFunc(p.Rungs, func(a, b RungSpec) int { return b.Height - a.Height }) {
		return fmt.Errorf("preset %q: rungs must be ordered highest first", p.Name)
	}
	for _, r := range p.Rungs {
		if r.Height < 2 || r.Height > 4320 || r.VideoBitRate < 50_000 || r.VideoBitRate > 100_000_000 {
			return fmt.Errorf("preset %q: rung %dp at %d b/s out of range", p.Name, r.Height, r.VideoBitRate)
		}
	}
	return nil
}
