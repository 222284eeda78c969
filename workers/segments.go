package workers

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/playlist"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// SegmentPoll is how often a transcode looks for segments ffmpeg finished.
const SegmentPoll = 250 * time.Millisecond

// LeadSegments is how many segments at the start of a rendition are a
// single GOP each: the first segment of every rendition, the moment the
// asset turns playable, is ready after one GOP instead of a whole segment,
// and a player that starts at the first segment (hls.js) plays after 2 s
// of video are encoded. (Players built into browsers start a growing
// playlist three target durations from its end, 18 s.)
const LeadSegments = 3

// ChunkSeconds is how long the chunks ffmpeg's HLS muxer cuts are: one GOP
// (for an audio-only plan, which has none, a third of a segment). A
// published segment is one chunk (the first LeadSegments) or as many as
// make the plan's segment length.
func ChunkSeconds(plan *kilnv1.Plan) float64 {
	if plan.GetGopFrames() > 0 && plan.GetFrameRate() > 0 {
		return float64(plan.GetGopFrames()) / plan.GetFrameRate()
	}
	return float64(plan.GetSegmentSeconds()) / 3
}

// grouping maps a rendition's segments to ffmpeg's chunks: segment i is
// chunks [first, first+n).
type grouping struct{ lead, per int }

func groupingOf(plan *kilnv1.Plan) grouping {
	per := max(1, int(math.Round(float64(plan.GetSegmentSeconds())/ChunkSeconds(plan))))
	if per == 1 {
		return grouping{per: 1}
	}
	return grouping{lead: LeadSegments, per: per}
}

func (g grouping) segment(i int) (first, n int) {
	if i < g.lead {
		return i, 1
	}
	return g.lead + (i-g.lead)*g.per, g.per
}

// segmentPublisher stores the segments of a running transcode as ffmpeg
// finishes them and keeps each rendition's media playlist in storage true:
// an EVENT playlist of the stored segments, rewritten after each new one,
// VOD once the run is over. Once every rendition has a segment stored it
// publishes the job's playable event. Segments are stored before the
// playlist that names them, so a reader never sees a missing segment; a
// stored segment's URI, duration and map never change.
type segmentPublisher struct {
	h          *Handlers
	task       *kilnv1.TranscodeTask
	out        Outputs
	renditions []*renditionOutput
	target     int // EXT-X-TARGETDURATION of every rendition
	grouping   grouping
	playable   bool
	log        *zap.Logger
	// A part of a chunked transcode (newPartPublisher): chunk is its
	// chunk (-1: the track), first the number of its first segment. A
	// part writes no playlist and announces nothing (afterPart does); the
	// track calls onStarted once the audio has a segment.
	part      bool
	chunk     int
	first     int
	onStarted func(ctx context.Context) error
}

// renditionOutput is what has been stored of one rendition.
type renditionOutput struct {
	name     string
	rung     *kilnv1.Rung // nil for the audio
	codecs   string       // from the init segment, once stored
	init     bool
	segments []playlist.Segment
	bits     []float64 // each segment's size in bits
	chunks   int       // ffmpeg's chunks stored (in segments) so far
	initSum  []byte    // the init segment's SHA-256, once read
	shift    uint64    // what a chunk adds to its fragments' tfdt (chunkShift)
	// floor is how many segments the playlist in storage already lists
	// (an earlier run of the task): an EVENT playlist only grows, so this
	// run rewrites it only once it lists more.
	floor int
}

// playlistReader is object storage that can read a stored playlist
// (*objstore.Client); without it a rerun may shorten a growing playlist.
type playlistReader interface {
	Get(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, error)
}

func newSegmentPublisher(ctx context.Context, h *Handlers, p *kilnv1.TranscodeTask, out Outputs, log *zap.Logger) (*segmentPublisher, error) {
	s := &segmentPublisher{h: h, task: p, out: out, target: int(p.GetPlan().GetSegmentSeconds()), grouping: groupingOf(p.GetPlan()), log: log}
	plan := p.GetPlan()
	if !plan.GetAudioOnly() {
		for _, r := range plan.GetRungs() {
			s.renditions = append(s.renditions, &renditionOutput{name: r.Name, rung: r})
		}
	}
	if plan.GetHasAudio() || plan.GetAudioOnly() {
		s.renditions = append(s.renditions, &renditionOutput{name: layout.AudioRendition, codecs: playlist.AudioCodecs})
	}
	if rd, ok := h.cfg.Objects.(playlistReader); ok {
		for _, r := range s.renditions {
			data, err := rd.Get(ctx, h.cfg.OutputsBucket, layout.PlaylistKey(p.AssetId, r.name), playlist.MaxMediaBytes)
			if errors.Is(err, objstore.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			segs, err := playlist.ParseSegments(data)
			if err != nil { // not ours to keep: this run rewrites it
				log.Warn("stored playlist unreadable", zap.String("rendition", r.name), zap.Error(err))
				continue
			}
			r.floor = len(segs)
		}
	}
	return s, nil
}

// newPartPublisher is the publisher of part i of a chunked transcode (-1:
// the track, whose only rendition is the audio).
func newPartPublisher(h *Handlers, p *kilnv1.TranscodeTask, out Outputs, i int, log *zap.Logger) (*segmentPublisher, error) {
	plan := p.GetPlan()
	s := &segmentPublisher{h: h, task: p, out: out, target: int(plan.GetSegmentSeconds()), grouping: groupingOf(plan), log: log,
		part: true, chunk: i, first: firstSegment(plan, max(i, 0))}
	if i > 0 {
		s.grouping.lead = 0 // whole segments: the lead ones are chunk 0's
	}
	if i >= 0 {
		for _, r := range plan.GetRungs() {
			s.renditions = append(s.renditions, &renditionOutput{name: r.Name, rung: r})
		}
		if i == 0 {
			s.onStarted = func(ctx context.Context) error {
				// Chunk 0's first segments, for the playlists afterPart
				// writes until chunk 0 is done: the asset plays as soon as
				// every rung and the audio have a segment, as a whole-file
				// transcode's does.
				data, err := proto.Marshal(s.result())
				if err != nil {
					return fmt.Errorf("transcode: %w", err)
				}
				all, err := h.cfg.Ledger.Record(ctx, p.JobId, p.Attempt, leadField, data)
				if err != nil {
					return err
				}
				return h.afterPart(ctx, p, all, log)
			}
		}
		return s, nil
	}
	if plan.GetHasAudio() {
		s.renditions = append(s.renditions, &renditionOutput{name: layout.AudioRendition, codecs: playlist.AudioCodecs})
	}
	s.onStarted = func(ctx context.Context) error {
		// The audio's first segment, for the playlist afterPart writes
		// until the track's result lists them all.
		first := s.renditions[0]
		data, err := proto.Marshal(&kilnv1.ChunkRendition{Name: first.name, Durations: []float64{first.segments[0].Duration},
			Sizes: []int64{int64(first.bits[0] / 8)}})
		if err != nil {
			return fmt.Errorf("transcode: %w", err)
		}
		all, err := h.cfg.Ledger.Record(ctx, p.JobId, p.Attempt, audioField, data)
		if err != nil {
			return err
		}
		return h.afterPart(ctx, p, all, log)
	}
	return s, nil
}

// result is what the part has stored so far.
func (s *segmentPublisher) result() *kilnv1.ChunkResult {
	res := &kilnv1.ChunkResult{Chunk: int32(s.chunk)}
	for _, r := range s.renditions {
		cr := &kilnv1.ChunkRendition{Name: r.name, Codecs: r.codecs, InitSha256: r.initSum, First: int32(s.first)}
		for k, seg := range r.segments {
			cr.Durations = append(cr.Durations, seg.Duration)
			cr.Sizes = append(cr.Sizes, int64(r.bits[k]/8))
		}
		res.Renditions = append(res.Renditions, cr)
	}
	return res
}

// run syncs every SegmentPoll until ctx ends. A failed sync (storage
// unavailable) is logged and tried again at the next tick; the final sync
// after ffmpeg (finish) reports what is still failing.
func (s *segmentPublisher) run(ctx context.Context) {
	t := time.NewTicker(SegmentPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.sync(ctx, false); err != nil && ctx.Err() == nil {
				s.log.Warn("store segments", zap.Error(err))
			}
		}
	}
}

// finish stores what is left once ffmpeg has exited successfully and
// turns every playlist into VOD.
func (s *segmentPublisher) finish(ctx context.Context) error { return s.sync(ctx, true) }

// sync stores the segments ffmpeg finished since the last sync and the
// playlists that changed, then announces the asset playable once every
// rendition has a segment.
func (s *segmentPublisher) sync(ctx context.Context, final bool) error {
	// Renditions are independent: their uploads run side by side, so a
	// sync costs one rendition's round trips, not all of them.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(uploadParallelism)
	for _, r := range s.renditions {
		g.Go(func() error { return s.syncRendition(gctx, r, final) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Playable once every rendition has a segment — at the latest when the
	// run is over, so that playable always comes before READY.
	if !s.playable && s.allStarted() {
		switch {
		case s.onStarted != nil:
			if err := s.onStarted(ctx); err != nil {
				return err
			}
			s.playable = true
		case !s.part:
			if err := s.publishPlayable(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// uploadParallelism bounds the uploads a transcode makes at once.
const uploadParallelism = 4

// syncRendition stores what ffmpeg finished of r since the last sync, and
// its playlist when it changed.
func (s *segmentPublisher) syncRendition(ctx context.Context, r *renditionOutput, final bool) error {
	dir := s.out.Dir(r.name)
	chunks, err := finishedSegments(filepath.Join(dir, FFmpegPlaylist))
	if err != nil {
		return err
	}
	if len(chunks) < r.chunks {
		return fmt.Errorf("transcode: %s: ffmpeg's playlist lost chunks (%d, had %d)", r.name, len(chunks), r.chunks)
	}
	if len(chunks) == r.chunks && !final {
		return nil
	}
	if len(chunks) > 0 && !r.init {
		if err := s.storeInit(ctx, r, dir); err != nil {
			return err
		}
	}
	for {
		first, n := s.grouping.segment(len(r.segments))
		if first >= len(chunks) || first+n > len(chunks) && !final {
			break
		}
		if err := s.storeSegment(ctx, r, dir, chunks[first:min(first+n, len(chunks))]); err != nil {
			return err
		}
		r.chunks = min(first+n, len(chunks))
	}
	switch {
	case len(r.segments) == 0 && final:
		return fmt.Errorf("transcode: %s: ffmpeg wrote no segment", r.name)
	case len(r.segments) == 0, len(r.segments) <= r.floor && !final, s.part:
		return nil
	}
	return s.storePlaylist(ctx, r, dir, final)
}

// storeSegment stores the chunks ffmpeg finished as the rendition's next
// segment: one chunk as is, several end to end (an fMP4 segment may hold
// several fragments, each moof and mdat in turn), and forgets their files.
func (s *segmentPublisher) storeSegment(ctx context.Context, r *renditionOutput, dir string, chunks []playlist.Segment) error {
	name := fmt.Sprintf(layout.SegmentPattern, s.first+len(r.segments))
	path := filepath.Join(dir, name)
	seg := playlist.Segment{URI: name}
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("transcode: %w", err)
	}
	defer os.Remove(path)
	var size int64
	for i, c := range chunks {
		in, err := os.Open(filepath.Join(dir, c.URI))
		if err != nil {
			out.Close()
			return fmt.Errorf("transcode: %w", err)
		}
		// A chunk is styp, sidx, moof, mdat. Joined, the segment keeps the
		// first styp and every moof and mdat; a sidx would index only its
		// own chunk, so a joined segment has none.
		keep := func(typ string) bool { return typ != "sidx" && (typ != "styp" || i == 0) }
		if len(chunks) == 1 {
			keep = func(string) bool { return true }
		}
		var src io.Reader = in
		if r.shift > 0 { // a later chunk's fragments, moved to their place
			data, err := io.ReadAll(in)
			if err == nil {
				data, err = shiftFragments(data, r.shift)
			}
			if err != nil {
				in.Close()
				out.Close()
				return fmt.Errorf("transcode: %s: %w", c.URI, err)
			}
			src = bytes.NewReader(data)
		}
		n, err := copyBoxes(out, src, keep)
		in.Close()
		if err != nil {
			out.Close()
			return fmt.Errorf("transcode: %w", err)
		}
		size += n
		seg.Duration += c.Duration
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("transcode: %w", err)
	}
	if err := s.h.cfg.Objects.PutFile(ctx, s.h.cfg.OutputsBucket, layout.SegmentKey(s.task.AssetId, r.name, name), path, "video/iso.segment"); err != nil {
		return err
	}
	r.segments = append(r.segments, seg)
	r.bits = append(r.bits, float64(size)*8)
	// Stored: the chunks are not needed again (the MP4 download is remuxed
	// from storage), so long videos keep little on disk.
	for _, c := range chunks {
		_ = os.Remove(filepath.Join(dir, c.URI))
	}
	return nil
}

func (s *segmentPublisher) allStarted() bool {
	for _, r := range s.renditions {
		if len(r.segments) == 0 {
			return false
		}
	}
	return len(s.renditions) > 0
}

func (s *segmentPublisher) storeInit(ctx context.Context, r *renditionOutput, dir string) error {
	path := filepath.Join(dir, layout.InitFile)
	if r.rung != nil {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("transcode: %s: %w", r.name, err)
		}
		codecs, ok := playlist.AVC1FromInit(data)
		if !ok {
			return fmt.Errorf("transcode: %s: the init segment has no avcC box", r.name)
		}
		r.codecs, r.initSum = codecs, sha(data)
		if s.part && s.chunk > 0 {
			// Chunk 0's init is the rendition's: this one must be the same
			// (afterPart compares the digests); its timescale places the
			// chunk's fragments.
			ts, ok := mediaTimescale(data)
			if !ok {
				return fmt.Errorf("transcode: %s: the init segment has no mdhd box", r.name)
			}
			if r.shift, err = chunkShift(s.task.GetPlan(), s.chunk, ts); err != nil {
				return err
			}
			r.init = true
			return nil
		}
	}
	if err := s.h.cfg.Objects.PutFile(ctx, s.h.cfg.OutputsBucket, layout.SegmentKey(s.task.AssetId, r.name, layout.InitFile), path, "video/mp4"); err != nil {
		return err
	}
	r.init = true
	return nil
}

func (s *segmentPublisher) storePlaylist(ctx context.Context, r *renditionOutput, dir string, final bool) error {
	pl := playlist.MediaPlaylist{
		TargetDuration: playlist.MediaTargetDuration(s.target, r.segments),
		Map:            layout.InitFile, Segments: r.segments, Ended: final, IndependentSegments: true,
	}
	path := filepath.Join(dir, layout.PlaylistFile)
	if err := os.WriteFile(path, playlist.Media(pl), 0o644); err != nil {
		return fmt.Errorf("transcode: %w", err)
	}
	return s.h.cfg.Objects.PutFile(ctx, s.h.cfg.OutputsBucket, layout.PlaylistKey(s.task.AssetId, r.name), path, playlist.ContentType)
}

// publishPlayable announces the asset playable: its renditions with the
// plan's bit rates (READY carries the measured ones).
func (s *segmentPublisher) publishPlayable(ctx context.Context) error {
	ev := jobevent.New(s.task.JobId, s.task.AssetId, s.task.Attempt, kilnv1.JobState_JOB_STATE_TRANSCODING, "playable")
	ev.Playable = true
	ev.Outputs = &kilnv1.AssetOutputs{
		Bucket: s.h.cfg.OutputsBucket, Prefix: layout.AssetPrefix(s.task.AssetId),
		DurationSeconds: s.task.GetMedia().GetDurationSeconds(),
	}
	for _, r := range s.renditions {
		ev.Outputs.Renditions = append(ev.Outputs.Renditions, s.rendition(r, false))
	}
	if err := s.h.cfg.Events.PublishJobEvent(ctx, ev); err != nil {
		return err
	}
	s.playable = true
	s.log.Info("playable", zap.Int("renditions", len(s.renditions)))
	return nil
}

// rendition describes r: with the bit rates measured from its stored
// segments, or, before the run is over, the plan's (describeRendition).
func (s *segmentPublisher) rendition(r *renditionOutput, measured bool) *kilnv1.Rendition {
	if !measured {
		return describeRendition(s.task, r, nil)
	}
	return describeRendition(s.task, r, r.bits)
}

// describeRendition describes rendition r of p's asset (r.rung nil for
// the audio): with the bit rates measured from its segments (r.segments,
// each of bits: the peak segment's and the average, as HLS BANDWIDTH and
// AVERAGE-BANDWIDTH mean them), or, with bits nil, the plan's.
func describeRendition(p *kilnv1.TranscodeTask, r *renditionOutput, bits []float64) *kilnv1.Rendition {
	out := &kilnv1.Rendition{Name: r.name, Codecs: r.codecs, PlaylistKey: layout.PlaylistKey(p.AssetId, r.name)}
	plan := p.GetPlan()
	if r.rung != nil {
		out.Width, out.Height, out.FrameRate = r.rung.Width, r.rung.Height, plan.GetFrameRate()
		out.Bandwidth, out.AverageBandwidth = r.rung.VideoBitRate*6/5, r.rung.VideoBitRate // the encoder's maxrate, its target
	} else {
		out.Bandwidth, out.AverageBandwidth = plan.GetAudioBitRate()*11/10, plan.GetAudioBitRate()
	}
	if bits == nil {
		return out
	}
	peak, avg := measuredBandwidth(durationsOf(r.segments), bits)
	out.Bandwidth = peak
	if avg > 0 {
		out.AverageBandwidth = avg
	}
	return out
}

// decoded is how long the longest rendition ffmpeg finished lasts, by its
// own playlist: what the run really encoded (0 when it lists nothing).
func (s *segmentPublisher) decoded() (float64, error) {
	longest := 0.0
	for _, r := range s.renditions {
		segs, err := finishedSegments(filepath.Join(s.out.Dir(r.name), FFmpegPlaylist))
		if err != nil {
			return 0, err
		}
		total := 0.0
		for _, seg := range segs {
			total += seg.Duration
		}
		longest = max(longest, total)
	}
	return longest, nil
}

// measured are the renditions with their measured bit rates, the video
// rungs first (the top one first), the audio last.
func (s *segmentPublisher) measured() []*kilnv1.Rendition {
	out := make([]*kilnv1.Rendition, 0, len(s.renditions))
	for _, r := range s.renditions {
		out = append(out, s.rendition(r, true))
	}
	return out
}

// finishedSegments reads the chunks ffmpeg's HLS muxer lists in its
// playlist (playlist.ParseSegments): each is complete (temp_file: written
// under another name and renamed first). A playlist not written yet lists
// none. Only plain file names are accepted: the muxer writes nothing else.
func finishedSegments(path string) ([]playlist.Segment, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("transcode: %w", err)
	}
	segs, err := playlist.ParseSegments(data)
	if err != nil {
		return nil, fmt.Errorf("transcode: %s: %w", path, err)
	}
	return segs, nil
}

// copyBoxes copies the top-level ISO BMFF boxes of r that keep accepts to
// w and returns the bytes written.
func copyBoxes(w io.Writer, r io.Reader, keep func(typ string) bool) (int64, error) {
	var written int64
	head := make([]byte, 16)
	for {
		if _, err := io.ReadFull(r, head[:8]); err == io.EOF {
			return written, nil
		} else if err != nil {
			return written, fmt.Errorf("box header: %w", err)
		}
		size, hlen := int64(binary.BigEndian.Uint32(head[:4])), int64(8)
		if size == 1 { // 64-bit size follows the type
			if _, err := io.ReadFull(r, head[8:16]); err != nil {
				return written, fmt.Errorf("box header: %w", err)
			}
			size, hlen = int64(binary.BigEndian.Uint64(head[8:16])), 16
		}
		if size < hlen { // 0 (to the end of the file) is never written by ffmpeg's fMP4 muxer
			return written, fmt.Errorf("box %q: bad size %d", head[4:8], size)
		}
		body := io.LimitReader(r, size-hlen)
		if !keep(string(head[4:8])) {
			if _, err := io.Copy(io.Discard, body); err != nil {
				return written, err
			}
			continue
		}
		if _, err := w.Write(head[:hlen]); err != nil {
			return written, err
		}
		n, err := io.Copy(w, body)
		written += hlen + n
		if err != nil {
			return written, err
		}
		if n != size-hlen {
			return written, fmt.Errorf("box %q: cut short", head[4:8])
		}
	}
}
