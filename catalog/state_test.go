package catalog

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/policy"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func TestStates(t *testing.T) {
	want := []State{StateQueued, StateProbing, StateTranscoding, StatePackaging, StateReady, StateFailed, StateCanceled}
	if got := States(); !slices.Equal(got, want) {
		t.Fatalf("States() = %v", got)
	}
	States()[0] = "mutated"
	if States()[0] != StateQueued {
		t.Fatal("States returns the table itself")
	}
	for _, st := range want {
		if got, ok := ParseState(string(st)); !ok || got != st {
			t.Errorf("ParseState(%q) = %q, %v", st, got, ok)
		}
		if terminal := st == StateReady || st == StateFailed || st == StateCanceled; st.Terminal() != terminal {
			t.Errorf("%s.Terminal() = %v", st, st.Terminal())
		}
	}
	if _, ok := ParseState("done"); ok {
		t.Error("ParseState accepted an unknown state")
	}
}

func TestAdvances(t *testing.T) {
	tests := []struct {
		cur, next State
		want      bool
	}{
		{StateQueued, StateProbing, true},
		{StateQueued, StateReady, true}, // skipping states is fine
		{StateTranscoding, StateProbing, false},
		{StateTranscoding, StateTranscoding, false},
		{StateProbing, StateFailed, true},
		{StateProbing, StateCanceled, true},
		{StatePackaging, StateQueued, false},
		{StateReady, StateFailed, false},
		{StateFailed, StateReady, false},
		{StateCanceled, StateQueued, false},
		{StateFailed, StateCanceled, false},
	}
	for _, tt := range tests {
		if got := advances(tt.cur, tt.next); got != tt.want {
			t.Errorf("advances(%s, %s) = %v, want %v", tt.cur, tt.next, got, tt.want)
		}
	}
}

func TestDecide(t *testing.T) {
	at := func(st State, attempt int32, progress float64) Current {
		return Current{Exists: true, State: st, Attempt: attempt, Progress: progress}
	}
	fact := func(st State, attempt int32, progress float64) *Fact {
		return &Fact{State: st, Attempt: attempt, Progress: progress}
	}
	partial := func(attempt int32) *Fact {
		return &Fact{State: StateReady, Attempt: attempt, Progress: 1, Partial: true}
	}
	playable := func(attempt int32) *Fact {
		return &Fact{State: StateTranscoding, Attempt: attempt, Progress: 0.2, Playable: true}
	}
	download := func(attempt int32) *Fact {
		return &Fact{State: StateReady, Attempt: attempt, Progress: 1, Partial: true, Outputs: &kilnv1.AssetOutputs{Partial: true, Mp4Key: "k"}}
	}
	chunked := func(c Current, done, total int32) Current {
		c.ChunksDone, c.ChunksTotal = done, total
		return c
	}
	chunks := func(f *Fact, done, total int32) *Fact {
		f.ChunksDone, f.ChunksTotal = done, total
		return f
	}
	deleted := at(StateReady, 1, 1)
	deleted.Deleted = true
	tests := []struct {
		name string
		cur  Current
		f    *Fact
		want Action
	}{
		{"first event creates", Current{}, fact(StateProbing, 1, 0), ActionCreate},
		{"first READY creates", Current{}, fact(StateReady, 1, 1), ActionCreate},
		{"forward", at(StateQueued, 1, 0), fact(StateProbing, 1, 0), ActionAdvance},
		{"failure", at(StateTranscoding, 1, 0.5), fact(StateFailed, 1, 0), ActionAdvance},
		{"cancel", at(StateQueued, 1, 0), fact(StateCanceled, 1, 0), ActionAdvance},
		{"progress rises", at(StateTranscoding, 1, 0.2), fact(StateTranscoding, 1, 0.5), ActionProgress},
		{"progress falls", at(StateTranscoding, 1, 0.5), fact(StateTranscoding, 1, 0.2), ActionBackfill},
		{"repeat", at(StateTranscoding, 1, 0.5), fact(StateTranscoding, 1, 0.5), ActionBackfill},
		{"chunks rise", chunked(at(StateTranscoding, 1, 0.5), 2, 8), chunks(fact(StateTranscoding, 1, 0.5), 3, 8), ActionProgress},
		{"chunks rise, progress falls", chunked(at(StateTranscoding, 1, 0.5), 2, 8), chunks(fact(StateTranscoding, 1, 0.4), 3, 8), ActionBackfill},
		{"progress rises, chunks fall", chunked(at(StateTranscoding, 1, 0.5), 4, 8), chunks(fact(StateTranscoding, 1, 0.6), 3, 8), ActionProgress},
		{"chunks fall", chunked(at(StateTranscoding, 1, 0.5), 4, 8), chunks(fact(StateTranscoding, 1, 0.5), 3, 8), ActionBackfill},
		{"chunks repeat", chunked(at(StateTranscoding, 1, 0.5), 4, 8), chunks(fact(StateTranscoding, 1, 0.5), 4, 8), ActionBackfill},
		{"chunks after packaging", chunked(at(StatePackaging, 1, 0), 7, 8), chunks(fact(StateTranscoding, 1, 0.9), 8, 8), ActionBackfill},
		{"chunks after ready", chunked(at(StateReady, 1, 1), 7, 8), chunks(fact(StateReady, 1, 1), 8, 8), ActionBackfill},
		{"stale", at(StateTranscoding, 1, 0.5), fact(StateQueued, 1, 0), ActionBackfill},
		{"after ready", at(StateReady, 1, 1), fact(StateFailed, 1, 0), ActionBackfill},
		{"after failed", at(StateFailed, 1, 0), fact(StateReady, 1, 1), ActionBackfill},
		{"repeated READY", at(StateReady, 1, 1), fact(StateReady, 1, 1), ActionBackfill},
		{"newer attempt", at(StateFailed, 1, 0), fact(StateQueued, 2, 0), ActionNewAttempt},
		{"newer attempt of a running job", at(StateTranscoding, 1, 0.5), fact(StateProbing, 2, 0), ActionNewAttempt},
		{"older attempt", at(StateProbing, 2, 0), fact(StateFailed, 1, 0), ActionIgnore},
		{"deleted", deleted, fact(StateQueued, 3, 0), ActionIgnore},
		{"partial on ready", at(StateReady, 2, 1), partial(2), ActionPartial},
		{"partial of an unknown job", Current{}, partial(1), ActionIgnore},
		{"partial before ready", at(StatePackaging, 1, 0), partial(1), ActionIgnore},
		{"partial of an older attempt", at(StateReady, 2, 1), partial(1), ActionIgnore},
		{"partial of a newer attempt", at(StateReady, 1, 1), partial(2), ActionIgnore},
		{"partial of a deleted job", deleted, partial(1), ActionIgnore},
		{"playable first", Current{}, playable(1), ActionCreate},
		{"playable advances", at(StateProbing, 1, 0), playable(1), ActionAdvance},
		{"playable while transcoding", at(StateTranscoding, 1, 0.5), playable(1), ActionPlayable},
		{"playable while packaging", at(StatePackaging, 1, 0), playable(1), ActionPlayable},
		{"playable after ready", at(StateReady, 1, 1), playable(1), ActionBackfill},
		{"playable after failed", at(StateFailed, 1, 0), playable(1), ActionBackfill},
		{"playable of a newer attempt", at(StateFailed, 1, 0), playable(2), ActionNewAttempt},
		{"playable of an older attempt", at(StateTranscoding, 2, 0), playable(1), ActionIgnore},
		{"playable of a deleted job", deleted, playable(3), ActionIgnore},
		{"download on ready", at(StateReady, 1, 1), download(1), ActionPartial},
		{"download before ready", at(StatePackaging, 1, 0), download(1), ActionPartial},
		{"download after failed", at(StateFailed, 1, 0), download(1), ActionIgnore},
		{"download of another attempt", at(StateReady, 2, 1), download(1), ActionIgnore},
		{"download of an unknown job", Current{}, download(1), ActionIgnore},
	}
	for _, tt := range tests {
		if got := Decide(tt.cur, tt.f); got != tt.want {
			t.Errorf("%s: Decide = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestWritesAsset(t *testing.T) {
	ready, probing := &Fact{State: StateReady}, &Fact{State: StateProbing}
	for _, a := range []Action{ActionCreate, ActionNewAttempt, ActionAdvance} {
		if !a.WritesAsset(ready) || a.WritesAsset(probing) {
			t.Errorf("%v.WritesAsset: ready %v, probing %v", a, a.WritesAsset(ready), a.WritesAsset(probing))
		}
	}
	for _, a := range []Action{ActionProgress, ActionBackfill, ActionIgnore, ActionPartial, ActionPlayable} {
		if a.WritesAsset(ready) {
			t.Errorf("%v writes the asset", a)
		}
	}
	playable := &Fact{State: StateTranscoding, Playable: true}
	for _, a := range []Action{ActionCreate, ActionNewAttempt, ActionAdvance, ActionPlayable} {
		if !a.WritesAsset(playable) {
			t.Errorf("%v does not write a playable event's asset", a)
		}
	}
	for _, a := range []Action{ActionProgress, ActionBackfill, ActionIgnore} {
		if a.WritesAsset(playable) {
			t.Errorf("%v writes a playable event's asset", a)
		}
	}
	if ActionPartial.String() != "partial" || ActionPlayable.String() != "playable" || Action(0).String() != "unknown" {
		t.Errorf("names: %q %q", ActionPartial, Action(0))
	}
}

func TestFactOf(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	jobID, assetID := testJob("fact")

	f, err := FactOf(event(jobID, queued, 0), now)
	if err != nil {
		t.Fatal(err)
	}
	if f.JobID != jobID || f.AssetID != assetID || f.State != StateQueued || f.Attempt != 1 || f.Policy != policy.Public ||
		!f.At.Equal(t0.Add(time.Minute)) || f.Preset != "default" || f.Source.Bucket != "sources" || f.Media != nil || f.Outputs != nil {
		t.Errorf("queued fact = %+v", f)
	}

	ev := event(jobID, queued, 0)
	ev.PlaybackPolicy, ev.Time, ev.Attempt = policy.Signed, nil, 3
	if f, _ := FactOf(ev, now); f.Policy != policy.Signed || !f.At.Equal(now) || f.Attempt != 3 {
		t.Errorf("signed fact without time = %+v", f)
	}
	ev = event(jobID, probing, math.NaN())
	ev.PlaybackPolicy = policy.Public // only QUEUED carries it
	if f, _ := FactOf(ev, now); f.Policy != "" || f.Progress != 0 || f.Media == nil || f.Plan == nil {
		t.Errorf("probing fact = %+v", f)
	}
	if f, _ := FactOf(event(jobID, transcoding, -1), now); f.Progress != 0 {
		t.Errorf("negative progress = %v", f.Progress)
	}
	if f, _ := FactOf(event(jobID, transcoding, 3), now); f.Progress != 1 {
		t.Errorf("progress above 1 = %v", f.Progress)
	}

	f, err = FactOf(event(jobID, ready, 0.2), now)
	if err != nil || f.Progress != 1 || f.Partial || f.Outputs == nil || f.Duration() != 12.48 {
		t.Errorf("ready fact = %+v, %v", f, err)
	}
	ev = event(jobID, ready, 0)
	ev.Outputs.DurationSeconds, ev.Media = 0, testMedia()
	if f, _ := FactOf(ev, now); f.Duration() != 12.5 {
		t.Errorf("duration from media = %v", f.Duration())
	}
	// A header that lies: the duration the transcode decoded wins.
	ev.Media.DecodedDurationSeconds = 40.2
	if f, _ := FactOf(ev, now); f.Duration() != 40.2 {
		t.Errorf("duration from decoded media = %v, want 40.2", f.Duration())
	}

	f, _ = FactOf(&kilnv1.JobEvent{JobId: jobID, State: failed}, now)
	if f.ErrorCode != failure.Internal || f.ErrorMessage != "" {
		t.Errorf("failed without error = %q %q", f.ErrorCode, f.ErrorMessage)
	}
	f, _ = FactOf(&kilnv1.JobEvent{JobId: jobID, State: kilnv1.JobState_JOB_STATE_CANCELED}, now)
	if f.ErrorCode != failure.Canceled || f.ErrorMessage != failure.MessageCanceled {
		t.Errorf("canceled without error = %q %q", f.ErrorCode, f.ErrorMessage)
	}
	f, _ = FactOf(&kilnv1.JobEvent{JobId: jobID, State: kilnv1.JobState_JOB_STATE_CANCELED,
		Error: &kilnv1.JobError{Code: failure.Canceled, Message: failure.MessageReplaced}, Time: timestamppb.New(now)}, now)
	if f.ErrorMessage != failure.MessageReplaced {
		t.Errorf("canceled message = %q", f.ErrorMessage)
	}

	for name, ev := range map[string]*kilnv1.JobEvent{
		"nil":           nil,
		"bad job id":    {JobId: "x", State: queued},
		"unknown state": {JobId: jobID, State: kilnv1.JobState(99)},
		"no outputs":    {JobId: jobID, State: ready},
		"empty partial": {JobId: jobID, State: ready, Outputs: &kilnv1.AssetOutputs{Partial: true}},
		"no bandwidth":  func() *kilnv1.JobEvent { e := event(jobID, ready, 0); e.Outputs.Renditions[0].Bandwidth = 0; return e }(),
		"no bucket":     func() *kilnv1.JobEvent { e := event(jobID, ready, 0); e.Outputs.Bucket = ""; return e }(),
		"bad codecs":    func() *kilnv1.JobEvent { e := event(jobID, ready, 0); e.Outputs.Renditions[0].Codecs = ""; return e }(),
		"long rendition": func() *kilnv1.JobEvent {
			e := event(jobID, ready, 0)
			e.Outputs.Renditions[0].Name = string(make([]byte, 65))
			return e
		}(),
	} {
		if _, err := FactOf(ev, now); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: %v, want ErrInvalidEvent", name, err)
		}
	}
}

func TestFailureOf(t *testing.T) {
	if c, m := FailureOf(&kilnv1.FailedRendition{Name: "a"}); c != failure.Internal || m != "" {
		t.Errorf("no error: %q %q", c, m)
	}
	if c, m := FailureOf(&kilnv1.FailedRendition{Error: &kilnv1.JobError{Code: failure.PackageFailed, Message: "x"}}); c != failure.PackageFailed || m != "x" {
		t.Errorf("error: %q %q", c, m)
	}
}
