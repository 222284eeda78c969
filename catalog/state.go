package catalog

import kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"

// State is a job's position in the pipeline, as stored and as served by the
// API.
type State string

// Job states. Queued < Probing < Transcoding < Packaging < Ready; Failed and
// Canceled may follow any non-terminal state. Ready, Failed and Canceled are
// terminal (within an attempt: a retry starts a new attempt from Queued).
const (
	StateQueued      State = "queued"
	StateProbing     State = "probing"
	StateTranscoding State = "transcoding"
	StatePackaging   State = "packaging"
	StateReady       State = "ready"
	StateFailed      State = "failed"
	StateCanceled    State = "canceled"
)

// states lists every state in rank order with its proto value (an immutable
// table).
var states = [...]struct {
	state State
	proto kilnv1.JobState
}{
	{StateQueued, kilnv1.JobState_JOB_STATE_QUEUED},
	{StateProbing, kilnv1.JobState_JOB_STATE_PROBING},
	{StateTranscoding, kilnv1.JobState_JOB_STATE_TRANSCODING},
	{StatePackaging, kilnv1.JobState_JOB_STATE_PACKAGING},
	{StateReady, kilnv1.JobState_JOB_STATE_READY},
	{StateFailed, kilnv1.JobState_JOB_STATE_FAILED},
	{StateCanceled, kilnv1.JobState_JOB_STATE_CANCELED},
}

// States returns every state in rank order.
func States() []State {
	out := make([]State, len(states))
	for i, st := range states {
		out[i] = st.state
	}
	return out
}

// Terminal reports whether no later event of the attempt can change the
// state.
func (s State) Terminal() bool { return s == StateReady || s == StateFailed || s == StateCanceled }

// ParseState returns the state called name.
func ParseState(name string) (State, bool) {
	for _, st := range states {
		if string(st.state) == name {
			return st.state, true
		}
	}
	return "", false
}

// rank orders the linear part of the pipeline; 0 for unknown states.
func (s State) rank() int {
	for i, st := range states {
		if st.state == s {
			return i + 1
		}
	}
	return 0
}

// advances reports whether moving from cur to next is a forward transition.
func advances(cur, next State) bool {
	switch {
	case cur.Terminal():
		return false
	case next == StateFailed || next == StateCanceled:
		return true
	default:
		return next.rank() > cur.rank()
	}
}

func stateOf(s kilnv1.JobState) (State, bool) {
	for _, st := range states {
		if st.proto == s {
			return st.state, true
		}
	}
	return "", false
}

// Current is what a store knows of a job when an event comes: all Decide
// needs.
type Current struct {
	// Exists is false when no event of the job was recorded yet.
	Exists   bool
	State    State
	Progress float64
	Attempt  int32
	// ChunksDone and ChunksTotal are the job's chunk counts (Job.Chunks).
	ChunksDone, ChunksTotal int32
	// Deleted: the job (and its asset) were deleted.
	Deleted bool
}

// Action is what applying an event does to a job (see Decide).
type Action int

// Actions. The first five change the job (Apply reports changed=true), the
// next two do not; a partial READY changes it when it changes a rendition or
// the download, a playable event the first time it makes the job playable.
const (
	// ActionCreate records a job from its first event, whatever it carries;
	// a READY also writes the asset, a playable event too (and the job's
	// playable time).
	ActionCreate Action = iota + 1
	// ActionNewAttempt starts the job over from the event of a newer
	// attempt (a retry): state, progress, chunk counts, attempt, error and
	// per-state times are reset to the event's, the playable time cleared,
	// the asset, renditions and rendition failures removed (and written
	// again by a READY or a playable event). Source, preset and
	// policy are only filled in; media and plan overwritten when carried.
	ActionNewAttempt
	// ActionAdvance moves the job forward (or fails/cancels it): state,
	// progress and error as the event's, the state's time recorded unless it
	// was already, media and plan overwritten when carried; a READY writes
	// the asset, replacing its renditions and rendition failures (and
	// keeping a download recorded before it when it names none); a playable
	// event writes it as well and records the job's playable time.
	ActionAdvance
	// ActionProgress raises the progress, or at the same progress the
	// chunk counts, within the current state (media and plan overwritten
	// when carried); chunk counts are never lowered. An event of a lower
	// progress changes nothing, whatever its chunks: every change reports
	// a progress no lower than the last (job.progress webhooks).
	ActionProgress
	// ActionBackfill ignores a stale, repeated or post-terminal event of the
	// current attempt except for the facts the job lacks: preset, source,
	// policy, media, plan (each only when blank). It reports no change.
	ActionBackfill
	// ActionIgnore writes nothing: the job is deleted, the event is of an
	// older attempt, or a partial READY does not apply.
	ActionIgnore
	// ActionPartial applies a partial READY (a rendition retry) to a ready
	// job of the same attempt: each ready rendition it names is upserted and
	// its failure removed; each failed one is upserted into the failures
	// (keeping its retry count) unless that rendition is ready already — a
	// late failure never hides a working rendition. It reports a change
	// only when a rendition or failure actually changed, so a repeat is a
	// no-op. A partial READY naming the MP4 download (Fact.DownloadOnly)
	// sets the asset's MP4 key; it also applies to a job of the same
	// attempt that is not ready yet but playable (its READY may be
	// redelivered after it), and keeps the key a READY without one finds.
	ActionPartial
	// ActionPlayable applies a playable event of the current attempt to a
	// job that is not terminal and already at or past its state
	// (transcoding, packaging): the first one records the job's playable
	// time and writes the asset's outputs as ActionAdvance does (changed);
	// a repeat changes nothing.
	ActionPlayable
)

var actionNames = [...]string{"", "create", "new attempt", "advance", "progress", "backfill", "ignore", "partial", "playable"}

func (a Action) String() string {
	if a > 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}

// Decide is the catalog's state machine: what applying the event f to a job
// in state cur does. Events are at-least-once and unordered: the first event
// seen for a job creates it; an event ranking below the current state, any
// event after a terminal state, and repeats only backfill; every event of an
// attempt older than the job's, or of a deleted job, is ignored; an event of
// a newer attempt starts the job over — the only way out of a terminal
// state. A partial READY applies only to a ready job of the same attempt
// (the download also to a running one). A playable event (Fact.Playable)
// makes a running job of its attempt playable, once; after a terminal state
// it only backfills: READY's outputs replace a playable event's, never the
// reverse.
func Decide(cur Current, f *Fact) Action {
	if f.Partial {
		switch {
		case !cur.Exists || cur.Deleted || cur.Attempt != f.Attempt:
			return ActionIgnore
		case cur.State == StateReady, f.DownloadOnly() && !cur.State.Terminal():
			return ActionPartial
		default:
			return ActionIgnore // only a ready job's current attempt takes rendition retries
		}
	}
	switch {
	case !cur.Exists:
		return ActionCreate
	case cur.Deleted || f.Attempt < cur.Attempt:
		return ActionIgnore // a deleted job never changes; an older attempt is over
	case f.Attempt > cur.Attempt:
		return ActionNewAttempt
	case advances(cur.State, f.State):
		return ActionAdvance
	case f.Playable && !cur.State.Terminal():
		return ActionPlayable
	case cur.State == f.State && !cur.State.Terminal() && (f.Progress > cur.Progress || f.Progress == cur.Progress && f.raisesChunks(cur)):
		return ActionProgress
	default: // stale, repeated, or after a terminal state
		return ActionBackfill
	}
}

// raisesChunks reports whether f carries more chunks done, or a larger
// total, than the job records.
func (f *Fact) raisesChunks(cur Current) bool {
	return f.ChunksDone > cur.ChunksDone || f.ChunksTotal > cur.ChunksTotal
}

// WritesAsset reports whether an action taken on f records the asset's
// outputs (a READY that creates, advances or restarts the job; a playable
// event that does, or that makes a running job playable).
func (a Action) WritesAsset(f *Fact) bool {
	switch {
	case f.State == StateReady || f.Playable:
		return a == ActionCreate || a == ActionNewAttempt || a == ActionAdvance || (f.Playable && a == ActionPlayable)
	default:
		return false
	}
}
