// Package packager turns encoded rung MP4s into HLS (fMP4 segments, media
// playlists, a master playlist) and publishes the asset as ready.
package packager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Objects is the object storage the packager uses.
type Objects interface {
	PresignGet(ctx context.Context, bucket, key string, ttl time.Duration) (*url.URL, error)
	PutFile(ctx context.Context, bucket, key, path, contentType string) error
	Get(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, error)
	Open(ctx context.Context, bucket, key string) (io.ReadSeekCloser, objstore.Info, error)
}

// FFmpeg runs ffmpeg and ffprobe for the packager; *ffmpeg.Runner in
// production, a fake in tests.
type FFmpeg interface {
	Run(ctx context.Context, args []string, onProgress func(ffmpeg.Progress)) error
	Probe(ctx context.Context, input string, opts ffmpeg.ProbeOptions) (*ffmpeg.ProbeResult, error)
}

var _ FFmpeg = (*ffmpeg.Runner)(nil)

// Config holds the packager's dependencies.
type Config struct {
	FFmpeg        FFmpeg
	Objects       Objects
	Events        tasks.Publisher
	OutputsBucket string
	// WorkDir holds per-task temp folders; default os.TempDir().
	WorkDir string
	// Jobs tells whether a job was canceled before a stage hands over to
	// the next (tasks.CancelMiddleware checks before it starts); default:
	// never.
	Jobs   cancel.Checker
	Logger *zap.Logger
}

// Handler is the asynq handler of the package stage.
type Handler struct {
	cfg Config
}

// New returns the package handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Jobs == nil {
		cfg.Jobs = cancel.Never{}
	}
	return &Handler{cfg: cfg}
}

// Register adds the handler to mux, bounded by tasks.Bounded (a run out of
// time or memory is retried once).
func (h *Handler) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(tasks.TypePackage, tasks.Bounded(h.Package))
}

// What the packager's ffmpeg may read and write. Its input is an encoded
// rung, an MP4 the transcode wrote to the outputs bucket, read through a
// presigned URL: so the network protocols only (never file, which would let
// a crafted input make ffmpeg read the worker's files), the MP4 demuxer
// only (never hls, concat or an image sequence, which name other files),
// and the decoders of what the transcode encodes. Its outputs are files in
// the task's own work folder: file only.
const (
	InputProtocols  = "http,https,tcp,tls"
	InputFormats    = "mov,mp4,m4a,3gp,3g2,mj2"
	InputDecoders   = "h264,aac"
	OutputProtocols = "file"
)

// HLSArgs remuxes one encoded rung into VOD HLS with fMP4 segments of
// segmentSeconds (cut on the rung's fixed-GOP keyframes, so boundaries align
// across rungs): dir/index.m3u8, dir/init.mp4, dir/seg_00001.m4s…
func HLSArgs(input string, segmentSeconds int, dir string) []string {
	return []string{
		"-protocol_whitelist", InputProtocols,
		"-format_whitelist", InputFormats,
		"-codec_whitelist", InputDecoders,
		"-rw_timeout", strconv.FormatInt(ffmpeg.ReadTimeout.Microseconds(), 10),
		"-i", input,
		"-map", "0", "-c", "copy",
		"-protocol_whitelist", OutputProtocols,
		"-f", "hls",
		"-hls_time", strconv.Itoa(segmentSeconds),
		"-hls_playlist_type", "vod",
		"-hls_segment_type", "fmp4",
		"-hls_flags", "independent_segments",
		"-hls_fmp4_init_filename", layout.InitFile,
		"-hls_segment_filename", filepath.Join(dir, layout.SegmentPattern),
		filepath.Join(dir, layout.PlaylistFile),
	}
}

// Package builds the MP4 download (task.download) or packages one failed
// rendition again (task.only).
func (h *Handler) Package(ctx context.Context, t *asynq.Task) error {
	var p kilnv1.PackageTask
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	log := h.cfg.Logger.With(zap.String("job_id", p.GetJobId()), zap.String("stage", "package"))
	if p.Download {
		return h.download(ctx, &p, log)
	}
	if p.Only == "" {
		return tasks.Permanent(failure.Internal, "the package task names neither the download nor a rendition", nil)
	}
	work, err := os.MkdirTemp(h.cfg.WorkDir, "package-"+p.JobId+"-")
	if err != nil {
		return fmt.Errorf("package: temp dir: %w", err)
	}
	defer os.RemoveAll(work)
	rungs := map[string]*kilnv1.Rung{}
	for _, r := range p.Plan.GetRungs() {
		rungs[r.Name] = r
	}
	var (
		renditions []*kilnv1.Rendition
		failed     []*kilnv1.FailedRendition
	)
	for _, enc := range p.Encoded {
		if enc.Name != p.Only {
			continue
		}
		r, ok := rungs[enc.Name]
		if !ok && !p.Plan.GetAudioOnly() {
			return tasks.Permanent(failure.Internal, "encoded rendition "+enc.Name+" is not in the plan", nil)
		}
		if !ok {
			r = &kilnv1.Rung{Name: enc.Name}
		}
		rend, err := h.packageRung(ctx, &p, r, enc, filepath.Join(work, r.Name))
		if jerr, permanent := renditionFailure(err); permanent {
			log.Warn("rendition failed", zap.String("rendition", r.Name), zap.Error(err))
			failed = append(failed, &kilnv1.FailedRendition{Name: r.Name, Error: jerr, EncodedKey: enc.Object.GetKey()})
			continue
		}
		if err != nil {
			return err
		}
		renditions = append(renditions, rend)
	}
	return h.publishRendition(ctx, &p, renditions, failed, log)
}

// publishRendition publishes the outcome of a rendition retry: a partial
// READY event that updates just that rendition of the ready asset.
func (h *Handler) publishRendition(ctx context.Context, p *kilnv1.PackageTask, ok []*kilnv1.Rendition, failed []*kilnv1.FailedRendition, log *zap.Logger) error {
	if len(ok)+len(failed) == 0 {
		return tasks.Permanent(failure.Internal, "rendition "+p.Only+" was not encoded", nil)
	}
	ev := jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_READY,
		fmt.Sprintf("rendition.%s.%d", p.Only, p.RenditionRetry))
	ev.Outputs = &kilnv1.AssetOutputs{
		Bucket: h.cfg.OutputsBucket, Prefix: layout.AssetPrefix(p.AssetId),
		Renditions: ok, FailedRenditions: failed, Partial: true,
	}
	log.Info("rendition retried", zap.String("rendition", p.Only), zap.Bool("ok", len(ok) > 0))
	if err := h.cfg.Jobs.Check(ctx, p.JobId, p.Attempt); err != nil {
		return err // a retry of the whole job replaced this attempt meanwhile
	}
	return h.cfg.Events.PublishJobEvent(ctx, ev)
}

// MessageMissing is the failure of a rendition whose encoded object is not
// in storage (HTTP 404): storage is read-after-write consistent and the
// transcode stored it before this task was enqueued, so it was deleted.
const MessageMissing = "the encoded rendition is no longer in storage (deleted?)"

// renditionFailure reports whether err is a permanent failure of one
// rendition (bad data ffmpeg refuses, a deleted encoded object, an
// undescribable stream), as opposed to an infrastructure error (network,
// disk, a signal, the task's context: ffmpeg.ExitError.Cause) worth
// retrying the task for.
func renditionFailure(err error) (*kilnv1.JobError, bool) {
	if err == nil {
		return nil, false
	}
	var ee *ffmpeg.ExitError
	var te *failure.Error
	switch {
	case errors.As(err, &te):
		return &kilnv1.JobError{Code: te.Code, Message: te.Message}, true
	case errors.As(err, &ee) && ee.Cause() == ffmpeg.CauseInput:
		return &kilnv1.JobError{Code: failure.PackageFailed, Message: "ffmpeg could not package this rendition"}, true
	case errors.As(err, &ee) && ee.Cause() == ffmpeg.CauseMissing:
		return &kilnv1.JobError{Code: failure.PackageFailed, Message: MessageMissing}, true
	}
	return nil, false
}

func (h *Handler) packageRung(ctx context.Context, p *kilnv1.PackageTask, r *kilnv1.Rung, enc *kilnv1.EncodedRung, dir string) (*kilnv1.Rendition, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("package: %w", err)
	}
	ttl := time.Hour // the URL sits on ffmpeg's command line: not longer than the run
	if d, ok := ctx.Deadline(); ok {
		ttl = min(ttl, max(time.Until(d), 0)+time.Minute)
	}
	src, err := h.cfg.Objects.PresignGet(ctx, enc.Object.GetBucket(), enc.Object.GetKey(), ttl)
	if err != nil {
		return nil, err
	}
	if err := h.cfg.FFmpeg.Run(ctx, HLSArgs(src.String(), int(p.Plan.GetSegmentSeconds()), dir), nil); err != nil {
		return nil, fmt.Errorf("package %s: %w", r.Name, err)
	}
	probe, err := h.cfg.FFmpeg.Probe(ctx, src.String(), ffmpeg.ProbeOptions{FormatWhitelist: InputFormats, ProtocolWhitelist: InputProtocols, ReadTimeout: ffmpeg.ReadTimeout})
	if err != nil {
		return nil, fmt.Errorf("package %s: probe: %w", r.Name, err)
	}
	codecs, err := Codecs(probe)
	if err != nil {
		return nil, tasks.Permanent(failure.Internal, "cannot describe the encoded streams", err)
	}
	if init, err := os.ReadFile(filepath.Join(dir, layout.InitFile)); err == nil {
		codecs = PreferAVCC(codecs, init)
	}
	stats, err := MeasurePlaylist(filepath.Join(dir, layout.PlaylistFile))
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", r.Name, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("package: %w", err)
	}
	// Segments and init first, the playlist last: a reader never sees a
	// playlist that names a segment not yet stored.
	for _, e := range entries {
		if e.Name() != layout.PlaylistFile {
			if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, layout.SegmentKey(p.AssetId, r.Name, e.Name()), filepath.Join(dir, e.Name()), contentType(e.Name())); err != nil {
				return nil, err
			}
		}
	}
	playlistKey := layout.PlaylistKey(p.AssetId, r.Name)
	if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, playlistKey, filepath.Join(dir, layout.PlaylistFile), playlist.ContentType); err != nil {
		return nil, err
	}
	rend := &kilnv1.Rendition{
		Name: r.Name, Width: r.Width, Height: r.Height,
		Bandwidth: stats.PeakBitRate, AverageBandwidth: stats.AverageBitRate,
		Codecs: codecs, PlaylistKey: playlistKey, EncodedKey: enc.Object.GetKey(),
	}
	if r.Width > 0 {
		rend.FrameRate = p.Plan.GetFrameRate()
	}
	return rend, nil
}

func contentType(name string) string {
	switch filepath.Ext(name) {
	case ".m4s":
		return "video/iso.segment"
	case ".mp4":
		return "video/mp4"
	case ".m3u8":
		return playlist.ContentType
	}
	return "application/octet-stream"
}
