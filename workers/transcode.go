package workers

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// EncodeOptions are the knobs of TranscodeArgs that are not in the plan.
type EncodeOptions struct {
	X264Preset string
	Threads    int
}

// TranscodeArgs builds the single ffmpeg invocation that decodes the source
// once and encodes every rung of plan. The picture is normalised first
// (deinterlace, tone-map, constant frame rate; ffmpeg's autorotate applies
// the display matrix), then split, and each branch is scaled to square
// pixels and encoded with the same fixed GOP (keyframes every GopFrames, no
// scene-cut keyframes) so that segment boundaries align across rungs.
// Output i is outDir/<rung name>.mp4; an audio-only plan writes
// outDir/audio.m4a.
func TranscodeArgs(input string, plan *kilnv1.Plan, outDir string, opt EncodeOptions) []string {
	args := InputArgs(input)
	if plan.AudioOnly {
		args = append(args, "-map", "0:a:0", "-vn", "-sn", "-dn")
		args = append(args, audioArgs(plan)...)
		return append(args, "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4",
			filepath.Join(outDir, layout.AudioRendition+".m4a"))
	}
	n := len(plan.Rungs)
	var fg strings.Builder
	fg.WriteString("[0:v:0]")
	norm := plan.GetNormalisation()
	if norm.GetDeinterlace() {
		fg.WriteString("bwdif=mode=send_frame:deint=interlaced,")
	}
	if norm.GetToneMap() {
		fg.WriteString("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=hable:desat=0,zscale=t=bt709:m=bt709:r=tv,")
	}
	fmt.Fprintf(&fg, "fps=%s,split=%d", formatRate(plan.FrameRate), n)
	for i := range n {
		fmt.Fprintf(&fg, "[s%d]", i)
	}
	for i, r := range plan.Rungs {
		fmt.Fprintf(&fg, ";[s%d]scale=%d:%d:flags=bicubic,setsar=1,format=yuv420p[v%d]", i, r.Width, r.Height, i)
	}
	args = append(args, "-filter_complex", fg.String())
	gop := strconv.Itoa(int(plan.GopFrames))
	gopSeconds := float64(plan.GopFrames) / plan.FrameRate
	for i, r := range plan.Rungs {
		br := r.VideoBitRate
		args = append(args,
			"-map", fmt.Sprintf("[v%d]", i),
			"-c:v", "libx264", "-preset", opt.X264Preset, "-profile:v", "high",
			"-b:v", strconv.FormatInt(br, 10),
			"-maxrate", strconv.FormatInt(br*6/5, 10),
			"-bufsize", strconv.FormatInt(br*2, 10),
			"-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
			"-force_key_frames", "expr:gte(t,n_forced*"+strconv.FormatFloat(gopSeconds, 'f', -1, 64)+")",
		)
		if norm.GetToneMap() {
			args = append(args, "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709")
		}
		if opt.Threads > 0 {
			args = append(args, "-threads", strconv.Itoa(opt.Threads))
		}
		if plan.HasAudio {
			args = append(args, "-map", "0:a:0")
			args = append(args, audioArgs(plan)...)
		}
		args = append(args, "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4",
			filepath.Join(outDir, r.Name+".mp4"))
	}
	return args
}

func audioArgs(plan *kilnv1.Plan) []string {
	return []string{"-c:a", "aac", "-profile:a", "aac_low", "-b:a", strconv.FormatInt(plan.AudioBitRate, 10), "-ar", "48000", "-ac", "2"}
}

func formatRate(fps float64) string {
	// NTSC rates as exact rationals; others with enough precision.
	for _, base := range []float64{24, 30, 60} {
		if math.Abs(fps-base*1000/1001) < 0.01 {
			return fmt.Sprintf("%d/1001", int(base*1000))
		}
	}
	return strconv.FormatFloat(fps, 'f', -1, 64)
}

// Transcode encodes every rung in one ffmpeg run and uploads the rung MP4s.
func (h *Handlers) Transcode(ctx context.Context, t *asynq.Task) error {
	var p kilnv1.TranscodeTask
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	log := h.cfg.Logger.With(zap.String("job_id", p.GetJobId()), zap.String("stage", "transcode"))
	if err := h.cfg.Events.PublishJobEvent(ctx, jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_TRANSCODING, "transcoding")); err != nil {
		return err
	}
	src, err := h.cfg.Objects.PresignGet(ctx, p.Source.GetBucket(), p.Source.GetKey(), presignTTL)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(h.cfg.WorkDir, "transcode-"+p.JobId+"-")
	if err != nil {
		return fmt.Errorf("transcode: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := checkDisk(dir, EncodedBytes(p.Plan, p.GetMedia().GetDurationSeconds()), h.cfg.Limits.withDefaults().MaxTaskDisk); err != nil {
		return err
	}

	args := TranscodeArgs(src.String(), p.Plan, dir, EncodeOptions{X264Preset: h.cfg.X264Preset, Threads: h.cfg.Threads})
	started := time.Now()
	progress := h.progressReporter(ctx, &p, log)
	if err := h.cfg.FFmpeg.Run(ctx, args, progress); err != nil {
		return classify(err, failure.TranscodeFailed, "the source could not be decoded")
	}
	log.Info("encoded", zap.Duration("took", time.Since(started)), zap.Int("rungs", len(p.Plan.Rungs)))
	if p.Plan.AudioOnly {
		key := layout.EncodedKey(p.AssetId, layout.AudioRendition)
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, key, filepath.Join(dir, layout.AudioRendition+".m4a"), "audio/mp4"); err != nil {
			return err
		}
		next := &kilnv1.PackageTask{JobId: p.JobId, AssetId: p.AssetId, Attempt: p.Attempt, Media: p.Media, Plan: p.Plan,
			Encoded: []*kilnv1.EncodedRung{{Name: layout.AudioRendition, Object: &kilnv1.ObjectRef{Bucket: h.cfg.OutputsBucket, Key: key}}}}
		cmd, err := tasks.NewPackageTask(next)
		if err != nil {
			return err
		}
		return h.handOver(ctx, p.JobId, p.Attempt, cmd)
	}
	for _, r := range p.Plan.Rungs {
		key := layout.EncodedKey(p.AssetId, r.Name)
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, key, filepath.Join(dir, r.Name+".mp4"), "video/mp4"); err != nil {
			return err
		}
	}
	top := p.Plan.Rungs[0]
	next := &kilnv1.ThumbnailTask{
		JobId: p.JobId, AssetId: p.AssetId, Attempt: p.Attempt, Media: p.Media, Plan: p.Plan,
		Source: &kilnv1.ObjectRef{Bucket: h.cfg.OutputsBucket, Key: layout.EncodedKey(p.AssetId, top.Name)},
	}
	cmd, err := tasks.NewThumbnailTask(next)
	if err != nil {
		return err
	}
	return h.handOver(ctx, p.JobId, p.Attempt, cmd)
}

// progressReporter publishes transcode progress at most once a second.
func (h *Handlers) progressReporter(ctx context.Context, p *kilnv1.TranscodeTask, log *zap.Logger) func(ffmpeg.Progress) {
	duration := p.GetMedia().GetDurationSeconds()
	var last time.Time
	return func(pr ffmpeg.Progress) {
		if duration <= 0 || pr.Done || time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		frac := min(0.99, max(0, pr.OutTime.Seconds()/duration))
		ev := jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_TRANSCODING, fmt.Sprintf("transcoding.%02d", int(frac*100)))
		ev.Progress = frac
		// Progress is best effort: a bus outage must not hold the encode.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := h.cfg.Events.PublishJobEvent(pctx, ev); err != nil {
			log.Warn("publish progress", zap.Error(err))
		}
	}
}
