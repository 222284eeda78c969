package packager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// DownloadArgs remux the top rendition's stream (video, an fMP4 file: its
// init segment and segments end to end) and the audio's (audio, "" for
// none) into one progressive MP4 with its index first (faststart), copying
// the coded samples: no re-encode. An audio-only asset has only audio.
// Both inputs are files the task wrote itself from storage, read with the
// MP4 demuxer and the decoders kiln encodes only.
func DownloadArgs(video, audio, out string) []string {
	args := []string{}
	input := func(path string) {
		args = append(args, "-protocol_whitelist", OutputProtocols, "-format_whitelist", InputFormats,
			"-codec_whitelist", InputDecoders, "-i", path)
	}
	switch {
	case video != "" && audio != "":
		input(video)
		input(audio)
		args = append(args, "-map", "0:v:0", "-map", "1:a:0")
	case video != "":
		input(video)
		args = append(args, "-map", "0:v:0")
	default:
		input(audio)
		args = append(args, "-map", "0:a:0")
	}
	return append(args, "-c", "copy", "-map_metadata", "-1", "-movflags", "+faststart",
		"-protocol_whitelist", OutputProtocols, "-f", "mp4", out)
}

// download builds the MP4 download of a ready asset from the segments in
// storage — the top rung's and the audio's (the audio alone for an
// audio-only asset) — and publishes its key as a partial READY.
func (h *Handler) download(ctx context.Context, p *kilnv1.PackageTask, log *zap.Logger) error {
	plan := p.GetPlan()
	var video, audio string
	switch {
	case plan.GetAudioOnly():
		audio = layout.AudioRendition
	case len(plan.GetRungs()) == 0:
		return tasks.Permanent(failure.Internal, "the plan has no rung", nil)
	default:
		video = plan.GetRungs()[0].GetName()
		if plan.GetHasAudio() {
			audio = layout.AudioRendition
		}
	}
	work, err := os.MkdirTemp(h.cfg.WorkDir, "download-"+p.JobId+"-")
	if err != nil {
		return fmt.Errorf("package: temp dir: %w", err)
	}
	defer os.RemoveAll(work)
	var videoFile, audioFile string
	if video != "" {
		if videoFile, err = h.fetchRendition(ctx, p.AssetId, video, work); err != nil {
			return err
		}
	}
	if audio != "" {
		if audioFile, err = h.fetchRendition(ctx, p.AssetId, audio, work); err != nil {
			return err
		}
	}
	name, contentType := video, "video/mp4"
	if video == "" {
		name, contentType = layout.AudioRendition, "audio/mp4"
	}
	out := filepath.Join(work, "download.mp4")
	if err := h.cfg.FFmpeg.Run(ctx, DownloadArgs(videoFile, audioFile, out), nil); err != nil {
		var ee *ffmpeg.ExitError
		if errors.As(err, &ee) && ee.Cause() == ffmpeg.CauseInput {
			return tasks.Permanent(failure.PackageFailed, "the MP4 download could not be made from the segments", err)
		}
		return fmt.Errorf("package: download: %w", err)
	}
	key := layout.EncodedKey(p.AssetId, name)
	if err := h.cfg.Objects.PutFile(ctx, h.cfg.OutputsBucket, key, out, contentType); err != nil {
		return err
	}
	ev := jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_READY, "mp4")
	ev.Outputs = &kilnv1.AssetOutputs{Bucket: h.cfg.OutputsBucket, Prefix: layout.AssetPrefix(p.AssetId), Mp4Key: key, Partial: true}
	log.Info("download packaged", zap.String("key", key))
	if err := h.cfg.Jobs.Check(ctx, p.JobId, p.Attempt); err != nil {
		return err
	}
	return h.cfg.Events.PublishJobEvent(ctx, ev)
}

// fetchRendition writes rendition's stream from storage into one fMP4 file
// in dir — its init segment, then every segment its (VOD) media playlist
// lists — and returns the file's path.
func (h *Handler) fetchRendition(ctx context.Context, assetID, rendition, dir string) (string, error) {
	data, err := h.cfg.Objects.Get(ctx, h.cfg.OutputsBucket, layout.PlaylistKey(assetID, rendition), playlist.MaxMediaBytes)
	if errors.Is(err, objstore.ErrNotFound) {
		return "", tasks.Permanent(failure.PackageFailed, "the "+rendition+" playlist is no longer in storage (deleted?)", err)
	}
	if err != nil {
		return "", err
	}
	segs, err := playlist.ParseSegments(data)
	if err != nil || len(segs) == 0 {
		return "", tasks.Permanent(failure.Internal, "the stored "+rendition+" playlist lists no segment", err)
	}
	path := filepath.Join(dir, rendition+".mp4")
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("package: %w", err)
	}
	defer f.Close()
	files := append([]string{layout.InitFile}, make([]string, 0, len(segs))...)
	for _, s := range segs {
		files = append(files, s.URI)
	}
	for i, file := range files {
		if err := h.copyObject(ctx, f, layout.SegmentKey(assetID, rendition, file)); err != nil {
			return "", fmt.Errorf("package: %s part %s: %w", rendition, strconv.Itoa(i), err)
		}
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("package: %w", err)
	}
	return path, nil
}

func (h *Handler) copyObject(ctx context.Context, w io.Writer, key string) error {
	r, _, err := h.cfg.Objects.Open(ctx, h.cfg.OutputsBucket, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return tasks.Permanent(failure.PackageFailed, "a segment is no longer in storage (deleted?)", err)
	}
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(w, r)
	return err
}
