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
// once and writes every output of the job straight to HLS fMP4 segments:
// each video rung, the audio once (its own rendition, which every video
// variant refers to), and, beside them from the same decoded pictures, the
// poster candidates, the thumbnails and the sprite sheet (Outputs).
//
// It maps exactly the streams the plan names (the ones the probe described
// and the limits were checked on: a cover-art PNG before the real video is
// never encoded), reads the input through InputArgs (whitelists,
// -max_pixels, the ETag pin, the duration bound). The picture is normalised
// first (deinterlace, tone-map, constant frame rate; ffmpeg's autorotate
// applies the display matrix), then split, and each branch is scaled to
// square pixels and encoded with the same fixed GOP (keyframes every
// GopFrames, no scene-cut keyframes) so that segments, cut every
// SegmentSeconds (a multiple of the GOP), align across rungs.
func TranscodeArgs(in Input, plan *kilnv1.Plan, out Outputs, opt EncodeOptions) []string {
	args := InputArgs(in)
	audio := streamSpec(plan.AudioStream, "a")
	if plan.AudioOnly {
		args = append(args, "-map", audio, "-vn", "-sn", "-dn")
		args = append(args, audioArgs(plan)...)
		return append(args, hlsArgs(plan, out.Dir(layout.AudioRendition))...)
	}
	args = append(args, "-filter_complex", videoGraph(plan, "", out.Stills))
	for i := range plan.Rungs {
		args = append(args, rungArgs(plan, i, out, opt)...)
	}
	if plan.HasAudio {
		args = append(args, "-map", audio, "-vn")
		args = append(args, audioArgs(plan)...)
		args = append(args, hlsArgs(plan, out.Dir(layout.AudioRendition))...)
	}
	if out.Stills != nil {
		args = append(args, stillsArgs(out.Stills)...)
	}
	return args
}

// videoGraph is the filter graph of the video: the picture normalised
// (deinterlace, tone-map, constant frame rate), then cut (cut, a chunk's
// filters after the frame rate; "" for the whole video), and split into
// the ladder of plan's rungs, a cascade that labels rung i [v<i>], and,
// with stills (st not nil), the thumbnails, sprite and poster candidates
// ([thumbs], [sprite], [posters]).
func videoGraph(plan *kilnv1.Plan, cut string, st *Stills) string {
	var thumbs, posters []int
	if st != nil {
		_, thumbs = st.window(st.ThumbFrames)
		_, posters = st.window(st.PosterFrames)
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
	fmt.Fprintf(&fg, "fps=%s", formatRate(plan.FrameRate))
	fg.WriteString(cut)
	// [s0] feeds the ladder; [s<n>] the thumbnails, [s<n+1>] the poster
	// candidates.
	var labels []string
	if n > 0 {
		labels = append(labels, "[s0]")
	}
	if len(thumbs) > 0 {
		labels = append(labels, fmt.Sprintf("[s%d]", n))
	}
	if len(posters) > 0 {
		labels = append(labels, fmt.Sprintf("[s%d]", n+1))
	}
	if len(labels) > 1 {
		fmt.Fprintf(&fg, ",split=%d", len(labels))
	}
	fg.WriteString(strings.Join(labels, ""))
	// The ladder is a cascade: the top rung is scaled from the source,
	// each next one from the rung above it (largest first), so no scaler
	// reads a full-size picture but the first. The filter graph runs on
	// ffmpeg's one main thread; scaling every rung from 1080p took 60 %
	// more of it than the cascade on a 1080p ladder.
	for i, r := range plan.Rungs {
		fmt.Fprintf(&fg, ";[s%d]scale=%d:%d:flags=bicubic,setsar=1,format=yuv420p", i, r.Width, r.Height)
		if i+1 < n {
			fmt.Fprintf(&fg, ",split=2[v%d][s%d]", i, i+1)
		} else {
			fmt.Fprintf(&fg, "[v%d]", i)
		}
	}
	// Thumbnails and poster candidates: the frames at st.ThumbFrames, tile
	// size, and at st.PosterFrames, full size, counted from the run's
	// first frame (select's n).
	if len(thumbs) > 0 {
		fmt.Fprintf(&fg, ";[s%d]select='%s',scale=%d:%d:flags=bicubic,setsar=1[thumbs]", n, selectFrames(thumbs), st.Grid.TileWidth, st.Grid.TileHeight)
	}
	if len(posters) > 0 {
		fmt.Fprintf(&fg, ";[s%d]select='%s',scale=%d:%d:flags=bicubic,setsar=1[posters]", n+1, selectFrames(posters), st.PosterWidth, st.PosterHeight)
	}
	return fg.String()
}

// selectFrames is the select filter's expression that keeps frames.
func selectFrames(frames []int) string {
	sel := make([]string, len(frames))
	for i, f := range frames {
		sel[i] = "eq(n\\," + strconv.Itoa(f) + ")"
	}
	return strings.Join(sel, "+")
}

// rungArgs encode rung i of plan ([v<i>] of videoGraph) to its HLS
// rendition, with the fixed GOP every rung shares.
func rungArgs(plan *kilnv1.Plan, i int, out Outputs, opt EncodeOptions) []string {
	r := plan.Rungs[i]
	gop := strconv.Itoa(int(plan.GopFrames))
	gopSeconds := float64(plan.GopFrames) / plan.FrameRate
	br := r.VideoBitRate
	args := []string{
		"-map", fmt.Sprintf("[v%d]", i),
		"-c:v", "libx264", "-preset", opt.X264Preset, "-profile:v", "high",
		"-b:v", strconv.FormatInt(br, 10),
		"-maxrate", strconv.FormatInt(br*6/5, 10),
		"-bufsize", strconv.FormatInt(br*2, 10),
		"-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
		"-force_key_frames", "expr:gte(t,n_forced*" + strconv.FormatFloat(gopSeconds, 'f', -1, 64) + ")",
	}
	if plan.GetNormalisation().GetToneMap() {
		args = append(args, "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709")
	}
	if opt.Threads > 0 {
		args = append(args, "-threads", strconv.Itoa(opt.Threads))
	}
	args = append(args, "-an")
	return append(args, hlsArgs(plan, out.Dir(r.Name))...)
}

// stillsArgs write the stills of videoGraph's [thumbs] and [posters] into
// st.Dir, named by their number in the whole video (t_<k+1>.jpg for
// thumbnail k, PosterFile).
func stillsArgs(st *Stills) []string {
	var args []string
	image := func(label string, first int, frames []int, q, pattern string) {
		if len(frames) == 0 {
			return
		}
		args = append(args, "-map", label, "-fps_mode", "passthrough", "-frames:v", strconv.Itoa(len(frames)), "-q:v", q,
			"-start_number", strconv.Itoa(first+1), "-f", "image2", filepath.Join(st.Dir, pattern))
	}
	first, thumbs := st.window(st.ThumbFrames)
	image("[thumbs]", first, thumbs, "4", "t_%05d.jpg")
	first, posters := st.window(st.PosterFrames)
	image("[posters]", first, posters, "3", "poster_%d.jpg")
	return args
}

// FFmpegPlaylist is the media playlist ffmpeg's HLS muxer keeps in each
// rendition's folder: it lists a segment once the segment is complete, and
// is what the transcode watches (segments.go). The playlist players get is
// kiln's own (playlist.Media).
const FFmpegPlaylist = "ffmpeg.m3u8"

// Outputs are where a transcode run writes, under its work folder Root:
// one folder per rendition (Dir) and the stills (thumbnails, sprite, poster
// candidates), nil for audio only.
type Outputs struct {
	Root   string
	Stills *Stills
}

// Dir is the folder of rendition name's segments.
func (o Outputs) Dir(name string) string { return filepath.Join(o.Root, name) }

// Prepare makes the folders a run of plan writes to (ffmpeg's muxers do
// not make them).
func (o Outputs) Prepare(plan *kilnv1.Plan) error {
	dirs := []string{o.Dir(layout.AudioRendition)}
	for _, r := range plan.GetRungs() {
		dirs = append(dirs, o.Dir(r.Name))
	}
	if o.Stills != nil {
		dirs = append(dirs, o.Stills.Dir)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("transcode: %w", err)
		}
	}
	return nil
}

// ChunkPattern names the chunks ffmpeg writes in a rendition's folder
// (segments.go stores them as the rendition's segments, seg_NNNNN.m4s).
const ChunkPattern = "chunk_%05d.m4s"

// hlsArgs make one output an HLS fMP4 rendition in dir: init.mp4 and a
// chunk at every fixed-GOP key frame (ChunkSeconds), each written to a
// temporary name and renamed when complete, and FFmpegPlaylist updated
// after each. The muxer cuts at the first key frame at least -hls_time
// after the last cut: half a frame under the GOP, so every key frame
// (NTSC GOPs last 2.002 s) and nothing in between, the audio's at the
// same pace.
func hlsArgs(plan *kilnv1.Plan, dir string) []string {
	margin := 0.01
	if fps := plan.GetFrameRate(); fps > 0 {
		margin = 0.5 / fps
	}
	return []string{
		"-map_metadata", "-1",
		"-f", "hls",
		"-hls_time", strconv.FormatFloat(ChunkSeconds(plan)-margin, 'f', 4, 64),
		"-hls_playlist_type", "event",
		"-hls_segment_type", "fmp4",
		"-hls_flags", "independent_segments+temp_file",
		"-hls_fmp4_init_filename", layout.InitFile,
		"-hls_segment_filename", filepath.Join(dir, ChunkPattern),
		filepath.Join(dir, FFmpegPlaylist),
	}
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

// Transcode encodes every rung and the audio in one ffmpeg run straight to
// HLS segments, storing each segment as soon as ffmpeg finishes it and
// announcing the asset playable once every rendition has one; the
// thumbnails come from the same decoded pictures. When the run is over it
// stores the stills and the final (VOD) playlists, enqueues the MP4
// download's packaging and publishes READY: nothing waits on the download.
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
	if !p.GetPlan().GetAudioOnly() && len(p.GetPlan().GetRungs()) == 0 {
		return tasks.Permanent(failure.Internal, "the plan has no rung", nil)
	}
	if p.GetPlan().GetChunking() != nil {
		return h.transcodeChunked(ctx, &p, log)
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
	out := Outputs{Root: dir}
	if !p.Plan.AudioOnly {
		out.Stills = NewStills(filepath.Join(dir, "stills"), p.Plan, p.GetMedia().GetDurationSeconds())
	}

	// The header's duration is what the limits, the disk estimate and the
	// time limit were computed from; a hostile file can hold much more. The
	// encode reads no further than that (and a little), then what was
	// really decoded is measured (ffmpeg's progress out_time: the end of
	// the longest output stream) and checked against the limit.
	bound := EncodeBound(p.GetMedia(), limits)
	in := Input{URL: src.String(), ETag: p.Source.GetEtag(), Seconds: bound, MaxPixels: limits.MaxPixels}
	args := TranscodeArgs(in, p.Plan, out, EncodeOptions{X264Preset: h.cfg.X264Preset, Threads: h.cfg.Threads})
	started := time.Now()
	report := h.progressReporter(ctx, &p, log)
	var decoded time.Duration // written by the progress goroutine; Run returns after its last call
	progress := func(pr ffmpeg.Progress) {
		decoded = max(decoded, pr.OutTime)
		report(pr)
	}
	var segs *segmentPublisher
	err = h.readSource(ctx, in.URL, in.ETag, failure.TranscodeFailed, "the source could not be decoded", func() error {
		decoded = 0
		// A second run (readSource confirming a verdict) starts from
		// nothing: its segments replace the first run's.
		if err := resetOutputs(out); err != nil {
			return err
		}
		if err := out.Prepare(p.Plan); err != nil {
			return err
		}
		if segs, err = newSegmentPublisher(ctx, h, &p, out, log); err != nil {
			return err
		}
		return h.encode(ctx, args, progress, segs)
	})
	if err != nil {
		return h.sourceChanged(ctx, p.Source, err)
	}
	// What was decoded is what the renditions last, by the muxer's own
	// playlists (ffmpeg's out_time also counts the stills' timestamps);
	// out_time when they list nothing. It is read before the last
	// segments are stored, so a file that decodes too long stores no more.
	measured, err := segs.decoded()
	if err != nil {
		return err
	}
	if measured <= 0 {
		measured = decoded.Seconds()
	}
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
	if err := segs.finish(ctx); err != nil {
		return err
	}
	media := proto.CloneOf(p.GetMedia())
	if media == nil {
		media = &kilnv1.MediaInfo{}
	}
	media.DecodedDurationSeconds = measured
	p.Media = media
	log.Info("encoded", zap.Duration("took", time.Since(started)), zap.Int("rungs", len(p.Plan.Rungs)))

	ev := jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_READY, "ready")
	ev.Media, ev.Plan = p.Media, p.Plan
	ev.Outputs = &kilnv1.AssetOutputs{
		Bucket: h.cfg.OutputsBucket, Prefix: layout.AssetPrefix(p.AssetId),
		Renditions: segs.measured(), DurationSeconds: measured,
	}
	if out.Stills != nil {
		thumbs, err := h.uploadStills(ctx, p.AssetId, out.Stills, measured, log)
		if err != nil {
			return err
		}
		ev.Outputs.PosterKey, ev.Outputs.Thumbnails = thumbs.PosterKey, thumbs
	}
	download := &kilnv1.PackageTask{JobId: p.JobId, AssetId: p.AssetId, Attempt: p.Attempt, Media: p.Media, Plan: p.Plan, Download: true}
	cmd, err := tasks.NewPackageTask(ctx, download)
	if err != nil {
		return err
	}
	// The download's command before the READY fact: a READY is never
	// recorded without it (the package stage publishes the MP4's key).
	if err := h.handOver(ctx, p.JobId, p.Attempt, cmd); err != nil {
		return err
	}
	return h.cfg.Events.PublishJobEvent(ctx, ev)
}

// encode runs ffmpeg while segs stores the segments it finishes — when
// the source's header gives its duration. One without (a stream written to
// a pipe) is measured against the duration limit only once decoded, so
// nothing of it is stored or announced before (segs.finish stores it all).
func (h *Handlers) encode(ctx context.Context, args []string, progress func(ffmpeg.Progress), segs *segmentPublisher) error {
	if segs.task.GetMedia().GetDurationSeconds() <= 0 {
		return h.cfg.FFmpeg.Run(ctx, args, progress)
	}
	watch, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		segs.run(watch)
	}()
	err := h.cfg.FFmpeg.Run(ctx, args, progress)
	stop()
	<-done
	return err
}

// resetOutputs empties the output folders of a run.
func resetOutputs(out Outputs) error {
	entries, err := os.ReadDir(out.Root)
	if err != nil {
		return fmt.Errorf("transcode: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(out.Root, e.Name())); err != nil {
			return fmt.Errorf("transcode: %w", err)
		}
	}
	return nil
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
