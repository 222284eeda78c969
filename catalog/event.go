package catalog

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/tenant"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Fact is a validated JobEvent: what every store records from it.
type Fact struct {
	JobID, AssetID string
	State          State
	Attempt        int32     // ≥ 1
	At             time.Time // event time, or now when the event has none
	Progress       float64   // in [0,1]; 1 when ready
	Preset         string
	// Policy is policy.Public or policy.Signed from a QUEUED event, "" from
	// any other (only QUEUED carries it).
	Policy string
	// Tenant is the tenant that owns the job, from a QUEUED event
	// (tenant.Default when it names none), "" from any other.
	Tenant string
	// Priority is the upload's from a QUEUED event (tasks.Priorities), ""
	// from any other.
	Priority string
	Source   Source
	// ErrorCode and ErrorMessage are set for FAILED (default code
	// failure.Internal) and CANCELED (default failure.Canceled).
	ErrorCode, ErrorMessage string
	// Media and Plan are nil when the event carries none.
	Media *kilnv1.MediaInfo
	Plan  *kilnv1.Plan
	// Outputs is set for READY and for a playable event, with valid
	// renditions (see FactOf).
	Outputs *kilnv1.AssetOutputs
	// Partial: a READY updating only the renditions it names, or only the
	// MP4 download (DownloadOnly).
	Partial bool
	// Playable: a TRANSCODING event whose outputs play already (the first
	// segment of every rendition is stored; media playlists grow until
	// READY). Its bandwidths are estimates and its duration the expected
	// one.
	Playable bool
	// ChunksDone and ChunksTotal are a chunked transcode's progress: chunks
	// encoded and stored, out of how many; both 0 when the transcode is not
	// chunked. 0 ≤ ChunksDone ≤ ChunksTotal.
	ChunksDone, ChunksTotal int32
}

// DownloadOnly reports whether f is a partial READY that only names the
// MP4 download (built after READY from the stored segments).
func (f *Fact) DownloadOnly() bool {
	o := f.Outputs
	return f.Partial && o.GetMp4Key() != "" && len(o.GetRenditions()) == 0 && len(o.GetFailedRenditions()) == 0
}

// Duration is a READY's (or a playable event's) asset duration: the outputs', else the duration
// the transcode decoded (the media's measured one), else the media's
// header duration, which a hostile file can make up.
func (f *Fact) Duration() float64 {
	if d := f.Outputs.GetDurationSeconds(); d != 0 {
		return d
	}
	if d := f.Media.GetDecodedDurationSeconds(); d > 0 {
		return d
	}
	return f.Media.GetDurationSeconds()
}

// Rendition name and codecs syntax (immutable tables): names become URI
// path segments, codecs a quoted playlist attribute.
var (
	renditionName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	codecsString  = regexp.MustCompile(`^[A-Za-z0-9._+-]+(,[A-Za-z0-9._+-]+)*$`)
)

// FactOf validates ev and returns its fact; now stands in for a missing
// event time. An event that can never be applied gives an error wrapping
// ErrInvalidEvent.
func FactOf(ev *kilnv1.JobEvent, now time.Time) (*Fact, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: nil event", ErrInvalidEvent)
	}
	if !jobid.ValidJob(ev.GetJobId()) {
		return nil, fmt.Errorf("%w: malformed job id %q", ErrInvalidEvent, ev.GetJobId())
	}
	f := &Fact{JobID: ev.GetJobId(), AssetID: jobid.AssetOf(ev.GetJobId()), At: now}
	if a := ev.GetAssetId(); a != "" && a != f.AssetID {
		return nil, fmt.Errorf("%w: asset id %q does not belong to job %s", ErrInvalidEvent, a, f.JobID)
	}
	st, ok := stateOf(ev.GetState())
	if !ok {
		return nil, fmt.Errorf("%w: job %s: unknown state %v", ErrInvalidEvent, f.JobID, ev.GetState())
	}
	f.State = st
	f.Attempt = max(ev.GetAttempt(), 1)
	if t := ev.GetTime(); t != nil && t.IsValid() {
		f.At = t.AsTime()
	}
	f.Progress = ev.GetProgress()
	if math.IsNaN(f.Progress) || f.Progress < 0 {
		f.Progress = 0
	}
	f.Progress = min(f.Progress, 1)
	if st == StateReady {
		f.Progress = 1
	}
	if total := ev.GetChunksTotal(); total > 0 {
		f.ChunksTotal = total
		f.ChunksDone = min(max(ev.GetChunksDone(), 0), total)
	}
	f.Preset = ev.GetPreset()
	if st == StateQueued {
		f.Policy = policy.OfEvent(ev.GetPlaybackPolicy())
		if t := ev.GetTenantId(); t != "" && !tenant.Valid(t) {
			return nil, fmt.Errorf("%w: job %s: malformed tenant id", ErrInvalidEvent, ev.GetJobId())
		}
		f.Tenant = tenant.OfEvent(ev.GetTenantId())
		if f.Priority = tasks.NormPriority(ev.GetPriority()); !tasks.ValidPriority(f.Priority) {
			f.Priority = tasks.PriorityNormal
		}
	}
	if src := ev.GetSource(); src != nil {
		f.Source = Source{Bucket: src.GetBucket(), Key: src.GetKey(), ETag: src.GetEtag(), Size: src.GetSize()}
	}
	switch st {
	case StateFailed:
		f.ErrorCode, f.ErrorMessage = ev.GetError().GetCode(), ev.GetError().GetMessage()
		if f.ErrorCode == "" {
			f.ErrorCode = failure.Internal
		}
	case StateCanceled:
		f.ErrorCode, f.ErrorMessage = ev.GetError().GetCode(), ev.GetError().GetMessage()
		if f.ErrorCode == "" {
			f.ErrorCode, f.ErrorMessage = failure.Canceled, failure.MessageCanceled
		}
	}
	if m := ev.GetMedia(); m != nil && m.ProtoReflect().IsValid() {
		f.Media = m
	}
	if p := ev.GetPlan(); p != nil && p.ProtoReflect().IsValid() {
		f.Plan = p
	}
	if ev.GetPlayable() {
		switch {
		case st != StateTranscoding:
			return nil, fmt.Errorf("%w: job %s: playable event in state %v, want transcoding", ErrInvalidEvent, f.JobID, ev.GetState())
		case ev.GetOutputs().GetPartial():
			return nil, fmt.Errorf("%w: job %s: partial outputs on a playable event", ErrInvalidEvent, f.JobID)
		}
		f.Playable = true
	}
	if st == StateReady || f.Playable {
		if err := validOutputs(ev.GetOutputs()); err != nil {
			return nil, fmt.Errorf("%w: job %s: %w", ErrInvalidEvent, f.JobID, err)
		}
		f.Outputs = ev.GetOutputs()
		f.Partial = f.Outputs.GetPartial()
	}
	return f, nil
}

// validOutputs checks what the master playlist and playback routes will echo:
// rendition names become URI path segments, codecs a quoted attribute.
// A partial READY needs only the renditions it names, ready or failed (a
// rendition retry), or the MP4 download.
func validOutputs(o *kilnv1.AssetOutputs) error {
	switch {
	case o.GetPartial():
		if len(o.GetRenditions())+len(o.GetFailedRenditions()) == 0 && o.GetMp4Key() == "" {
			return errors.New("partial ready without renditions or download")
		}
	case o == nil || o.GetBucket() == "" || len(o.GetRenditions()) == 0:
		return errors.New("outputs without bucket and renditions")
	}
	seen := make(map[string]bool)
	for _, r := range o.GetFailedRenditions() {
		switch {
		case !renditionName.MatchString(r.GetName()):
			return fmt.Errorf("bad failed rendition name %q", r.GetName())
		case seen[r.GetName()]:
			return fmt.Errorf("duplicate failed rendition %q", r.GetName())
		}
		seen[r.GetName()] = true
	}
	for _, r := range o.GetRenditions() {
		switch {
		case !renditionName.MatchString(r.GetName()):
			return fmt.Errorf("bad rendition name %q", r.GetName())
		case seen[r.GetName()]:
			return fmt.Errorf("duplicate rendition %q", r.GetName())
		case !codecsString.MatchString(r.GetCodecs()):
			return fmt.Errorf("rendition %s: bad codecs %q", r.GetName(), r.GetCodecs())
		case r.GetPlaylistKey() == "":
			return fmt.Errorf("rendition %s: no playlist key", r.GetName())
		case r.GetBandwidth() <= 0:
			return fmt.Errorf("rendition %s: no bandwidth", r.GetName())
		}
		seen[r.GetName()] = true
	}
	return nil
}

// Reasons CheckEvent rejects an event for: the reason label of
// kiln_events_rejected_total{consumer="catalog"}.
const (
	// RejectInvalid: FactOf refuses it (malformed ids, an unknown state,
	// bad rendition names or codecs, READY without outputs).
	RejectInvalid = "invalid"
	// RejectWrongBucket: a source outside the sources bucket, or outputs
	// outside the outputs bucket.
	RejectWrongBucket = "wrong_bucket"
	// RejectOutsideAsset: an output key not under the job's asset prefix
	// (another asset's, or one that climbs out with "..", ".", "//").
	RejectOutsideAsset = "outside_asset"
	// RejectBadKey: a key that is not the one the layout gives that object
	// (a rendition's media playlist elsewhere than layout.PlaylistKey), or a
	// source key layout.IsSourceKey refuses.
	RejectBadKey = "bad_key"
	// RejectIDMismatch: the job id is not the one derived from the source it
	// claims (jobid.FromObject).
	RejectIDMismatch = "id_mismatch"
	// RejectFutureTime: an event time further ahead of the catalog's clock
	// than MaxClockSkew.
	RejectFutureTime = "future_time"
)

// RejectReasons lists every reason CheckEvent gives.
var RejectReasons = []string{RejectInvalid, RejectWrongBucket, RejectOutsideAsset, RejectBadKey, RejectIDMismatch, RejectFutureTime}

// MaxClockSkew is how far ahead of the catalog's clock an event's time may
// be (hosts' clocks differ; a later time would hold off the reconciler).
const MaxClockSkew = time.Hour

// RejectedError is an event CheckEvent refused; Reason is one of the
// Reject constants. It wraps ErrInvalidEvent: it can never be applied.
type RejectedError struct {
	Reason string
	Err    error
}

func (e *RejectedError) Error() string { return e.Err.Error() }

func (e *RejectedError) Unwrap() error { return e.Err }

func reject(reason, format string, args ...any) *RejectedError {
	return &RejectedError{Reason: reason, Err: fmt.Errorf("%w: %s", ErrInvalidEvent, fmt.Sprintf(format, args...))}
}

// Buckets are the buckets events may name: every job's source is in
// Sources, every asset's outputs in Outputs.
type Buckets struct{ Sources, Outputs string }

// CheckEvent validates ev (FactOf) and checks each field against what its
// sender may claim, so that whoever can publish on kiln.jobs.* cannot make
// the catalog record, serve or delete objects that are not the job's own:
//
//   - a source (QUEUED) is in the sources bucket, under a key
//     layout.IsSourceKey accepts, and the job id is the one derived from
//     it (jobid.FromObject; the asset id is the job's, FactOf checks);
//   - outputs (READY, partial or not, and a playable event's: the player
//     follows them as it follows READY's) are in the outputs bucket, their
//     prefix is the asset's (layout.AssetPrefix), each rendition's media
//     playlist is layout.PlaylistKey of its name (its segments are read
//     next to it), and every other key — encoded renditions, failed ones,
//     the MP4 download, the poster, thumbnails, sprite and storyboard — is
//     under the asset's prefix (layout.UnderAsset: no traversal);
//   - its time is at most MaxClockSkew ahead of now.
//
// A refused event gives a *RejectedError.
func CheckEvent(ev *kilnv1.JobEvent, b Buckets, now time.Time) (*Fact, error) {
	f, err := FactOf(ev, now)
	if err != nil {
		return nil, &RejectedError{Reason: RejectInvalid, Err: err}
	}
	if f.At.After(now.Add(MaxClockSkew)) {
		return nil, reject(RejectFutureTime, "job %s: event time %s is ahead of the catalog's clock", f.JobID, f.At.Format(time.RFC3339))
	}
	if src := ev.GetSource(); src != nil {
		switch job, _ := jobid.FromObject(src.GetBucket(), src.GetKey(), src.GetEtag()); {
		case src.GetBucket() != b.Sources:
			return nil, reject(RejectWrongBucket, "job %s: source in bucket %q, not the sources bucket", f.JobID, src.GetBucket())
		case !layout.IsSourceKey(src.GetKey()):
			return nil, reject(RejectBadKey, "job %s: source key %q is not a source key", f.JobID, src.GetKey())
		case job != f.JobID:
			return nil, reject(RejectIDMismatch, "job %s: not the job of its source %s/%s (etag %q)", f.JobID, src.GetBucket(), src.GetKey(), src.GetEtag())
		}
	}
	if f.Outputs != nil { // READY or playable
		if err := checkOutputs(f.AssetID, f.Outputs, b.Outputs); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// checkOutputs checks a READY's or a playable event's outputs against
// asset's layout (CheckEvent).
func checkOutputs(asset string, o *kilnv1.AssetOutputs, bucket string) error {
	if o.GetBucket() != bucket {
		return reject(RejectWrongBucket, "asset %s: outputs in bucket %q, not the outputs bucket", asset, o.GetBucket())
	}
	if o.GetPrefix() != layout.AssetPrefix(asset) {
		return reject(RejectOutsideAsset, "asset %s: outputs prefix %q is not the asset's", asset, o.GetPrefix())
	}
	under := func(what, key string) error {
		if key != "" && !layout.UnderAsset(asset, key) {
			return reject(RejectOutsideAsset, "asset %s: %s key %q is not under the asset's prefix", asset, what, key)
		}
		return nil
	}
	var errs []error
	for _, r := range o.GetRenditions() {
		if want := layout.PlaylistKey(asset, r.GetName()); r.GetPlaylistKey() != want {
			if err := under("playlist", r.GetPlaylistKey()); err != nil {
				return err
			}
			return reject(RejectBadKey, "asset %s: rendition %s: playlist key %q, want %q", asset, r.GetName(), r.GetPlaylistKey(), want)
		}
		errs = append(errs, under("encoded rendition", r.GetEncodedKey()))
	}
	for _, r := range o.GetFailedRenditions() {
		errs = append(errs, under("encoded rendition", r.GetEncodedKey()))
	}
	errs = append(errs, under("MP4", o.GetMp4Key()), under("poster", o.GetPosterKey()))
	if th := o.GetThumbnails(); th != nil {
		errs = append(errs, under("thumbnail poster", th.GetPosterKey()), under("sprite", th.GetSpriteKey()),
			under("storyboard", th.GetStoryboardKey()))
		for _, k := range th.GetKeys() {
			errs = append(errs, under("thumbnail", k))
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// FailureOf is a failed rendition's error code (failure.Internal when none)
// and message.
func FailureOf(r *kilnv1.FailedRendition) (code, message string) {
	code, message = r.GetError().GetCode(), r.GetError().GetMessage()
	if code == "" {
		code = failure.Internal
	}
	return code, message
}
