package workers

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/draw"
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
// pictures beside the encode (TranscodeArgs, ChunkArgs): one thumbnail
// every Grid.Interval seconds, tiled into the sprite, and the poster
// candidates. Both are chosen by frame number of the constant-rate
// normalised video, so a chunk takes exactly the stills whose frames it
// encodes, named as the whole video's run would name them.
type Stills struct {
	// Dir receives t_NNNNN.jpg (thumbnail k is t_<k+1>) and poster_N.jpg
	// (candidate N-1 of PosterFrames).
	Dir  string
	Grid StoryboardLayout
	// ThumbFrames are the frame numbers of the thumbnails, ascending: the
	// frame at k·Grid.Interval seconds for thumbnail k.
	ThumbFrames []int
	// PosterFrames are the frame numbers of the poster candidates,
	// ascending: PosterOffsets of the duration, and the first frame.
	PosterFrames []int
	// PosterWidth and PosterHeight are the candidates' size: the top rung's.
	PosterWidth, PosterHeight int32
	// From and To bound the frames the run decodes, [From, To), To < 0 for
	// the end of the video (Window).
	From, To int
	// order is the poster candidates in the order they are tried
	// (PosterOffsets'), offsets their times in seconds.
	order   []int
	offsets map[int]float64
}

// SpriteFile is the sprite sheet's file name (next to the storyboard).
const SpriteFile = "sprite.jpg"

// NewStills plans the stills of a video plan lasting duration seconds.
func NewStills(dir string, plan *kilnv1.Plan, duration float64) *Stills {
	top := plan.GetRungs()[0]
	fps := plan.GetFrameRate()
	st := &Stills{Dir: dir, Grid: NewStoryboardLayout(duration, int(top.Width), int(top.Height)), To: -1, offsets: map[int]float64{0: 0},
		PosterWidth: top.Width, PosterHeight: top.Height}
	for k := range st.Grid.Count {
		st.ThumbFrames = append(st.ThumbFrames, int(math.Round(float64(k)*st.Grid.Interval*fps)))
	}
	if duration >= 1 { // a few frames: no room to choose
		for _, frac := range PosterOffsets {
			n := int(frac * duration * fps)
			if _, ok := st.offsets[n]; !ok {
				st.offsets[n] = frac * duration
				st.order = append(st.order, n)
			}
		}
	}
	for n := range st.offsets {
		st.PosterFrames = append(st.PosterFrames, n)
	}
	sort.Ints(st.PosterFrames)
	return st
}

// Window is st for a run that decodes only frames [from, to) (to < 0: to
// the end), a chunk: it takes the stills of those frames.
func (st *Stills) Window(from, to int) *Stills {
	w := *st
	w.From, w.To = from, to
	return &w
}

// window returns, of frames (ascending), the index of the first in the
// window and the window's frames counted from its start.
func (st *Stills) window(frames []int) (first int, local []int) {
	first = sort.SearchInts(frames, st.From)
	for _, f := range frames[first:] {
		if st.To >= 0 && f >= st.To {
			break
		}
		local = append(local, f-st.From)
	}
	return first, local
}

// PosterFile is the name of poster candidate i (of PosterFrames).
func PosterFile(i int) string { return fmt.Sprintf("poster_%d.jpg", i+1) }

// choosePoster picks among the candidates, by frame, with their luma
// statistics (stat; ok false for one not written): the first, in
// PosterOffsets order, that is neither black nor flat (a fade); else the
// liveliest; else the first frame. ok is false when none was written.
func (st *Stills) choosePoster(stat func(frame int) (mean, dev float64, ok bool)) (frame int, ok bool) {
	best, bestScore := 0, -1.0
	for _, n := range st.order {
		mean, dev, written := stat(n)
		if !written { // past the last frame
			continue
		}
		if !Dull(mean, dev) {
			return n, true
		}
		if score := mean + dev; score > bestScore {
			best, bestScore = n, score
		}
	}
	if bestScore >= 0 {
		return best, true
	}
	_, _, ok = stat(0)
	return 0, ok
}

// PickPoster chooses among the candidates the run wrote (choosePoster):
// the file and its time in seconds.
func (st *Stills) PickPoster() (path string, offset float64, ok bool) {
	file := func(n int) string { return filepath.Join(st.Dir, PosterFile(sort.SearchInts(st.PosterFrames, n))) }
	n, ok := st.choosePoster(func(n int) (float64, float64, bool) {
		mean, dev, err := lumaStats(file(n))
		return mean, dev, err == nil
	})
	if !ok {
		return "", 0, false
	}
	return file(n), st.offsets[n], true
}

// thumbnailFiles are the thumbnails the run wrote, in order.
func (st *Stills) thumbnailFiles() []string {
	files, _ := filepath.Glob(filepath.Join(st.Dir, "t_*.jpg"))
	sort.Strings(files)
	return files
}

// uploadStills stores the poster, the thumbnails, the sprite and the
// storyboard a whole-video run wrote, and describes them. A run too short
// for a storyboard (a few frames) has none; one without any picture, no
// poster.
func (h *Handlers) uploadStills(ctx context.Context, assetID string, st *Stills, duration float64, log *zap.Logger) (*kilnv1.Thumbnails, error) {
	thumbs := &kilnv1.Thumbnails{}
	poster, offset, ok := st.PickPoster()
	if ok {
		thumbs.PosterKey = layout.PosterKey(assetID)
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, thumbs.PosterKey, poster, "image/jpeg"); err != nil {
			return nil, err
		}
	} else {
		log.Warn("no poster: the video has no decodable picture")
	}
	files := st.thumbnailFiles()
	keys, err := h.uploadThumbnails(ctx, assetID, files)
	if err != nil {
		return nil, err
	}
	tiles := make([][]byte, len(files))
	for i, f := range files {
		if tiles[i], err = os.ReadFile(f); err != nil {
			return nil, fmt.Errorf("thumbnails: %w", err)
		}
	}
	if err := h.storeStoryboard(ctx, assetID, st.Grid, keys, tiles, duration, thumbs); err != nil {
		return nil, err
	}
	log.Info("stills stored", zap.Float64("poster_at", offset), zap.Int("thumbnails", len(files)))
	return thumbs, nil
}

// uploadThumbnails stores the thumbnail files under the asset's thumbnail
// folder, by name, and returns their keys.
func (h *Handlers) uploadThumbnails(ctx context.Context, assetID string, files []string) ([]string, error) {
	thumbDir := layout.ThumbnailDir(assetID)
	keys := make([]string, len(files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(uploadParallelism) // up to MaxThumbnails small files
	for i, f := range files {
		keys[i] = thumbDir + "/" + filepath.Base(f)
		g.Go(func() error { return h.cfg.Objects.PutFile(gctx, h.cfg.OutputsBucket, keys[i], f, "image/jpeg") })
	}
	return keys, g.Wait()
}

// storeStoryboard tiles the stored thumbnails (keys, their JPEGs tiles) into
// the sprite, writes the storyboard that maps time ranges to its tiles,
// and records all of it in thumbs. A run too short for a storyboard (no
// thumbnail) stores neither.
func (h *Handlers) storeStoryboard(ctx context.Context, assetID string, grid StoryboardLayout, keys []string, tiles [][]byte, duration float64, thumbs *kilnv1.Thumbnails) error {
	thumbs.IntervalSeconds, thumbs.Width, thumbs.Height = grid.Interval, int32(grid.TileWidth), int32(grid.TileHeight)
	if len(keys) == 0 {
		return nil
	}
	sprite, err := TileSprite(grid, tiles)
	if err != nil {
		return err
	}
	thumbDir := layout.ThumbnailDir(assetID)
	thumbs.Keys, thumbs.SpriteKey, thumbs.StoryboardKey = keys, thumbDir+"/"+SpriteFile, thumbDir+"/storyboard.vtt"
	if err := h.putBytes(ctx, thumbs.SpriteKey, sprite, "image/jpeg"); err != nil {
		return err
	}
	return h.putBytes(ctx, thumbs.StoryboardKey, []byte(StoryboardVTT(grid, len(keys), duration, SpriteFile)), "text/vtt")
}

// TileSprite lays the thumbnails (JPEGs, in order) out on grid's sheet,
// row by row, as one JPEG. A thumbnail of another size is scaled into its
// tile (nearest neighbour: they are all the tile's size, but for a broken
// one).
func TileSprite(grid StoryboardLayout, tiles [][]byte) ([]byte, error) {
	n := min(len(tiles), grid.Columns*grid.Rows)
	sheet := image.NewRGBA(image.Rect(0, 0, grid.Columns*grid.TileWidth, grid.Rows*grid.TileHeight))
	for i := range n {
		img, err := jpeg.Decode(bytes.NewReader(tiles[i]))
		if err != nil {
			return nil, fmt.Errorf("sprite: thumbnail %d: %w", i+1, err)
		}
		x, y := (i%grid.Columns)*grid.TileWidth, (i/grid.Columns)*grid.TileHeight
		dst := image.Rect(x, y, x+grid.TileWidth, y+grid.TileHeight)
		if img.Bounds().Size() == dst.Size() {
			draw.Draw(sheet, dst, img, img.Bounds().Min, draw.Src)
			continue
		}
		b := img.Bounds()
		for ty := range grid.TileHeight {
			for tx := range grid.TileWidth {
				sheet.Set(x+tx, y+ty, img.At(b.Min.X+tx*b.Dx()/grid.TileWidth, b.Min.Y+ty*b.Dy()/grid.TileHeight))
			}
		}
	}
	var out bytes.Buffer
	if err := jpeg.Encode(&out, sheet, &jpeg.Options{Quality: spriteQuality}); err != nil {
		return nil, fmt.Errorf("sprite: %w", err)
	}
	return out.Bytes(), nil
}

// spriteQuality is the sprite's JPEG quality (the thumbnails' ffmpeg
// -q:v 4 is about as good).
const spriteQuality = 85

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
