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
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/tasks"
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

// PosterArgs extracts one JPEG at offset seconds from an encoded rendition
// (already upright and square-pixelled), choosing the most representative
// frame of the next second (ffmpeg's thumbnail filter) to avoid flashes and
// transition frames.
// A frameRate of 0 takes the frame at offset as is (for very short
// sources, where the thumbnail filter would see too few frames).
func PosterArgs(input Input, offset float64, frameRate float64, out string) []string {
	args := []string{"-ss", strconv.FormatFloat(offset, 'f', 3, 64)}
	args = append(args, InputArgs(input)...)
	args = append(args, "-an")
	if n := int(math.Round(frameRate)); n >= 2 {
		args = append(args, "-vf", "thumbnail=n="+strconv.Itoa(n))
	}
	return append(args, "-frames:v", "1", "-q:v", "3", "-update", "1", "-f", "image2", out)
}

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

// StoryboardArgs writes, in one pass, a thumbnail every l.Interval seconds
// (outDir/t_00001.jpg…) and the same frames tiled into outDir/sprite.jpg.
func StoryboardArgs(input Input, l StoryboardLayout, outDir string) []string {
	// The input is the top rendition kiln encoded: one video stream, the
	// first.
	fg := fmt.Sprintf("[0:v:0]fps=1/%s,scale=%d:%d:flags=bicubic,setsar=1,split=2[t][s];[s]tile=%dx%d[sprite]",
		strconv.FormatFloat(l.Interval, 'f', -1, 64), l.TileWidth, l.TileHeight, l.Columns, l.Rows)
	args := InputArgs(input)
	return append(args, "-an", "-filter_complex", fg,
		"-map", "[t]", "-frames:v", strconv.Itoa(l.Count), "-q:v", "4", "-f", "image2", filepath.Join(outDir, "t_%05d.jpg"),
		"-map", "[sprite]", "-frames:v", "1", "-q:v", "4", "-update", "1", "-f", "image2", filepath.Join(outDir, "sprite.jpg"))
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

// Thumbnail extracts the poster, the thumbnails, the sprite sheet and the
// storyboard, then hands the job to the packager.
func (h *Handlers) Thumbnail(ctx context.Context, t *asynq.Task) error {
	var p kilnv1.ThumbnailTask
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	log := h.cfg.Logger.With(zap.String("job_id", p.GetJobId()), zap.String("stage", "thumbnail"))
	// The source here is the top rendition kiln encoded (the outputs
	// bucket, which no client writes), read with the same input bounds.
	u, err := h.presign(ctx, p.Source.GetBucket(), p.Source.GetKey())
	if err != nil {
		return err
	}
	src := Input{URL: u.String(), MaxPixels: h.cfg.Limits.withDefaults().MaxPixels}
	dir, err := os.MkdirTemp(h.cfg.WorkDir, "thumb-"+p.JobId+"-")
	if err != nil {
		return fmt.Errorf("thumbnail: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	duration := MediaDuration(p.GetMedia())
	poster, offset, err := h.pickPoster(ctx, src, duration, p.GetPlan().GetFrameRate(), dir)
	if err != nil {
		return err
	}
	thumbDir := layout.ThumbnailDir(p.AssetId)
	thumbs := &kilnv1.Thumbnails{PosterKey: layout.PosterKey(p.AssetId)}
	if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, thumbs.PosterKey, poster, "image/jpeg"); err != nil {
		return err
	}

	top := p.Plan.Rungs[0]
	grid := NewStoryboardLayout(duration, int(top.Width), int(top.Height))
	sb := filepath.Join(dir, "storyboard")
	if err := os.Mkdir(sb, 0o755); err != nil {
		return fmt.Errorf("thumbnail: %w", err)
	}
	if err := h.readSource(ctx, src.URL, src.ETag, failure.ThumbnailFailed, "thumbnails could not be extracted", func() error {
		return h.cfg.FFmpeg.Run(ctx, StoryboardArgs(src, grid, sb), nil)
	}); err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(sb, "t_*.jpg"))
	sort.Strings(files)
	sprite := filepath.Join(sb, "sprite.jpg")
	if _, err := os.Stat(sprite); err != nil || len(files) == 0 {
		// A source of a few frames can end before the first thumbnail.
		log.Info("no storyboard: the video is too short", zap.Float64("duration", duration))
		files = nil
	}
	for _, f := range files {
		key := thumbDir + "/" + filepath.Base(f)
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, key, f, "image/jpeg"); err != nil {
			return err
		}
		thumbs.Keys = append(thumbs.Keys, key)
	}
	if len(files) > 0 {
		thumbs.SpriteKey, thumbs.StoryboardKey = thumbDir+"/sprite.jpg", thumbDir+"/storyboard.vtt"
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, thumbs.SpriteKey, sprite, "image/jpeg"); err != nil {
			return err
		}
		vtt := filepath.Join(dir, "storyboard.vtt")
		if err := os.WriteFile(vtt, []byte(StoryboardVTT(grid, len(files), duration, "sprite.jpg")), 0o644); err != nil {
			return fmt.Errorf("thumbnail: %w", err)
		}
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, thumbs.StoryboardKey, vtt, "text/vtt"); err != nil {
			return err
		}
	}
	thumbs.IntervalSeconds, thumbs.Width, thumbs.Height = grid.Interval, int32(grid.TileWidth), int32(grid.TileHeight)
	log.Info("thumbnails extracted", zap.Float64("poster_at", offset), zap.Int("thumbnails", len(files)))

	next := &kilnv1.PackageTask{JobId: p.JobId, AssetId: p.AssetId, Attempt: p.Attempt, Media: p.Media, Plan: p.Plan,
		PosterKey: thumbs.PosterKey, Thumbnails: thumbs}
	for _, r := range p.Plan.Rungs {
		next.Encoded = append(next.Encoded, &kilnv1.EncodedRung{
			Name:   r.Name,
			Object: &kilnv1.ObjectRef{Bucket: h.cfg.OutputsBucket, Key: layout.EncodedKey(p.AssetId, r.Name)},
		})
	}
	cmd, err := tasks.NewPackageTask(ctx, next)
	if err != nil {
		return err
	}
	return h.handOver(ctx, p.JobId, p.Attempt, cmd)
}

// pickPoster tries PosterOffsets until a frame is neither black nor flat
// (a fade); if none is, it keeps the liveliest candidate.
func (h *Handlers) pickPoster(ctx context.Context, src Input, duration, fps float64, dir string) (string, float64, error) {
	best, bestScore, bestOffset := "", -1.0, 0.0
	for i, frac := range PosterOffsets {
		out := filepath.Join(dir, fmt.Sprintf("poster-%d.jpg", i))
		offset := duration * frac
		if duration < 1 { // a few frames: no room to choose
			break
		}
		if err := h.readSource(ctx, src.URL, src.ETag, failure.ThumbnailFailed, "no poster frame could be extracted", func() error {
			return h.cfg.FFmpeg.Run(ctx, PosterArgs(src, offset, fps, out), nil)
		}); err != nil {
			return "", 0, err
		}
		mean, dev, err := lumaStats(out)
		if err != nil { // seeking past the last frame writes nothing
			continue
		}
		if !Dull(mean, dev) {
			return out, offset, nil
		}
		if score := mean + dev; score > bestScore {
			best, bestScore, bestOffset = out, score, offset
		}
	}
	if best != "" {
		return best, bestOffset, nil
	}
	// Too short for the candidates (a few frames): the first frame.
	out := filepath.Join(dir, "poster-first.jpg")
	if err := h.readSource(ctx, src.URL, src.ETag, failure.ThumbnailFailed, "no poster frame could be extracted", func() error {
		return h.cfg.FFmpeg.Run(ctx, PosterArgs(src, 0, 0, out), nil)
	}); err != nil {
		return "", 0, err
	}
	if _, _, err := lumaStats(out); err != nil {
		return "", 0, tasks.Permanent(failure.ThumbnailFailed, "no poster frame could be extracted", err)
	}
	return out, 0, nil
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
