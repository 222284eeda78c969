package workers

import (
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/kilnvideo/kiln/internal/layout"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Thumbnail geometry.
const (
	// ThumbnailLongSide is the long side of a thumbnail/storyboard tile.
	ThumbnailLongSide = 160
	// MaxThumbnails bounds the thumbnails (and tiles) of one asset.
	MaxThumbnails = 100
	spriteColumns = 10
)

// MediaDuration is how long the encoded asset is: the duration the
// transcode decoded, else (media from before it was measured) the header's.
func MediaDuration(m *kilnv1.MediaInfo) float64 {
	if d := m.GetDecodedDurationSeconds(); d > 0 {
		return d
	}
	return m.GetDurationSeconds()
}

// ThumbnailInterval spaces thumbnails so an asset has at most MaxThumbnails:
// one a second for short videos, further apart for long ones.
func ThumbnailInterval(duration float64) float64 {
	return max(1, math.Ceil(duration/MaxThumbnails))
}

// StoryboardLayout is the grid of the sprite sheet.
type StoryboardLayout struct {
	Count, Columns, Rows  int
	TileWidth, TileHeight int
	Interval              float64
}

// NewStoryboardLayout lays out thumbnails of a w×h video of duration seconds.
func NewStoryboardLayout(duration float64, w, h int) StoryboardLayout {
	l := StoryboardLayout{Interval: ThumbnailInterval(duration)}
	l.Count = max(1, min(MaxThumbnails, int(math.Ceil(duration/l.Interval))))
	l.Columns = min(spriteColumns, l.Count)
	l.Rows = (l.Count + l.Columns - 1) / l.Columns
	if w >= h {
		l.TileWidth, l.TileHeight = ThumbnailLongSide, even(float64(ThumbnailLongSide*h)/float64(w))
	} else {
		l.TileWidth, l.TileHeight = even(float64(ThumbnailLongSide*w)/float64(h)), ThumbnailLongSide
	}
	return l
}

// StoryboardVTT maps each thumbnail's time range to its tile in the sprite
// (WebVTT with media fragments, as players' scrub previews expect).
func StoryboardVTT(l StoryboardLayout, count int, duration float64, spriteURI string) string {
	var b strings.Builder
	b.WriteString("WEBVTT\n")
	for i := range min(count, l.Columns*l.Rows) {
		start := float64(i) * l.Interval
		end := min(start+l.Interval, duration)
		if end <= start {
			end = start + l.Interval
		}
		x, y := (i%l.Columns)*l.TileWidth, (i/l.Columns)*l.TileHeight
		fmt.Fprintf(&b, "\n%s --> %s\n%s#xywh=%d,%d,%d,%d\n", vttTime(start), vttTime(end), spriteURI, x, y, l.TileWidth, l.TileHeight)
	}
	return b.String()
}

func vttTime(s float64) string {
	ms := int64(math.Round(s * 1000))
	return fmt.Sprintf("%02d:%02d:%02d.%03d", ms/3_600_000, ms/60_000%60, ms/1000%60, ms%1000)
}

// PosterOffsets are the candidate poster times, as fractions of the
// duration, tried in order until one is not a black or flat frame.
var PosterOffsets = []float64{0.10, 0.25, 0.50, 0.75, 0.02}

// Stills are the still pictures a transcode takes from the decoded
// pictures beside the encode (TranscodeArgs): one thumbnail every
// Grid.Interval seconds, tiled into the sprite, and the poster candidates.
type Stills struct {
	// Dir receives t_NNNNN.jpg, SpriteFile and poster_N.jpg.
	Dir  string
	Grid StoryboardLayout
	// PosterFrames are the frame numbers (of the constant-rate normalised
	// video) of the poster candidates, ascending: PosterOffsets of the
	// duration, and the first frame.
	PosterFrames []int
	// PosterWidth and PosterHeight are the candidates' size: the top rung's.
	PosterWidth, PosterHeight int32
	offsets                   map[int]float64 // frame → its offset in seconds
}

// SpriteFile is the sprite sheet's file name (next to the storyboard).
const SpriteFile = "sprite.jpg"

// NewStills plans the stills of a video plan lasting duration seconds.
func NewStills(dir string, plan *kilnv1.Plan, duration float64) *Stills {
	top := plan.GetRungs()[0]
	st := &Stills{Dir: dir, Grid: NewStoryboardLayout(duration, int(top.Width), int(top.Height)), offsets: map[int]float64{0: 0},
		PosterWidth: top.Width, PosterHeight: top.Height}
	if duration >= 1 { // a few frames: no room to choose
		for _, frac := range PosterOffsets {
			n := int(frac * duration * plan.GetFrameRate())
			if _, ok := st.offsets[n]; !ok {
				st.offsets[n] = frac * duration
			}
		}
	}
	for n := range st.offsets {
		st.PosterFrames = append(st.PosterFrames, n)
	}
	sort.Ints(st.PosterFrames)
	return st
}

// PickPoster chooses among the candidates the run wrote: the first, in
// PosterOffsets order, that is neither black nor flat (a fade); else the
// liveliest; else the first frame. ok is false when the run wrote none.
func (st *Stills) PickPoster(duration, frameRate float64) (path string, offset float64, ok bool) {
	file := func(n int) string {
		i := sort.SearchInts(st.PosterFrames, n)
		return filepath.Join(st.Dir, fmt.Sprintf("poster_%d.jpg", i+1))
	}
	best, bestScore, bestOffset := "", -1.0, 0.0
	if duration >= 1 {
		for _, frac := range PosterOffsets {
			n := int(frac * duration * frameRate)
			mean, dev, err := lumaStats(file(n))
			if err != nil { // past the last frame: nothing written
				continue
			}
			if !Dull(mean, dev) {
				return file(n), st.offsets[n], true
			}
			if score := mean + dev; score > bestScore {
				best, bestScore, bestOffset = file(n), score, st.offsets[n]
			}
		}
	}
	if best != "" {
		return best, bestOffset, true
	}
	if _, _, err := lumaStats(file(0)); err == nil {
		return file(0), 0, true
	}
	return "", 0, false
}

// uploadStills stores the poster, the thumbnails, the sprite and the
// storyboard the run wrote, and describes them. A run too short for a
// storyboard (a few frames) has none; one without any picture, no poster.
func (h *Handlers) uploadStills(ctx context.Context, assetID string, st *Stills, duration, frameRate float64, log *zap.Logger) (*kilnv1.Thumbnails, error) {
	thumbs := &kilnv1.Thumbnails{}
	poster, offset, ok := st.PickPoster(duration, frameRate)
	if ok {
		thumbs.PosterKey = layout.PosterKey(assetID)
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, thumbs.PosterKey, poster, "image/jpeg"); err != nil {
			return nil, err
		}
	} else {
		log.Warn("no poster: the video has no decodable picture")
	}
	files, _ := filepath.Glob(filepath.Join(st.Dir, "t_*.jpg"))
	sort.Strings(files)
	sprite := filepath.Join(st.Dir, SpriteFile)
	if _, err := os.Stat(sprite); err != nil || len(files) == 0 {
		log.Info("no storyboard: the video is too short", zap.Float64("duration", duration))
		files = nil
	}
	thumbDir := layout.ThumbnailDir(assetID)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(uploadParallelism) // up to MaxThumbnails small files
	for _, f := range files {
		key := thumbDir + "/" + filepath.Base(f)
		g.Go(func() error { return h.cfg.Objects.PutFile(gctx, h.cfg.OutputsBucket, key, f, "image/jpeg") })
		thumbs.Keys = append(thumbs.Keys, key)
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(files) > 0 {
		thumbs.SpriteKey, thumbs.StoryboardKey = thumbDir+"/"+SpriteFile, thumbDir+"/storyboard.vtt"
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, thumbs.SpriteKey, sprite, "image/jpeg"); err != nil {
			return nil, err
		}
		vtt := filepath.Join(st.Dir, "storyboard.vtt")
		if err := os.WriteFile(vtt, []byte(StoryboardVTT(st.Grid, len(files), duration, SpriteFile)), 0o644); err != nil {
			return nil, fmt.Errorf("thumbnails: %w", err)
		}
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, thumbs.StoryboardKey, vtt, "text/vtt"); err != nil {
			return nil, err
		}
	}
	thumbs.IntervalSeconds, thumbs.Width, thumbs.Height = st.Grid.Interval, int32(st.Grid.TileWidth), int32(st.Grid.TileHeight)
	log.Info("stills stored", zap.Float64("poster_at", offset), zap.Int("thumbnails", len(files)))
	return thumbs, nil
}

// Dull reports whether a frame with this mean and standard deviation of
// luma (0–255) is black or nearly uniform, i.e. a bad poster.
func Dull(mean, dev float64) bool { return mean < 24 || dev < 8 }

// lumaStats decodes a JPEG and returns the mean and standard deviation of
// its luma.
func lumaStats(path string) (mean, dev float64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	img, err := jpeg.Decode(f)
	if err != nil {
		return 0, 0, fmt.Errorf("poster: %w", err)
	}
	var sum, sq, n float64
	add := func(y float64) { sum += y; sq += y * y; n++ }
	if ycc, ok := img.(*image.YCbCr); ok {
		for _, y := range ycc.Y {
			add(float64(y))
		}
	} else {
		b := img.Bounds()
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				r, g, bl, _ := img.At(x, y).RGBA()
				add((0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bl)) / 257)
			}
		}
	}
	if n == 0 {
		return 0, 0, fmt.Errorf("poster: empty image")
	}
	mean = sum / n
	return mean, math.Sqrt(max(0, sq/n-mean*mean)), nil
}
