package workers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/cancel"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Config holds what every worker handler needs.
type Config struct {
	FFmpeg  FFmpeg
	Objects Objects
	Events  tasks.Publisher
	Queue   tasks.Enqueuer
	// OutputsBucket receives renditions and thumbnails.
	OutputsBucket string
	// WorkDir holds per-task temp folders; default os.TempDir().
	WorkDir string
	// Threads caps ffmpeg's threads per task; 0 lets ffmpeg decide.
	Threads int
	// Presets by name; "default" is DefaultPreset() when absent.
	Presets map[string]Preset
	// Jobs tells whether a job was canceled before a stage hands over to
	// the next (tasks.CancelMiddleware checks before it starts); default:
	// never.
	Jobs cancel.Checker
	// Limits bound accepted sources.
	Limits Limits
	// X264Preset trades speed for compression; default DefaultX264Preset.
	X264Preset string
	// HTTPClient makes the check reads that confirm ffmpeg's verdicts of
	// bad input (readSource); default: a client with ReadTimeout.
	HTTPClient *http.Client
	Logger     *zap.Logger
	// Chunks decides which sources are chunked (chunks.go); Ledger and
	// Fleet serve chunked transcodes (without a Ledger none is planned).
	Chunks ChunkConfig
	Ledger Ledger
	Fleet  Fleet
}

// Handlers are the asynq handlers of the media stages.
type Handlers struct {
	cfg Config
}

// DefaultX264Preset is Config.X264Preset's default.
const DefaultX264Preset = "veryfast"

// New returns the handlers.
func New(cfg Config) *Handlers {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Presets == nil {
		cfg.Presets = map[string]Preset{}
	}
	if _, ok := cfg.Presets["default"]; !ok {
		cfg.Presets["default"] = DefaultPreset()
	}
	if cfg.Jobs == nil {
		cfg.Jobs = cancel.Never{}
	}
	if cfg.X264Preset == "" {
		cfg.X264Preset = DefaultX264Preset
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: ReadTimeout}
	}
	return &Handlers{cfg: cfg}
}

// handOver enqueues the next stage's command of the job, unless the job was
// canceled (or the attempt replaced) while this stage worked.
func (h *Handlers) handOver(ctx context.Context, jobID string, attempt int32, c tasks.Command) error {
	if err := h.cfg.Jobs.Check(ctx, jobID, attempt); err != nil {
		return err
	}
	return tasks.Enqueue(ctx, h.cfg.Queue, c)
}

// Register adds the handlers to mux, each bounded by tasks.Bounded: a run
// that ran out of time or memory is retried once, then fails with timeout
// or resources_exhausted.
func (h *Handlers) Register(mux *asynq.ServeMux) {
	mux.HandleFunc(tasks.TypeProbe, tasks.Bounded(h.Probe))
	mux.HandleFunc(tasks.TypeTranscode, tasks.Bounded(h.Transcode))
	mux.HandleFunc(tasks.TypeTranscodeChunk, tasks.Bounded(h.TranscodeChunk))
	mux.HandleFunc(tasks.TypeTranscodeTrack, tasks.Bounded(h.TranscodeTrack))
}

// presignTTL is the lifetime of the presigned URL of a run without a
// deadline; a run with one gets a URL that expires a minute after it
// (presign): the URL sits on ffmpeg's command line.
const presignTTL = 6 * time.Hour

// presign presigns a GET of bucket/key valid for the rest of ctx's run.
func (h *Handlers) presign(ctx context.Context, bucket, key string) (*url.URL, error) {
	ttl := presignTTL
	if d, ok := ctx.Deadline(); ok {
		ttl = min(ttl, max(time.Until(d), 0)+time.Minute)
	}
	return h.cfg.Objects.PresignGet(ctx, bucket, key, ttl)
}

// statter is object storage that can tell an object's ETag
// (*objstore.Client).
type statter interface {
	Stat(ctx context.Context, bucket, key string) (objstore.Info, error)
}

// MessageSourceChanged is the failure message of a job whose source was
// replaced after it was probed.
const MessageSourceChanged = "the source was replaced after it was probed; the new object is a job of its own"

// sourceChanged returns err, or a permanent SourceChanged failure when err
// is a read of src pinned to its ETag that failed as bad input and src now
// has another ETag: S3 answers a pinned read of a replaced object with 412,
// which ffmpeg reports like a bad request ("4XX Client Error"), so the
// object is asked.
func (h *Handlers) sourceChanged(ctx context.Context, src *kilnv1.ObjectRef, err error) error {
	var fe *failure.Error
	st, ok := h.cfg.Objects.(statter)
	if !ok || src.GetEtag() == "" || !errors.As(err, &fe) || fe.Message == MessageMissing {
		return err
	}
	info, serr := st.Stat(ctx, src.GetBucket(), src.GetKey())
	if serr != nil || strings.Trim(info.ETag, `"`) == src.GetEtag() {
		return err
	}
	return tasks.Permanent(failure.SourceChanged, MessageSourceChanged, err)
}

// Probe runs ffprobe on the source, plans the job and enqueues the transcode.
func (h *Handlers) Probe(ctx context.Context, t *asynq.Task) error {
	var p kilnv1.ProbeTask
	if err := tasks.Decode(t, &p); err != nil {
		return err
	}
	log := h.cfg.Logger.With(zap.String("job_id", p.GetJobId()), zap.String("stage", "probe"))
	if err := h.cfg.Events.PublishJobEvent(ctx, jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_PROBING, "probing")); err != nil {
		return err
	}
	preset, ok := h.cfg.Presets[p.GetPreset()]
	if p.GetPreset() == "" {
		preset, ok = h.cfg.Presets["default"], true
	}
	if !ok {
		return tasks.Permanent(failure.InvalidPreset, fmt.Sprintf("unknown preset %q", p.GetPreset()), nil)
	}
	if !ValidETag(p.Source.GetEtag()) {
		return tasks.Permanent(failure.Internal, "the source's ETag is malformed", nil)
	}
	src, err := h.presign(ctx, p.Source.GetBucket(), p.Source.GetKey())
	if err != nil {
		return err
	}
	// Pinned to the job's ETag (job ids derive from it): the probe reads
	// the very object the job is about, and so does the transcode.
	var res *ffmpeg.ProbeResult
	err = h.readSource(ctx, src.String(), p.Source.GetEtag(), failure.InvalidMedia, "the file is not a readable video or audio file", func() (err error) {
		res, err = h.probeSource(ctx, src.String(), p.Source.GetEtag())
		return err
	})
	if err != nil {
		return h.sourceChanged(ctx, p.Source, err)
	}
	media := MediaFromProbe(res)
	if media.SizeBytes <= 0 {
		media.SizeBytes = p.Source.GetSize()
	}
	if err := h.cfg.Limits.Check(media); err != nil {
		h.publishMedia(ctx, &p, media, nil, log)
		return err
	}
	plan, err := Plan(media, preset)
	if errors.Is(err, ErrNoStreams) {
		return tasks.Permanent(failure.NoStreams, "the file has no video or audio stream", err)
	}
	if err != nil {
		return tasks.Permanent(failure.InvalidMedia, "the video stream cannot be planned", err)
	}
	if h.cfg.Ledger != nil {
		PlanChunks(plan, media, h.cfg.Chunks)
	}
	log.Info("probed", zap.String("format", media.Format), zap.Float64("duration", media.DurationSeconds),
		zap.Int("rungs", len(plan.Rungs)))
	if err := h.publishMedia(ctx, &p, media, plan, log); err != nil {
		return err
	}
	next := &kilnv1.TranscodeTask{JobId: p.JobId, AssetId: p.AssetId, Attempt: p.Attempt, Source: p.Source, Media: media, Plan: plan,
		TenantId: p.TenantId, Priority: p.Priority}
	cmd, err := tasks.NewTranscodeTask(ctx, next)
	if err != nil {
		return err
	}
	return h.handOver(ctx, p.JobId, p.Attempt, cmd)
}

// The probe's first read is ffmpeg's default window, QuickProbeSize and
// QuickAnalyzeDuration. Containers with a header (MP4, Matroska, AVI, MP3…)
// answer within it: ffprobe stops as soon as every stream has its
// parameters, a few frames in, whatever the window. Headerless streams
// (MPEG-TS, MPEG-PS) are read to the end of the window, since a
// stream may start anywhere: with the full window (ProbeSize,
// AnalyzeDuration: the transcode's) a 1080p TS costs 50 MiB of reading
// before the probe answers, with the quick one 5 MB. Only when the quick
// read leaves something the job needs unknown (probeComplete) does the
// probe read the full window. Reading less never renumbers streams (the
// same bytes, demuxed the same way, give the same streams at the same
// indices); only estimates over the window can move a little (a TS's
// audio bit rate, which kiln records and does not use).
const (
	QuickProbeSize       = 5_000_000
	QuickAnalyzeDuration = 5 * time.Second
)

// probeSource runs ffprobe on the source at rawURL, pinned to etag: in the
// quick window, then, when that left the job's streams incomplete, in the
// full one. A failure of the quick read is the probe's: the window does
// not decide whether a file opens.
func (h *Handlers) probeSource(ctx context.Context, rawURL, etag string) (*ffmpeg.ProbeResult, error) {
	opts := ffmpeg.ProbeOptions{
		FormatWhitelist:   FormatWhitelist,
		ProtocolWhitelist: ProtocolWhitelist,
		ProbeSize:         QuickProbeSize,
		AnalyzeDuration:   QuickAnalyzeDuration,
		ReadTimeout:       ReadTimeout,
		Headers:           PinHeaders(etag),
	}
	res, err := h.cfg.FFmpeg.Probe(ctx, rawURL, opts)
	if err != nil || probeComplete(res) {
		return res, err
	}
	opts.ProbeSize, opts.AnalyzeDuration = ProbeSize, AnalyzeDuration
	return h.cfg.FFmpeg.Probe(ctx, rawURL, opts)
}

// probeComplete reports whether res, read in the quick window, has what
// reading further could still add and the job depends on: a video or an
// audio stream; the picture size, pixel format and a frame rate of the
// video MediaFromProbe picks; the sample rate, channels and sample format
// of its audio; a duration. The pixel and sample formats are the
// decoder's: with them, the other values are those of decoded frames, not
// only the container's claims, which decoding corrects (an FLV whose audio
// starts after 5 s claims stereo for a mono AAC stream; a TS lists the
// stream, from its program table, at 0 Hz and 0 channels).
func probeComplete(res *ffmpeg.ProbeResult) bool {
	v, a := res.Video(), res.Audio()
	duration := res.Format.Duration
	switch {
	case v == nil && a == nil:
		return false
	case v != nil && (v.Width <= 0 || v.Height <= 0 || v.PixFmt == "" ||
		ffmpeg.ParseRational(v.AvgFrameRate) <= 0 && ffmpeg.ParseRational(v.RFrameRate) <= 0):
		return false
	case a != nil && (a.SampleRate <= 0 || a.Channels <= 0 || a.SampleFmt == ""):
		return false
	}
	if duration <= 0 && v != nil {
		duration = v.Duration
	}
	if duration <= 0 && a != nil {
		duration = a.Duration
	}
	return duration > 0
}

// publishMedia records what the probe found (and planned) on the job, also
// for a source about to be refused, so the failure can be understood.
func (h *Handlers) publishMedia(ctx context.Context, p *kilnv1.ProbeTask, media *kilnv1.MediaInfo, plan *kilnv1.Plan, log *zap.Logger) error {
	ev := jobevent.New(p.JobId, p.AssetId, p.Attempt, kilnv1.JobState_JOB_STATE_PROBING, "probed")
	ev.Media, ev.Plan = media, plan
	err := h.cfg.Events.PublishJobEvent(ctx, ev)
	if err != nil {
		log.Warn("publish probe result", zap.Error(err))
	}
	return err
}
