package catalog

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/policy"
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
	Source Source
	// ErrorCode and ErrorMessage are set for FAILED (default code
	// failure.Internal) and CANCELED (default failure.Canceled).
	ErrorCode, ErrorMessage string
	// Media and Plan are nil when the event carries none.
	Media *kilnv1.MediaInfo
	Plan  *kilnv1.Plan
	// Outputs is set for READY, with valid renditions (see FactOf).
	Outputs *kilnv1.AssetOutputs
	// Partial: a READY updating only the renditions it names.
	Partial bool
}

// Duration is a READY's asset duration: the outputs', else the duration
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
	f.Preset = ev.GetPreset()
	if st == StateQueued {
		f.Policy = policy.OfEvent(ev.GetPlaybackPolicy())
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
	if st == StateReady {
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
// A partial READY (a rendition retry) needs only the renditions it names,
// ready or failed.
func validOutputs(o *kilnv1.AssetOutputs) error {
	switch {
	case o.GetPartial():
		if len(o.GetRenditions())+len(o.GetFailedRenditions()) == 0 {
			return errors.New("partial ready without renditions")
		}
	case o == nil || o.GetBucket() == "" || len(o.GetRenditions()) == 0:
		return errors.New("ready without outputs bucket and renditions")
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

// FailureOf is a failed rendition's error code (failure.Internal when none)
// and message.
func FailureOf(r *kilnv1.FailedRendition) (code, message string) {
	code, message = r.GetError().GetCode(), r.GetError().GetMessage()
	if code == "" {
		code = failure.Internal
	}
	return code, message
}
