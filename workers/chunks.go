package workers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Chunked encoding. A video longer than ChunkConfig.Threshold is cut, by
// frame number of the normalised constant-rate picture, into chunks of
// whole segments (Plan.chunking); each chunk is a task of its own
// (TypeTranscodeChunk) that any idle worker takes, and takes the stills of
// its frames; the audio — one continuous track, encoded once — is one more
// task beside them (TypeTranscodeTrack). Chunk 0 is the first LeadSegments GOPs, so the
// asset plays as soon as it and the audio's first segment are stored,
// however long the video.
//
// Exact boundaries: every chunk decodes from a little before its first
// frame (-ss to a key frame of the source, timestamps kept: -copyts), runs
// the same normalisation, and keeps the constant-rate frames [start, end)
// by their index (trim on the fps filter's output, whose timestamps are
// frame numbers), so the chunks hold every frame of the whole video once.
// Each starts at a key frame (its local time 0), and its fragments are
// moved to their place in the whole video by adding the chunk's first
// frame's time to their tfdt. The encoder settings are the same in every
// chunk, so every chunk's init segment is byte-identical (checked: the
// job fails otherwise) and chunk 0's is the rendition's.
//
// Completion: each part records what it stored in the job's ledger
// (Ledger, in Redis); whichever records last writes the VOD playlists,
// enqueues the download and publishes READY. While chunks finish, the video
// playlists list the chunks done from the first on (an EVENT playlist
// only grows: its writes are conditional on the stored copy). A job runs at
// most Chunking.parallel chunks at once: the first ones are queued
// together and each, once done, queues the one that many after it.

// ChunkConfig decides which sources are chunked and how.
type ChunkConfig struct {
	// Threshold: sources longer than this are chunked; 0 never chunks.
	Threshold time.Duration
	// Length of a chunk (after chunk 0), rounded to whole segments.
	Length time.Duration
	// Share is the part of the fleet's transcode slots (Fleet) one job's
	// chunks may hold at once, in (0, 1].
	Share float64
}

// Ledger keeps the results of a chunked transcode's parts
// (*ledger.Ledger).
type Ledger interface {
	// Record writes field and returns every field, atomically.
	Record(ctx context.Context, jobID string, attempt int32, field string, value []byte) (map[string][]byte, error)
	Read(ctx context.Context, jobID string, attempt int32) (map[string][]byte, error)
}

// Fleet tells how many transcode tasks the fleet runs at once.
type Fleet interface {
	TranscodeSlots(ctx context.Context) (int, error)
}

// Ledger fields.
const (
	trackField = "track"  // the track's ChunkResult
	audioField = "audio0" // the audio's first segment is stored
	leadField  = "lead0"  // chunk 0's first segments are stored
)

func chunkField(i int) string { return "c" + strconv.Itoa(i) }

// PlanChunks sets plan.Chunking when the source is to be chunked.
func PlanChunks(plan *kilnv1.Plan, media *kilnv1.MediaInfo, cfg ChunkConfig) {
	d := media.GetDurationSeconds()
	if cfg.Threshold <= 0 || plan.GetAudioOnly() || len(plan.GetRungs()) == 0 || d <= cfg.Threshold.Seconds() ||
		plan.GetGopFrames() <= 0 || plan.GetFrameRate() <= 0 {
		return
	}
	g := groupingOf(plan)
	gop := int64(plan.GetGopFrames())
	lead := int64(max(g.lead, 1)) * gop
	segFrames := int64(g.per) * gop
	length := cfg.Length
	if length <= 0 {
		length = DefaultChunkLength
	}
	frames := max(1, int64(math.Round(length.Seconds()*plan.GetFrameRate()/float64(segFrames)))) * segFrames
	total := int64(math.Ceil(d * plan.GetFrameRate()))
	count := 1 + (max(total-lead, 0)+frames-1)/frames
	if count < 2 {
		return
	}
	plan.Chunking = &kilnv1.Chunking{Count: int32(count), LeadFrames: lead, Frames: frames}
	plan.Decisions = append(plan.Decisions, fmt.Sprintf("chunked: %d chunks of %.0f s (the first %.0f s), encoded in parallel; the audio is one track",
		count, float64(frames)/plan.GetFrameRate(), float64(lead)/plan.GetFrameRate()))
}

// DefaultChunkLength is ChunkConfig.Length's default.
const DefaultChunkLength = 60 * time.Second

// ChunkFrames is the frame range [start, end) of chunk i; end is -1 for
// the last chunk (to the end of the source).
func ChunkFrames(c *kilnv1.Chunking, i int) (start, end int64) {
	if i == 0 {
		return 0, c.GetLeadFrames()
	}
	start = c.GetLeadFrames() + int64(i-1)*c.GetFrames()
	if i == int(c.GetCount())-1 {
		return start, -1
	}
	return start, start + c.GetFrames()
}

// firstSegment is the number of chunk i's first segment.
func firstSegment(plan *kilnv1.Plan, i int) int {
	if i == 0 {
		return 0
	}
	g := groupingOf(plan)
	perChunk := int(plan.GetChunking().GetFrames() / (int64(g.per) * int64(plan.GetGopFrames())))
	return max(g.lead, 1) + (i-1)*perChunk
}

// chunkSeekMargin is how far before its first frame a chunk starts
// decoding (from the source's key frame before that): the frame-rate
// filter picks each frame from the pictures around it.
const chunkSeekMargin = 1.0

// ChunkArgs is the ffmpeg invocation of chunk i: every rung of frames
// ChunkFrames(i), no audio, and the stills of those frames
// (out.Stills.Window; nil for none).
func ChunkArgs(in Input, plan *kilnv1.Plan, i int, out Outputs, opt EncodeOptions) []string {
	start, end := ChunkFrames(plan.GetChunking(), i)
	fps := plan.GetFrameRate()
	in.CopyTS = true
	var cut string
	if i == 0 {
		// Frame 0 is time 0 (start_time pads a late first picture): every
		// other chunk's place is counted from it.
		cut = ":start_time=0"
	} else {
		in.Seek = max(0, float64(start)/fps-chunkSeekMargin)
	}
	// The trim's end stops the run (ffmpeg reads no further once every
	// output ended). in.Seconds stays the whole source's bound: -t counts
	// from the key frame the seek lands on, which may be any way before.
	cut += ",trim=start_pts=" + strconv.FormatInt(start, 10)
	if end > 0 {
		cut += ":end_pts=" + strconv.FormatInt(end, 10)
	}
	cut += ",setpts=PTS-STARTPTS"
	args := InputArgs(in)
	args = append(args, "-filter_complex", videoGraph(plan, cut, out.Stills))
	for r := range plan.GetRungs() {
		args = append(args, rungArgs(plan, r, out, opt)...)
	}
	if out.Stills != nil {
		args = append(args, stillsArgs(out.Stills)...)
	}
	return args
}

// TrackReadRate is how fast the track reads its source, in multiples of
// real time. Unbounded, the audio encode takes a core at full speed while
// chunk 0 makes the first segments a viewer waits for; at 30× it costs a
// few per cent of one and still ends long before the chunks (a one-hour
// source's audio takes 2 minutes, its video at least W times longer).
const TrackReadRate = 30

// TrackArgs is the ffmpeg invocation of a chunked transcode's track: the
// audio, once, as one continuous rendition, read at TrackReadRate.
func TrackArgs(in Input, plan *kilnv1.Plan, out Outputs) []string {
	in.ReadRate = TrackReadRate
	args := InputArgs(in)
	args = append(args, "-map", streamSpec(plan.AudioStream, "a"), "-vn", "-sn", "-dn")
	args = append(args, audioArgs(plan)...)
	return append(args, hlsArgs(plan, out.Dir(layout.AudioRendition))...)
}

// transcodeChunked starts a chunked transcode: the track and the first
// Parallel chunks.
func (h *Handlers) transcodeChunked(ctx context.Context, p *kilnv1.TranscodeTask, log *zap.Logger) error {
	if h.cfg.Ledger == nil {
		return tasks.Permanent(failure.Internal, "the plan is chunked and this worker has no ledger", nil)
	}
	c := p.GetPlan().GetChunking()
	parallel := int(c.GetCount())
	if h.cfg.Fleet != nil {
		slots, err := h.cfg.Fleet.TranscodeSlots(ctx)
		if err != nil {
			return err
		}
		share := h.cfg.Chunks.Share
		if share <= 0 || share > 1 {
			share = DefaultChunkShare
		}
		parallel = min(parallel, max(1, int(float64(slots)*share)))
	}
	part := proto.CloneOf(p)
	part.Plan.Chunking.Parallel = int32(parallel)
	cmds := make([]tasks.Command, 0, parallel+1)
	if p.GetPlan().GetHasAudio() {
		track, err := tasks.NewTranscodeTrackTask(ctx, part)
		if err != nil {
			return err
		}
		cmds = append(cmds, track)
	}
	for i := range parallel {
		chunk := proto.CloneOf(part)
		chunk.Chunk = int32(i)
		cmd, err := tasks.NewTranscodeChunkTask(ctx, chunk)
		if err != nil {
			return err
		}
		cmds = append(cmds, cmd)
	}
	if err := h.cfg.Jobs.Check(ctx, p.JobId, p.Attempt); err != nil {
		return err
	}
	for _, cmd := range cmds {
		if err := tasks.Enqueue(ctx, h.cfg.Queue, cmd); err != nil {
			return err
		}
	}
	log.Info("chunked", zap.Int32("chunks", c.GetCount()), zap.Int("parallel", parallel))
	return nil
}

// DefaultChunkShare is ChunkConfig.Share's default.
const DefaultChunkShare = 0.5

// TranscodeChunk encodes one chunk of a chunked transcode, stores its
// segments and records them; see transcodeChunked.
func (h *Handlers) TranscodeChunk(ctx context.Context, t *asynq.Task) error {
	var p kilnv1.TranscodeTask
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	i := int(p.GetChunk())
	log := h.cfg.Logger.With(zap.String("job_id", p.GetJobId()), zap.String("stage", "transcode"), zap.Int("chunk", i))
	c := p.GetPlan().GetChunking()
	if c == nil || i < 0 || i >= int(c.GetCount()) || len(p.GetPlan().GetRungs()) == 0 || h.cfg.Ledger == nil {
		return tasks.Permanent(failure.Internal, "malformed chunk task", nil)
	}
	all, err := h.cfg.Ledger.Read(ctx, p.JobId, p.Attempt)
	if err != nil {
		return err
	}
	if _, done := all[chunkField(i)]; !done {
		res, err := h.encodePart(ctx, &p, i, log)
		if err != nil {
			return err
		}
		data, err := proto.Marshal(res)
		if err != nil {
			return fmt.Errorf("transcode: chunk result: %w", err)
		}
		if all, err = h.cfg.Ledger.Record(ctx, p.JobId, p.Attempt, chunkField(i), data); err != nil {
			return err
		}
	}
	if next := i + int(max(c.GetParallel(), 1)); next < int(c.GetCount()) {
		n := proto.CloneOf(&p)
		n.Chunk = int32(next)
		cmd, err := tasks.NewTranscodeChunkTask(ctx, n)
		if err != nil {
			return err
		}
		if err := h.handOver(ctx, p.JobId, p.Attempt, cmd); err != nil {
			return err
		}
	}
	return h.afterPart(ctx, &p, all, log)
}

// TranscodeTrack encodes the audio of a chunked transcode; see
// transcodeChunked.
func (h *Handlers) TranscodeTrack(ctx context.Context, t *asynq.Task) error {
	var p kilnv1.TranscodeTask
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	log := h.cfg.Logger.With(zap.String("job_id", p.GetJobId()), zap.String("stage", "transcode"), zap.String("part", "track"))
	if p.GetPlan().GetChunking() == nil || !p.GetPlan().GetHasAudio() || h.cfg.Ledger == nil {
		return tasks.Permanent(failure.Internal, "malformed track task", nil)
	}
	all, err := h.cfg.Ledger.Read(ctx, p.JobId, p.Attempt)
	if err != nil {
		return err
	}
	if _, done := all[trackField]; !done {
		res, err := h.encodePart(ctx, &p, -1, log)
		if err != nil {
			return err
		}
		data, err := proto.Marshal(res)
		if err != nil {
			return fmt.Errorf("transcode: track result: %w", err)
		}
		if all, err = h.cfg.Ledger.Record(ctx, p.JobId, p.Attempt, trackField, data); err != nil {
			return err
		}
	}
	return h.afterPart(ctx, &p, all, log)
}

// encodePart runs chunk i's encode (the track's for -1) and stores its
// outputs.
func (h *Handlers) encodePart(ctx context.Context, p *kilnv1.TranscodeTask, i int, log *zap.Logger) (*kilnv1.ChunkResult, error) {
	if !ValidETag(p.Source.GetEtag()) {
		return nil, tasks.Permanent(failure.Internal, "the source's ETag is malformed", nil)
	}
	src, err := h.presign(ctx, p.Source.GetBucket(), p.Source.GetKey())
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(h.cfg.WorkDir, "chunk-"+p.JobId+"-")
	if err != nil {
		return nil, fmt.Errorf("transcode: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	limits := h.cfg.Limits.withDefaults()
	plan := p.GetPlan()
	out := Outputs{Root: dir}
	in := Input{URL: src.String(), ETag: p.Source.GetEtag(), Seconds: EncodeBound(p.GetMedia(), limits), MaxPixels: limits.MaxPixels}
	var args []string
	if i < 0 {
		args = TrackArgs(in, plan, out)
	} else {
		start, end := ChunkFrames(plan.GetChunking(), i)
		out.Stills = NewStills(filepath.Join(dir, "stills"), plan, p.GetMedia().GetDurationSeconds()).Window(int(start), int(end))
		args = ChunkArgs(in, plan, i, out, EncodeOptions{X264Preset: h.cfg.X264Preset, Threads: h.cfg.Threads})
	}
	started := time.Now()
	var segs *segmentPublisher
	err = h.readSource(ctx, in.URL, in.ETag, failure.TranscodeFailed, "the source could not be decoded", func() error {
		if err := resetOutputs(out); err != nil {
			return err
		}
		if err := out.Prepare(plan); err != nil {
			return err
		}
		if segs, err = newPartPublisher(h, p, out, i, log); err != nil {
			return err
		}
		return h.encode(ctx, args, func(ffmpeg.Progress) {}, segs)
	})
	if err != nil {
		return nil, h.sourceChanged(ctx, p.Source, err)
	}
	if err := segs.finish(ctx); err != nil {
		return nil, err
	}
	res := segs.result()
	if d, err := segs.decoded(); err == nil {
		res.DecodedSeconds = d
	}
	if out.Stills != nil {
		if err := h.storeChunkStills(ctx, p.AssetId, out.Stills, res); err != nil {
			return nil, err
		}
	}
	log.Info("part encoded", zap.Duration("took", time.Since(started)), zap.Float64("seconds", res.DecodedSeconds))
	return res, nil
}

// afterPart is what a part does once its result is in the ledger (all):
// report the chunks done, list in the video playlists the chunks done
// from the first on, announce the asset playable once chunk 0 and the
// audio's first segment are stored, and complete the job when every part
// is done.
func (h *Handlers) afterPart(ctx context.Context, p *kilnv1.TranscodeTask, all map[string][]byte, log *zap.Logger) error {
	c := p.GetPlan().GetChunking()
	count := int(c.GetCount())
	chunks := make([]*kilnv1.ChunkResult, 0, count) // the chunks done from the first on
	done := 0
	for i := range count {
		data, ok := all[chunkField(i)]
		if !ok {
			continue
		}
		done++
		if len(chunks) == i {
			var r kilnv1.ChunkResult
			if err := proto.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("transcode: ledger: chunk %d: %w", i, err)
			}
			chunks = append(chunks, &r)
		}
	}
	var track *kilnv1.ChunkResult
	if data, ok := all[trackField]; ok {
		track = &kilnv1.ChunkResult{}
		if err := proto.Unmarshal(data, track); err != nil {
			return fmt.Errorf("transcode: ledger: track: %w", err)
		}
	}
	ev := jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_TRANSCODING, fmt.Sprintf("transcoding.chunks.%d", done))
	ev.ChunksDone, ev.ChunksTotal = int32(done), int32(count)
	ev.Progress = min(0.99, float64(done)/float64(count))
	if err := h.cfg.Events.PublishJobEvent(ctx, ev); err != nil {
		return err
	}
	if len(chunks) == count && (track != nil || !p.GetPlan().GetHasAudio()) {
		return h.completeChunked(ctx, p, chunks, track, log)
	}
	if len(chunks) == 0 {
		data, ok := all[leadField]
		if !ok {
			return nil
		}
		lead := &kilnv1.ChunkResult{}
		if err := proto.Unmarshal(data, lead); err != nil {
			return fmt.Errorf("transcode: ledger: chunk 0's first segments: %w", err)
		}
		chunks = append(chunks, lead)
	}
	rends, err := chunkRenditions(p, chunks)
	if err != nil {
		return err
	}
	for _, r := range rends {
		if err := h.storeGrowingPlaylist(ctx, p, r.name, r.segments, false); err != nil {
			return err
		}
	}
	if !p.GetPlan().GetHasAudio() {
		return h.publishChunkedPlayable(ctx, p, rends)
	}
	// The audio runs far ahead of the video (it is fast to encode): its
	// playlist lists no more than the video's does, so that a player
	// starting near the live end of each finds the same moment in both.
	audio := &kilnv1.ChunkRendition{}
	if rs := track.GetRenditions(); len(rs) > 0 {
		audio = rs[0]
	} else if data, ok := all[audioField]; !ok {
		return nil // no audio segment yet: not playable
	} else if err := proto.Unmarshal(data, audio); err != nil {
		return fmt.Errorf("transcode: ledger: audio: %w", err)
	}
	var video, at float64
	for _, seg := range rends[0].segments {
		video += seg.Duration
	}
	var segs []playlist.Segment
	for i, d := range audio.GetDurations() {
		if i > 0 && at >= video {
			break
		}
		segs = append(segs, playlist.Segment{URI: fmt.Sprintf(layout.SegmentPattern, i), Duration: d})
		at += d
	}
	if err := h.storeGrowingPlaylist(ctx, p, layout.AudioRendition, segs, false); err != nil {
		return err
	}
	return h.publishChunkedPlayable(ctx, p, rends)
}

// chunkRenditions joins the chunks' segments of every rung, checking that
// they follow each other and share one init segment.
func chunkRenditions(p *kilnv1.TranscodeTask, chunks []*kilnv1.ChunkResult) ([]*renditionOutput, error) {
	plan := p.GetPlan()
	out := make([]*renditionOutput, len(plan.GetRungs()))
	var inits [][]byte
	for k, rung := range plan.GetRungs() {
		out[k] = &renditionOutput{name: rung.Name, rung: rung}
		inits = append(inits, nil)
	}
	for i, c := range chunks {
		if len(c.GetRenditions()) != len(out) {
			return nil, tasks.Permanent(failure.Internal, fmt.Sprintf("chunk %d stored %d renditions, want %d", i, len(c.GetRenditions()), len(out)), nil)
		}
		for k, r := range c.GetRenditions() {
			o := out[k]
			switch {
			case r.GetName() != o.name:
				return nil, tasks.Permanent(failure.Internal, fmt.Sprintf("chunk %d: rendition %q, want %q", i, r.GetName(), o.name), nil)
			case int(r.GetFirst()) != len(o.segments):
				return nil, tasks.Permanent(failure.Internal, fmt.Sprintf("chunk %d of %s starts at segment %d, want %d", i, o.name, r.GetFirst(), len(o.segments)), nil)
			case i == 0:
				inits[k], o.codecs = r.GetInitSha256(), r.GetCodecs()
			case !bytes.Equal(r.GetInitSha256(), inits[k]):
				return nil, tasks.Permanent(failure.Internal, fmt.Sprintf("chunk %d of %s has another init segment than chunk 0", i, o.name), nil)
			}
			for j, d := range r.GetDurations() {
				o.segments = append(o.segments, playlist.Segment{URI: fmt.Sprintf(layout.SegmentPattern, len(o.segments)), Duration: d})
				o.bits = append(o.bits, float64(r.GetSizes()[j])*8)
			}
		}
	}
	return out, nil
}

// publishChunkedPlayable announces the asset playable (once chunk 0 and
// the audio's first segment are stored): the catalog drops the copies.
func (h *Handlers) publishChunkedPlayable(ctx context.Context, p *kilnv1.TranscodeTask, rends []*renditionOutput) error {
	ev := jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_TRANSCODING, "playable")
	ev.Playable = true
	ev.Outputs = &kilnv1.AssetOutputs{
		Bucket: h.cfg.OutputsBucket, Prefix: layout.AssetPrefix(p.AssetId),
		DurationSeconds: p.GetMedia().GetDurationSeconds(),
	}
	for _, r := range rends {
		ev.Outputs.Renditions = append(ev.Outputs.Renditions, describeRendition(p, r, nil))
	}
	if p.GetPlan().GetHasAudio() {
		audio := &renditionOutput{name: layout.AudioRendition, codecs: playlist.AudioCodecs}
		ev.Outputs.Renditions = append(ev.Outputs.Renditions, describeRendition(p, audio, nil))
	}
	return h.cfg.Events.PublishJobEvent(ctx, ev)
}

// trackRendition is the audio as the track recorded it (res).
func trackRendition(res *kilnv1.ChunkRendition) *renditionOutput {
	r := &renditionOutput{name: res.GetName(), codecs: res.GetCodecs()}
	for i, d := range res.GetDurations() {
		r.segments = append(r.segments, playlist.Segment{URI: fmt.Sprintf(layout.SegmentPattern, i), Duration: d})
		r.bits = append(r.bits, float64(res.GetSizes()[i])*8)
	}
	return r
}

// measuredBandwidth is the peak segment's and the average bit rate of
// segments of these durations and sizes (in bits), as HLS BANDWIDTH and
// AVERAGE-BANDWIDTH mean them.
func measuredBandwidth(durations, bits []float64) (peak, average int64) {
	var total, seconds float64
	for i, d := range durations {
		total += bits[i]
		seconds += d
		if d > 0 {
			peak = max(peak, int64(math.Ceil(bits[i]/d)))
		}
	}
	if seconds > 0 {
		average = int64(math.Ceil(total / seconds))
	}
	return peak, average
}

// durationsOf are the durations of segs.
func durationsOf(segs []playlist.Segment) []float64 {
	out := make([]float64, len(segs))
	for i, s := range segs {
		out[i] = s.Duration
	}
	return out
}

// completeChunked ends a chunked transcode once every part is done: the
// VOD playlists, the download's command and READY.
func (h *Handlers) completeChunked(ctx context.Context, p *kilnv1.TranscodeTask, chunks []*kilnv1.ChunkResult, track *kilnv1.ChunkResult, log *zap.Logger) error {
	rends, err := chunkRenditions(p, chunks)
	if err != nil {
		return err
	}
	measured := 0.0
	for _, s := range rends[0].segments {
		measured += s.Duration
	}
	limits := h.cfg.Limits.withDefaults()
	if measured > limits.MaxDuration.Seconds() {
		return tasks.Permanent(failure.TooLong, fmt.Sprintf("the file decodes to %.0f s (its header says %.0f s); the limit is %.0f s",
			measured, p.GetMedia().GetDurationSeconds(), limits.MaxDuration.Seconds()), nil)
	}
	outputs := &kilnv1.AssetOutputs{Bucket: h.cfg.OutputsBucket, Prefix: layout.AssetPrefix(p.AssetId), DurationSeconds: measured}
	for _, res := range track.GetRenditions() {
		rends = append(rends, trackRendition(res))
	}
	for _, r := range rends {
		if err := h.storeGrowingPlaylist(ctx, p, r.name, r.segments, true); err != nil {
			return err
		}
		outputs.Renditions = append(outputs.Renditions, describeRendition(p, r, r.bits))
	}
	thumbs, unused, err := h.assembleStills(ctx, p, chunks, measured)
	if err != nil {
		return err
	}
	outputs.PosterKey, outputs.Thumbnails = thumbs.GetPosterKey(), thumbs
	media := proto.CloneOf(p.GetMedia())
	if media == nil {
		media = &kilnv1.MediaInfo{}
	}
	media.DecodedDurationSeconds = measured
	plan := proto.CloneOf(p.GetPlan())
	download := &kilnv1.PackageTask{JobId: p.JobId, AssetId: p.AssetId, Attempt: p.Attempt, Media: media, Plan: plan, Download: true}
	cmd, err := tasks.NewPackageTask(ctx, download)
	if err != nil {
		return err
	}
	if err := h.handOver(ctx, p.JobId, p.Attempt, cmd); err != nil {
		return err
	}
	ev := jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_READY, "ready")
	ev.Media, ev.Plan, ev.Outputs = media, plan, outputs
	ev.ChunksDone, ev.ChunksTotal = int32(len(chunks)), int32(len(chunks))
	if err := h.cfg.Events.PublishJobEvent(ctx, ev); err != nil {
		return err
	}
	log.Info("chunked transcode complete", zap.Int("chunks", len(chunks)), zap.Float64("seconds", measured))
	for _, key := range unused {
		if err := h.cfg.Objects.Remove(ctx, h.cfg.OutputsBucket, key); err != nil {
			log.Warn("a poster candidate left behind", zap.String("key", key), zap.Error(err))
		}
	}
	return nil
}

// storeChunkStills stores the stills a chunk's run wrote (st): its
// thumbnails where the asset keeps them, its poster candidates beside them
// (poster_N.jpg), each described with its luma statistics for the choice
// of the poster (assembleStills).
func (h *Handlers) storeChunkStills(ctx context.Context, assetID string, st *Stills, res *kilnv1.ChunkResult) error {
	keys, err := h.uploadThumbnails(ctx, assetID, st.thumbnailFiles())
	if err != nil {
		return err
	}
	res.ThumbnailKeys = keys
	first, local := st.window(st.PosterFrames)
	for j := range local {
		name := PosterFile(first + j)
		file := filepath.Join(st.Dir, name)
		mean, dev, err := lumaStats(file)
		if errors.Is(err, os.ErrNotExist) { // past the last frame
			continue
		} else if err != nil {
			return err
		}
		key := layout.ThumbnailDir(assetID) + "/" + name
		if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, key, file, "image/jpeg"); err != nil {
			return err
		}
		res.Posters = append(res.Posters, &kilnv1.PosterCandidate{Frame: int64(st.PosterFrames[first+j]), Key: key, LumaMean: mean, LumaDev: dev})
	}
	return nil
}

// assembleStills ends the stills of a chunked transcode: the sprite tiled
// from every chunk's thumbnails, the storyboard, and the poster chosen
// among the chunks' candidates as a whole-video run chooses it. unused are
// the candidates not chosen (removed once the asset is READY).
func (h *Handlers) assembleStills(ctx context.Context, p *kilnv1.TranscodeTask, chunks []*kilnv1.ChunkResult, duration float64) (thumbs *kilnv1.Thumbnails, unused []string, err error) {
	st := NewStills("", p.GetPlan(), p.GetMedia().GetDurationSeconds())
	var keys []string
	cands := map[int]*kilnv1.PosterCandidate{}
	for _, c := range chunks {
		keys = append(keys, c.GetThumbnailKeys()...)
		for _, pc := range c.GetPosters() {
			cands[int(pc.GetFrame())] = pc
		}
	}
	tiles := make([][]byte, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(uploadParallelism)
	for i, key := range keys {
		g.Go(func() (err error) {
			tiles[i], err = h.cfg.Objects.Get(gctx, h.cfg.OutputsBucket, key, maxThumbnailBytes)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	thumbs = &kilnv1.Thumbnails{}
	if err := h.storeStoryboard(ctx, p.AssetId, st.Grid, keys, tiles, duration, thumbs); err != nil {
		return nil, nil, err
	}
	frame, ok := st.choosePoster(func(n int) (float64, float64, bool) {
		pc, ok := cands[n]
		return pc.GetLumaMean(), pc.GetLumaDev(), ok
	})
	if ok {
		thumbs.PosterKey = cands[frame].GetKey()
	}
	for _, pc := range cands {
		if pc.GetKey() != thumbs.PosterKey {
			unused = append(unused, pc.GetKey())
		}
	}
	return thumbs, unused, nil
}

// maxThumbnailBytes bounds a thumbnail read back from storage.
const maxThumbnailBytes = 1 << 20

// growingStore is object storage that writes a playlist only over the
// copy it read (*objstore.Client): two parts writing at once cannot
// shorten a growing playlist.
type growingStore interface {
	GetETag(ctx context.Context, bucket, key string, maxBytes int64) (data []byte, etag string, err error)
	PutIfMatch(ctx context.Context, bucket, key string, data []byte, contentType, etag string) error
}

// storeGrowingPlaylist writes the media playlist of rendition name listing
// segs, unless the stored one lists as many (an EVENT playlist only grows;
// a VOD one is final).
func (h *Handlers) storeGrowingPlaylist(ctx context.Context, p *kilnv1.TranscodeTask, name string, segs []playlist.Segment, ended bool) error {
	key := layout.PlaylistKey(p.AssetId, name)
	body := playlist.Media(playlist.MediaPlaylist{
		TargetDuration: playlist.MediaTargetDuration(int(p.GetPlan().GetSegmentSeconds()), segs),
		Map:            layout.InitFile, Segments: segs, Ended: ended, IndependentSegments: true,
	})
	gs, ok := h.cfg.Objects.(growingStore)
	if !ok {
		return h.putBytes(ctx, key, body, playlist.ContentType)
	}
	for range 20 {
		stored, etag, err := gs.GetETag(ctx, h.cfg.OutputsBucket, key, playlist.MaxMediaBytes)
		if err != nil {
			return err
		}
		if stored != nil {
			have, err := playlist.ParseSegments(stored)
			if err == nil && (len(have) > len(segs) || len(have) == len(segs) && (!ended || bytes.Contains(stored, []byte("#EXT-X-ENDLIST")))) {
				return nil
			}
		}
		err = gs.PutIfMatch(ctx, h.cfg.OutputsBucket, key, body, playlist.ContentType, etag)
		if !errors.Is(err, objstore.ErrChanged) {
			return err
		}
	}
	return fmt.Errorf("transcode: %s: the playlist kept changing under this write", key)
}

func (h *Handlers) putBytes(ctx context.Context, key string, body []byte, contentType string) error {
	f, err := os.CreateTemp(h.cfg.WorkDir, "playlist-")
	if err != nil {
		return fmt.Errorf("transcode: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(body); err != nil {
		f.Close()
		return fmt.Errorf("transcode: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("transcode: %w", err)
	}
	return h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, key, f.Name(), contentType)
}

// chunkShift is how far (in the track's timescale) chunk i's fragments
// move: its first frame's time, from the init segment's media timescale.
func chunkShift(plan *kilnv1.Plan, i int, timescale uint32) (uint64, error) {
	start, _ := ChunkFrames(plan.GetChunking(), i)
	if start == 0 {
		return 0, nil
	}
	rate := new(big.Rat).SetFloat64(plan.GetFrameRate())
	if r := formatRate(plan.GetFrameRate()); r != "" {
		if exact, ok := new(big.Rat).SetString(r); ok {
			rate = exact
		}
	}
	ticks := new(big.Rat).Mul(new(big.Rat).SetInt64(start*int64(timescale)), new(big.Rat).Inv(rate))
	if !ticks.IsInt() {
		return 0, fmt.Errorf("transcode: chunk %d starts at %s ticks of 1/%d s: not a whole number", i, ticks.FloatString(3), timescale)
	}
	return ticks.Num().Uint64(), nil
}

// mediaTimescale reads the media timescale (mdhd) of an init segment's
// first track.
func mediaTimescale(init []byte) (uint32, bool) {
	box, ok := findBox(init, "moov", "trak", "mdia", "mdhd")
	if !ok || len(box) < 24 {
		return 0, false
	}
	if box[0] == 1 { // version 1: 64-bit times
		if len(box) < 24 {
			return 0, false
		}
		return binary.BigEndian.Uint32(box[20:24]), true
	}
	return binary.BigEndian.Uint32(box[12:16]), true
}

// findBox returns the body of the box at path in data.
func findBox(data []byte, path ...string) ([]byte, bool) {
	for len(path) > 0 {
		found := false
		for off := 0; off+8 <= len(data); {
			size, hlen := int(binary.BigEndian.Uint32(data[off:])), 8
			if size == 1 && off+16 <= len(data) {
				size, hlen = int(binary.BigEndian.Uint64(data[off+8:])), 16
			}
			if size < hlen || off+size > len(data) {
				return nil, false
			}
			if string(data[off+4:off+8]) == path[0] {
				data, found = data[off+hlen:off+size], true
				break
			}
			off += size
		}
		if !found {
			return nil, false
		}
		path = path[1:]
	}
	return data, true
}

// shiftFragments adds shift to the base media decode time (tfdt) of every
// fragment of an fMP4 segment, in place, and returns it without its sidx
// (which would index the chunk's own times).
func shiftFragments(data []byte, shift uint64) ([]byte, error) {
	out := make([]byte, 0, len(data))
	for off := 0; off < len(data); {
		if off+8 > len(data) {
			return nil, errors.New("segment: truncated box")
		}
		size := int(binary.BigEndian.Uint32(data[off:]))
		if size == 1 && off+16 <= len(data) {
			size = int(binary.BigEndian.Uint64(data[off+8:]))
		}
		if size < 8 || off+size > len(data) {
			return nil, fmt.Errorf("segment: bad box size %d", size)
		}
		box := data[off : off+size]
		switch string(box[4:8]) {
		case "sidx":
		case "moof":
			if err := shiftMoof(box[8:], shift); err != nil {
				return nil, err
			}
			out = append(out, box...)
		default:
			out = append(out, box...)
		}
		off += size
	}
	return out, nil
}

func shiftMoof(moof []byte, shift uint64) error {
	n := 0
	for off := 0; off+8 <= len(moof); {
		size := int(binary.BigEndian.Uint32(moof[off:]))
		if size < 8 || off+size > len(moof) {
			return fmt.Errorf("segment: bad box size %d in moof", size)
		}
		if string(moof[off+4:off+8]) == "traf" {
			tfdt, ok := findBox(moof[off+8:off+size], "tfdt")
			if !ok || len(tfdt) < 8 {
				return errors.New("segment: traf without tfdt")
			}
			if tfdt[0] == 1 {
				if len(tfdt) < 12 {
					return errors.New("segment: short tfdt")
				}
				binary.BigEndian.PutUint64(tfdt[4:], binary.BigEndian.Uint64(tfdt[4:])+shift)
			} else {
				v := uint64(binary.BigEndian.Uint32(tfdt[4:])) + shift
				if v > math.MaxUint32 {
					return errors.New("segment: the shifted tfdt needs 64 bits (a version 0 box)")
				}
				binary.BigEndian.PutUint32(tfdt[4:], uint32(v))
			}
			n++
		}
		off += size
	}
	if n == 0 {
		return errors.New("segment: moof without traf")
	}
	return nil
}

func sha(data []byte) []byte { s := sha256.Sum256(data); return s[:] }
