package workers

import (
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func writeJPEG(t *testing.T, path string, img image.Image) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := jpeg.Encode(f, img, nil); err != nil {
		t.Fatal(err)
	}
}

// lively is a horizontal gradient: a good poster; black a fade to black.
func lively() image.Image {
	img := image.NewGray(image.Rect(0, 0, 64, 36))
	for y := range 36 {
		for x := range 64 {
			img.SetGray(x, y, color.Gray{Y: uint8(x * 4)})
		}
	}
	return img
}

func black() image.Image { return image.NewGray(image.Rect(0, 0, 64, 36)) }

// TestPickPoster: the first candidate (in PosterOffsets order) that is not
// dull wins; with only dull ones, the liveliest; with none past the first
// frame, the first frame.
func TestPickPoster(t *testing.T) {
	plan := &kilnv1.Plan{Rungs: []*kilnv1.Rung{{Name: "360p", Width: 640, Height: 360}}, FrameRate: 10}
	frameOf := func(frac float64) int { return int(frac * 100 * 10) } // 100 s at 10 fps
	tests := []struct {
		name   string
		frames map[int]image.Image // candidates written, by frame
		want   float64             // the chosen offset in seconds
	}{
		{"first candidate dull, second lively", map[int]image.Image{0: lively(), frameOf(0.10): black(), frameOf(0.25): lively(), frameOf(0.50): lively()}, 25},
		{"all dull: the liveliest", map[int]image.Image{0: black(), frameOf(0.10): black(), frameOf(0.25): image.NewUniform(color.Gray{Y: 200})}, 25},
		{"only the first frame", map[int]image.Image{0: lively()}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := NewStills(t.TempDir(), plan, 100)
			if len(st.PosterFrames) != len(PosterOffsets)+1 || st.PosterFrames[0] != 0 {
				t.Fatalf("poster frames %v", st.PosterFrames)
			}
			for i, n := range st.PosterFrames {
				img, ok := tt.frames[n]
				if !ok {
					continue
				}
				if u, uniform := img.(*image.Uniform); uniform {
					g := image.NewGray(image.Rect(0, 0, 64, 36))
					for j := range g.Pix {
						g.Pix[j] = u.C.(color.Gray).Y
					}
					img = g
				}
				writeJPEG(t, filepath.Join(st.Dir, fmt.Sprintf("poster_%d.jpg", i+1)), img)
			}
			_, offset, ok := st.PickPoster()
			if !ok || offset != tt.want {
				t.Errorf("PickPoster = %v, %v; want %v s", offset, ok, tt.want)
			}
		})
	}
	if _, _, ok := NewStills(t.TempDir(), plan, 100).PickPoster(); ok {
		t.Error("a poster picked from nothing")
	}
}

// TestCopyBoxes: a joined segment keeps the boxes asked for, whole.
func TestCopyBoxes(t *testing.T) {
	box := func(typ string, body string) string {
		return string([]byte{0, 0, 0, byte(8 + len(body))}) + typ + body
	}
	in := box("styp", "abcd") + box("sidx", "0123456789") + box("moof", "m") + box("mdat", "data!")
	var out strings.Builder
	n, err := copyBoxes(&out, strings.NewReader(in), func(typ string) bool { return typ != "sidx" && typ != "styp" })
	if err != nil || out.String() != box("moof", "m")+box("mdat", "data!") || n != int64(out.Len()) {
		t.Fatalf("copyBoxes = %q, %d, %v", out.String(), n, err)
	}
	if _, err := copyBoxes(io.Discard, strings.NewReader(in[:len(in)-2]), func(string) bool { return true }); err == nil {
		t.Error("a box cut short was copied")
	}
}
