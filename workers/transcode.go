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
	"google.golang.org/protobuf/proto"

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
// once and encodes every rung of plan. It maps exactly the streams the plan
// names (the ones the probe described and the limits were checked on: a
// cover-art PNG before the real video is never encoded), reads the input
// through InputArgs (whitelists, -max_pixels, the ETag pin, the duration
// bound). The picture is normalised first
// (deinterlace, tone-map, constant frame rate; ffmpeg's autorotate applies
// the display matrix), then split, and each branch is scaled to square
// pixels and encoded with the same fixed GOP (keyframes every GopFrames, no
// scene-cut keyframes) so that segment boundaries align across rungs.
// Output i is outDir/<rung name>.mp4; an audio-only plan writes
// outDir/audio.m4a.
func TranscodeArgs(in Input, plan *kilnv1.Plan, outDir string, opt EncodeOptions) []string {
	args := InputArgs(in)
	audio := streamSpec(plan.AudioStream, "a")
	if plan.AudioOnly {
		args = append(args, "-map", audio, "-vn", "-sn", "-dn")
		args = append(args, audioArgs(plan)...)
		return append(args, "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4",
			filepath.Join(outDir, layout.AudioRendition+".m4a"))
	}
	n := len(plan.Rungs)
	var fg strings.Builder
	fg.WriteString("[" + streamSpec(plan.VideoStream, "v") + "]")
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
			args = append(args, "-map", audio)
			args = append(args, audioArgs(plan)...)
		}
		args = append(args, "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4",
			filepath.Join(outDir, r.Name+".mp4"))
	}
	return args
}

// streamSpec is ffmpeg's specifier of input stream index ("0:3"), or of
// the first stream of kind ("0:v:0") for plans made before indices were
// recorded.
func streamSpec(index *int32, kind string) string {
	if index != nil && *index >= 0 {
		return "0:" + strconv.Itoa(int(*index))
	}
	return "0:" + kind + ":0"
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
	if !ValidETag(p.Source.GetEtag()) {
		return tasks.Permanent(failure.Internal, "the source's ETag is malformed", nil)
	}
	src, err := h.presign(ctx, p.Source.GetBucket(), p.Source.GetKey())
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(h.cfg.WorkDir, "transcode-"+p.JobId+"-")
	if err != nil {
		return fmt.Errorf("transcode: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	limits := h.cfg.Limits.withDefaults()
	if err := checkDisk(dir, EncodedBytes(p.Plan, p.GetMedia().GetDurationSeconds()), limits.MaxTaskDisk); err != nil {
		return err
	}

	// The header's duration is what the limits, the disk estimate and the
	// time limit were computed from; a hostile file can hold much more. The
	// encode reads no further than that (and a little), then what was
	// really decoded is measured (ffmpeg's progress out_time: the end of
	// the longest output stream) and checked against the limit.
	bound := EncodeBound(p.GetMedia(), limits)
	in := Input{URL: src.String(), ETag: p.Source.GetEtag(), Seconds: bound, MaxPixels: limits.MaxPixels}
	args := TranscodeArgs(in, p.Plan, dir, EncodeOptions{X264Preset: h.cfg.X264Preset, Threads: h.cfg.Threads})
	started := time.Now()
	report := h.progressReporter(ctx, &p, log)
	var decoded time.Duration // written by the progress goroutine; Run returns after its last call
	progress := func(pr ffmpeg.Progress) {
		decoded = max(decoded, pr.OutTime)
		report(pr)
	}
	err = h.readSource(ctx, in.URL, in.ETag, failure.TranscodeFailed, "the source could not be decoded", func() error {
		decoded = 0
		return h.cfg.FFmpeg.Run(ctx, args, progress)
	})
	if err != nil {
		return h.sourceChanged(ctx, p.Source, err)
	}
	measured := decoded.Seconds()
	if measured > limits.MaxDuration.Seconds() {
		return tasks.Permanent(failure.TooLong, fmt.Sprintf("the file decodes to %.0f s (its header says %.0f s); the limit is %.0f s",
			measured, p.GetMedia().GetDurationSeconds(), limits.MaxDuration.Seconds()), nil)
	}
	if measured <= 0 { // no progress report: what the header says
		measured = p.GetMedia().GetDurationSeconds()
	}
	if d := p.GetMedia().GetDurationSeconds(); d > 0 && measured >= bound-0.5 {
		log.Warn("the source holds more than its header's duration: encoded up to the bound",
			zap.Float64("header_seconds", d), zap.Float64("bound_seconds", bound), zap.Float64("decoded_seconds", measured))
	}
	media := proto.CloneOf(p.GetMedia())
	if media == nil {
		media = &kilnv1.MediaInfo{}
	}
	media.DecodedDurationSeconds = measured
	p.Media = media
	log.Info("encoded", zap.Duration("took", time.Since(started)), zap.Int("rungs", len(p.Plan.Rungs)))
	if p.Plan.AudioOnly {
		key := layout.EncodedKey(p.AssetId, layout.AudioRendition)
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, key, filepath.Join(dir, layout.AudioRendition+".m4a"), "audio/mp4"); err != nil {
			return err
		}
		next := &kilnv1.PackageTask{JobId: p.JobId, AssetId: p.AssetId, Attempt: p.Attempt, Media: p.Media, Plan: p.Plan,
			Encoded: []*kilnv1.EncodedRung{{Name: layout.AudioRendition, Object: &kilnv1.ObjectRef{Bucket: h.cfg.OutputsBucket, Key: key}}}}
		cmd, err := tasks.NewPackageTask(ctx, next)
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
	cmd, err := tasks.NewThumbnailTask(ctx, next)
	if err != nil {
		return err
	}
	return h.handOver(ctx, p.JobId, p.Attempt, cmd)
}

// DurationTolerance is how much longer than its header says a source may
// decode: container and stream durations differ by a frame or an audio
// priming delay, never by much.
func DurationTolerance(seconds float64) float64 { return 1 + seconds/100 }

// EncodeBound is how many seconds of the source the transcode reads (an
// input -t): the probed duration and its tolerance, and never more than
// the duration limit and a second, so that a source that decodes longer
// than the limit is measured as such (too_long); the limit and a second
// for a source whose header has no duration.
func EncodeBound(m *kilnv1.MediaInfo, l Limits) float64 {
	l = l.withDefaults()
	ceiling := l.MaxDuration.Seconds() + 1
	if d := m.GetDurationSeconds(); d > 0 {
		return min(d+DurationTolerance(d), ceiling)
	}
	return ceiling
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
