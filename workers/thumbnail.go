package workers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// PosterArgs extracts one JPEG frame at offset seconds from an encoded
// rendition (already rotated and square-pixelled).
func PosterArgs(input string, offset float64, out string) []string {
	args := []string{"-ss", strconv.FormatFloat(offset, 'f', 3, 64)}
	args = append(args, InputArgs(input)...)
	return append(args, "-frames:v", "1", "-q:v", "3", "-update", "1", "-f", "image2", out)
}

// Thumbnail extracts the poster and hands the job to the packager.
func (h *Handlers) Thumbnail(ctx context.Context, t *asynq.Task) error {
	var p kilnv1.ThumbnailTask
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	log := h.cfg.Logger.With(zap.String("job_id", p.GetJobId()), zap.String("stage", "thumbnail"))
	src, err := h.cfg.Objects.PresignGet(ctx, p.Source.GetBucket(), p.Source.GetKey(), presignTTL)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(h.cfg.WorkDir, "thumb-"+p.JobId+"-")
	if err != nil {
		return fmt.Errorf("thumbnail: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "poster.jpg")
	offset := p.GetMedia().GetDurationSeconds() / 10
	if err := h.cfg.FFmpeg.Run(ctx, PosterArgs(src.String(), offset, out), nil); err != nil {
		return classify(err, "thumbnail_failed", "no poster frame could be extracted")
	}
	posterKey := tasks.PosterKey(p.AssetId)
	if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, posterKey, out, "image/jpeg"); err != nil {
		return err
	}
	log.Info("poster extracted", zap.Float64("offset", offset))
	next := &kilnv1.PackageTask{JobId: p.JobId, AssetId: p.AssetId, Media: p.Media, Plan: p.Plan, PosterKey: posterKey}
	for _, r := range p.Plan.Rungs {
		next.Encoded = append(next.Encoded, &kilnv1.EncodedRung{
			Name:   r.Name,
			Object: &kilnv1.ObjectRef{Bucket: h.cfg.OutputsBucket, Key: tasks.RenditionMP4Key(p.AssetId, r.Name)},
		})
	}
	return tasks.Enqueue(ctx, h.cfg.Queue, tasks.TypePackage, tasks.QueuePackage, p.JobId, next, 15*time.Minute)
}
