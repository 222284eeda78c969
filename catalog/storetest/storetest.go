// Package storetest is the contract of a catalog.Store: one suite that every
// backend (SQLite now, PostgreSQL next) runs against itself, so they all
// behave alike. A backend's test calls Run with a function opening a fresh,
// empty store; backend-specific behaviour (persistence, migrations of old
// databases, hooks) is tested beside it.
package storetest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/quota"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/tenant"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Opener returns a new, empty store; it closes it when t ends.
type Opener func(t *testing.T) catalog.Store

// Run runs the contract suite against the stores open returns, one per
// subtest.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"ApplyTransitions", testApplyTransitions},
		{"ApplyReadyWritesAsset", testApplyReadyWritesAsset},
		{"ApplyRejectsInvalidEvents", testApplyRejectsInvalidEvents},
		{"NotFound", testNotFound},
		{"PlaybackPolicy", testPlaybackPolicy},
		{"Tenants", testTenants},
		{"Priority", testPriority},
		{"CancelAndAttempts", testCancelAndAttempts},
		{"DeleteJob", testDeleteJob},
		{"ListJobs", testListJobs},
		{"ListJobsByName", testListJobsByName},
		{"PartialReadyIgnored", testPartialReadyIgnored},
		{"PartialReadyValidation", testPartialReadyValidation},
		{"PartialReadyRenditions", testPartialReadyRenditions},
		{"Playable", testPlayable},
		{"PlayableAttempts", testPlayableAttempts},
		{"Chunks", testChunks},
		{"Download", testDownload},
		{"EncodedKeys", testEncodedKeys},
		{"RetryRendition", testRetryRendition},
		{"HasJob", testHasJob},
		{"StaleJobs", testStaleJobs},
		{"CountJobs", testCountJobs},
		{"Usage", testUsage},
		{"Lease", testLease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

// JobsEqual compares what a store records of a job.
func JobsEqual(a, b *catalog.Job) bool {
	if a.ID != b.ID || a.AssetID != b.AssetID || a.State != b.State || a.Progress != b.Progress || a.PlaybackPolicy != b.PlaybackPolicy ||
		a.Priority != b.Priority || a.Source != b.Source || a.Preset != b.Preset || a.Attempt != b.Attempt || !a.CreatedAt.Equal(b.CreatedAt) ||
		!a.UpdatedAt.Equal(b.UpdatedAt) || !a.PlayableAt.Equal(b.PlayableAt) || a.Chunks != b.Chunks || !proto.Equal(a.Media, b.Media) || !proto.Equal(a.Plan, b.Plan) ||
		len(a.Timestamps) != len(b.Timestamps) || !slices.Equal(a.FailedRenditions, b.FailedRenditions) {
		return false
	}
	for k, v := range a.Timestamps {
		if !v.Equal(b.Timestamps[k]) {
			return false
		}
	}
	return true
}

func mustApply(t *testing.T, s catalog.Store, evs ...*kilnv1.JobEvent) {
	t.Helper()
	for _, ev := range evs {
		if _, err := s.Apply(t.Context(), ev); err != nil {
			t.Fatalf("apply %v: %v", ev.GetState(), err)
		}
	}
}

// applier applies an event of an attempt and checks changed.
func applier(t *testing.T, s catalog.Store) func(ev *kilnv1.JobEvent, attempt int32, want bool) {
	return func(ev *kilnv1.JobEvent, attempt int32, want bool) {
		t.Helper()
		ev.Attempt = attempt
		changed, err := s.Apply(t.Context(), ev)
		if err != nil || changed != want {
			t.Fatalf("apply %v (partial %v) attempt %d: changed %v (%v), want %v", ev.State,
				ev.GetOutputs().GetPartial(), attempt, changed, err, want)
		}
	}
}

func testApplyTransitions(t *testing.T, open Opener) {
	jobID, _ := eventtest.Job("a")
	type step struct {
		ev       *kilnv1.JobEvent
		changed  bool
		state    catalog.State
		progress float64
	}
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, j *catalog.Job)
	}{
		{
			name: "happy path",
			steps: []step{
				{eventtest.Event(jobID, queued, 0), true, catalog.StateQueued, 0},
				{eventtest.Event(jobID, probing, 0), true, catalog.StateProbing, 0},
				{eventtest.Event(jobID, transcoding, 0.1), true, catalog.StateTranscoding, 0.1},
				{eventtest.Event(jobID, packaging, 0), true, catalog.StatePackaging, 0},
				{eventtest.Event(jobID, ready, 0), true, catalog.StateReady, 1},
			},
			check: func(t *testing.T, j *catalog.Job) {
				for _, st := range []catalog.State{catalog.StateQueued, catalog.StateProbing, catalog.StateTranscoding, catalog.StatePackaging, catalog.StateReady} {
					if j.Timestamps[st].IsZero() {
						t.Errorf("no %s timestamp", st)
					}
				}
				if want := eventtest.T0.Add(5 * time.Minute); !j.Timestamps[catalog.StateReady].Equal(want) {
					t.Errorf("ready at %v, want event time %v", j.Timestamps[catalog.StateReady], want)
				}
				if !proto.Equal(j.Media, eventtest.Media()) || !proto.Equal(j.Plan, eventtest.Plan()) {
					t.Errorf("media/plan = %v / %v", j.Media, j.Plan)
				}
				if j.Source.Key != eventtest.Source(jobID).Key || j.Source.Size != 1234 || j.Preset != "default" {
					t.Errorf("source = %+v, preset %q", j.Source, j.Preset)
				}
				if j.Attempt != 1 || j.CreatedAt.IsZero() || j.UpdatedAt.Before(j.CreatedAt) {
					t.Errorf("attempt %d, created %v, updated %v", j.Attempt, j.CreatedAt, j.UpdatedAt)
				}
			},
		},
		{
			name: "stale event ignored",
			steps: []step{
				{eventtest.Event(jobID, queued, 0), true, catalog.StateQueued, 0},
				{eventtest.Event(jobID, transcoding, 0.2), true, catalog.StateTranscoding, 0.2},
				{eventtest.Event(jobID, probing, 0), false, catalog.StateTranscoding, 0.2},
				{eventtest.Event(jobID, queued, 0), false, catalog.StateTranscoding, 0.2},
			},
		},
		{
			name: "duplicate ready is a no-op",
			steps: []step{
				{eventtest.Event(jobID, ready, 0), true, catalog.StateReady, 1},
				{eventtest.Event(jobID, ready, 0), false, catalog.StateReady, 1},
				{eventtest.Event(jobID, packaging, 0), false, catalog.StateReady, 1},
				{eventtest.Event(jobID, failed, 0), false, catalog.StateReady, 1},
			},
		},
		{
			name: "failed after transcoding, then everything ignored",
			steps: []step{
				{eventtest.Event(jobID, queued, 0), true, catalog.StateQueued, 0},
				{eventtest.Event(jobID, transcoding, 0.4), true, catalog.StateTranscoding, 0.4},
				{eventtest.Event(jobID, failed, 0), true, catalog.StateFailed, 0},
				{eventtest.Event(jobID, packaging, 0), false, catalog.StateFailed, 0},
				{eventtest.Event(jobID, ready, 0), false, catalog.StateFailed, 0},
				{eventtest.Event(jobID, failed, 0), false, catalog.StateFailed, 0},
			},
			check: func(t *testing.T, j *catalog.Job) {
				if j.ErrorCode != failure.InvalidMedia || j.ErrorMessage == "" {
					t.Errorf("error = %q %q", j.ErrorCode, j.ErrorMessage)
				}
				if _, ok := j.Timestamps[catalog.StateReady]; ok {
					t.Error("ready timestamp on a failed job")
				}
			},
		},
		{
			name: "progress within a state only rises",
			steps: []step{
				{eventtest.Event(jobID, transcoding, 0.1), true, catalog.StateTranscoding, 0.1},
				{eventtest.Event(jobID, transcoding, 0.5), true, catalog.StateTranscoding, 0.5},
				{eventtest.Event(jobID, transcoding, 0.3), false, catalog.StateTranscoding, 0.5},
				{eventtest.Event(jobID, transcoding, 0.5), false, catalog.StateTranscoding, 0.5},
				{eventtest.Event(jobID, transcoding, 7), true, catalog.StateTranscoding, 1}, // clamped
			},
		},
		{
			name: "event before QUEUED creates the row; late QUEUED fills the source",
			steps: []step{
				{eventtest.Event(jobID, probing, 0), true, catalog.StateProbing, 0},
				{eventtest.Event(jobID, queued, 0), false, catalog.StateProbing, 0},
			},
			check: func(t *testing.T, j *catalog.Job) {
				if j.Source.Bucket != "sources" || j.Preset != "default" || j.Media == nil {
					t.Errorf("source = %+v, preset %q, media %v", j.Source, j.Preset, j.Media)
				}
				if _, ok := j.Timestamps[catalog.StateQueued]; ok {
					t.Error("queued timestamp recorded from a stale event")
				}
			},
		},
		{
			name: "a failure without a code is internal",
			steps: []step{
				{&kilnv1.JobEvent{JobId: jobID, State: failed}, true, catalog.StateFailed, 0},
			},
			check: func(t *testing.T, j *catalog.Job) {
				if j.ErrorCode != failure.Internal {
					t.Errorf("error code %q, want %q", j.ErrorCode, failure.Internal)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			for i, st := range tt.steps {
				changed, err := s.Apply(t.Context(), st.ev)
				if err != nil {
					t.Fatalf("step %d (%v): %v", i, st.ev.GetState(), err)
				}
				if changed != st.changed {
					t.Errorf("step %d (%v): changed = %v, want %v", i, st.ev.GetState(), changed, st.changed)
				}
				j, err := s.Job(t.Context(), jobID)
				if err != nil {
					t.Fatalf("step %d: Job: %v", i, err)
				}
				if j.State != st.state || j.Progress != st.progress {
					t.Errorf("step %d (%v): state %s progress %v, want %s %v", i, st.ev.GetState(), j.State, j.Progress, st.state, st.progress)
				}
			}
			if tt.check != nil {
				j, err := s.Job(t.Context(), jobID)
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, j)
			}
		})
	}
}

func testApplyReadyWritesAsset(t *testing.T, open Opener) {
	s := open(t)
	jobID, assetID := eventtest.Job("a")
	if a, err := s.Asset(t.Context(), assetID); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("Asset before any event = %v, %v; want ErrNotFound", a, err)
	}
	mustApply(t, s, eventtest.Event(jobID, queued, 0), eventtest.Event(jobID, probing, 0))
	a, err := s.Asset(t.Context(), assetID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Ready() || a.State != catalog.StateProbing || a.JobID != jobID || len(a.Renditions) != 0 {
		t.Fatalf("asset of a probing job = %+v", a)
	}
	if b, err := s.OutputsBucket(t.Context(), assetID); err != nil || b != "" {
		t.Errorf("outputs bucket before ready = %q, %v", b, err)
	}
	mustApply(t, s, eventtest.Event(jobID, ready, 0))
	if a, err = s.Asset(t.Context(), assetID); err != nil {
		t.Fatal(err)
	}
	if !a.Ready() || a.Bucket != "outputs" || a.MP4Key == "" || a.PosterKey == "" || a.DurationSeconds != 12.48 {
		t.Fatalf("ready asset = %+v", a)
	}
	if want := eventtest.T0.Add(5 * time.Minute); !a.ReadyAt.Equal(want) || a.Prefix != "assets/"+assetID+"/" {
		t.Errorf("ready at %v, prefix %q", a.ReadyAt, a.Prefix)
	}
	if len(a.Renditions) != 2 || a.Renditions[0].Name != "360p" || a.Renditions[1].Name != "720p" {
		t.Fatalf("renditions not ordered by bandwidth: %+v", a.Renditions)
	}
	if r, ok := a.Rendition("720p"); !ok || r.Codecs != "avc1.64001f,mp4a.40.2" || r.Width != 1280 || r.AverageBandwidth != 3_100_000 {
		t.Fatalf("720p = %+v, %v", r, ok)
	}
	if b, err := s.OutputsBucket(t.Context(), assetID); err != nil || b != "outputs" {
		t.Errorf("outputs bucket = %q, %v", b, err)
	}

	// Without an outputs duration, the media's.
	other, otherAsset := eventtest.Job("b")
	ev := eventtest.Event(other, ready, 0)
	ev.Media, ev.Outputs.DurationSeconds = eventtest.Media(), 0
	ev.Outputs.Thumbnails = &kilnv1.Thumbnails{PosterKey: "p.jpg", Keys: []string{"t1.jpg"}, IntervalSeconds: 2}
	mustApply(t, s, ev)
	if a, err := s.Asset(t.Context(), otherAsset); err != nil || a.DurationSeconds != 12.5 ||
		!proto.Equal(a.Thumbnails, ev.Outputs.Thumbnails) {
		t.Errorf("asset = %+v, %v", a, err)
	}
}

func testApplyRejectsInvalidEvents(t *testing.T, open Opener) {
	jobID, _ := eventtest.Job("a")
	otherJob, _ := eventtest.Job("b")
	badOutputs := func(mut func(o *kilnv1.AssetOutputs)) *kilnv1.JobEvent {
		ev := eventtest.Event(jobID, ready, 0)
		mut(ev.Outputs)
		return ev
	}
	tests := []struct {
		name string
		ev   *kilnv1.JobEvent
	}{
		{"nil", nil},
		{"malformed job id", &kilnv1.JobEvent{JobId: "job_../x", State: queued}},
		{"foreign asset id", &kilnv1.JobEvent{JobId: jobID, AssetId: jobid.AssetOf(otherJob), State: queued}},
		{"unspecified state", &kilnv1.JobEvent{JobId: jobID}},
		{"ready without outputs", &kilnv1.JobEvent{JobId: jobID, State: ready}},
		{"traversal in rendition name", badOutputs(func(o *kilnv1.AssetOutputs) { o.Renditions[0].Name = "../x" })},
		{"quote in codecs", badOutputs(func(o *kilnv1.AssetOutputs) { o.Renditions[0].Codecs = `avc1",URI="x` })},
		{"newline in codecs", badOutputs(func(o *kilnv1.AssetOutputs) { o.Renditions[0].Codecs = "avc1\n#EXT-X-ENDLIST" })},
		{"duplicate rendition", badOutputs(func(o *kilnv1.AssetOutputs) { o.Renditions[1].Name = o.Renditions[0].Name })},
		{"no playlist key", badOutputs(func(o *kilnv1.AssetOutputs) { o.Renditions[0].PlaylistKey = "" })},
	}
	s := open(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if changed, err := s.Apply(t.Context(), tt.ev); !errors.Is(err, catalog.ErrInvalidEvent) || changed {
				t.Fatalf("Apply = %v, %v; want ErrInvalidEvent", changed, err)
			}
		})
	}
	if _, err := s.Job(t.Context(), jobID); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("an invalid event left a job behind: %v", err)
	}
}

func testNotFound(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	jobID, assetID := eventtest.Job("missing")
	if _, err := s.Job(ctx, jobID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Job: %v, want ErrNotFound", err)
	}
	if _, err := s.Asset(ctx, assetID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Asset: %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteJob(ctx, jobID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("DeleteJob: %v, want ErrNotFound", err)
	}
	if b, err := s.OutputsBucket(ctx, assetID); err != nil || b != "" {
		t.Errorf("OutputsBucket = %q, %v", b, err)
	}
	_, err := s.RetryRendition(ctx, assetID, "720p")
	if !errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrNoRendition) {
		t.Errorf("RetryRendition: %v, want ErrNotFound", err)
	}
}

// testPriority: the job keeps the priority of its QUEUED event (normal
// without one), filled in by a late QUEUED and never contradicted.
func testPriority(t *testing.T, open Opener) {
	jobID, _ := eventtest.Job("priority")
	queuedWith := func(p string) *kilnv1.JobEvent {
		ev := eventtest.Event(jobID, queued, 0)
		ev.Priority = p
		return ev
	}
	tests := []struct {
		name   string
		events []*kilnv1.JobEvent
		want   string
	}{
		{"high", []*kilnv1.JobEvent{queuedWith("high")}, tasks.PriorityHigh},
		{"low, through to ready", []*kilnv1.JobEvent{queuedWith("low"), eventtest.Event(jobID, ready, 0)}, tasks.PriorityLow},
		{"producer without priorities", []*kilnv1.JobEvent{queuedWith("")}, tasks.PriorityNormal},
		{"unknown value is normal, as ingest decides", []*kilnv1.JobEvent{queuedWith("urgent")}, tasks.PriorityNormal},
		{"not queued yet", []*kilnv1.JobEvent{eventtest.Event(jobID, probing, 0)}, tasks.PriorityNormal},
		{"late QUEUED fills it in", []*kilnv1.JobEvent{eventtest.Event(jobID, probing, 0), queuedWith("high")}, tasks.PriorityHigh},
		{"never contradicted", []*kilnv1.JobEvent{queuedWith("low"), queuedWith("high")}, tasks.PriorityLow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustApply(t, s, tt.events...)
			j, err := s.Job(t.Context(), jobID)
			if err != nil {
				t.Fatal(err)
			}
			if j.Priority != tt.want {
				t.Errorf("priority = %q, want %q", j.Priority, tt.want)
			}
		})
	}
}

func testPlaybackPolicy(t *testing.T, open Opener) {
	jobID, assetID := eventtest.Job("policy")
	queuedWith := func(p string) *kilnv1.JobEvent {
		ev := eventtest.Event(jobID, queued, 0)
		ev.PlaybackPolicy = p
		return ev
	}
	probingWith := func(p string) *kilnv1.JobEvent { // policies on other events are ignored
		ev := eventtest.Event(jobID, probing, 0)
		ev.PlaybackPolicy = p
		return ev
	}
	tests := []struct {
		name   string
		events []*kilnv1.JobEvent
		want   string
	}{
		{"signed", []*kilnv1.JobEvent{queuedWith("signed"), eventtest.Event(jobID, ready, 0)}, policy.Signed},
		{"public", []*kilnv1.JobEvent{queuedWith("public"), eventtest.Event(jobID, ready, 0)}, policy.Public},
		{"producer without policies", []*kilnv1.JobEvent{queuedWith(""), eventtest.Event(jobID, ready, 0)}, policy.Public},
		{"unknown value is public, as ingest decides", []*kilnv1.JobEvent{queuedWith("SIGNED?")}, policy.Public},
		{"not queued yet fails closed", []*kilnv1.JobEvent{eventtest.Event(jobID, probing, 0), eventtest.Event(jobID, ready, 0)}, policy.Signed},
		{"only QUEUED carries it", []*kilnv1.JobEvent{probingWith("public"), eventtest.Event(jobID, ready, 0)}, policy.Signed},
		{"late QUEUED fills it in", []*kilnv1.JobEvent{eventtest.Event(jobID, probing, 0), eventtest.Event(jobID, ready, 0), queuedWith("public")}, policy.Public},
		{"late signed QUEUED", []*kilnv1.JobEvent{eventtest.Event(jobID, transcoding, 0.5), queuedWith("signed")}, policy.Signed},
		{"never contradicted", []*kilnv1.JobEvent{queuedWith("signed"), queuedWith("public"), eventtest.Event(jobID, ready, 0)}, policy.Signed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustApply(t, s, tt.events...)
			j, err := s.Job(t.Context(), jobID)
			if err != nil {
				t.Fatal(err)
			}
			a, err := s.Asset(t.Context(), assetID)
			if err != nil {
				t.Fatal(err)
			}
			if j.PlaybackPolicy != tt.want || a.PlaybackPolicy != tt.want {
				t.Errorf("policy: job %q, asset %q; want %q", j.PlaybackPolicy, a.PlaybackPolicy, tt.want)
			}
		})
	}
}

// testTenants: the QUEUED event names the job's tenant (none: the default
// one); job and asset carry it, it is filled once and never contradicted,
// it is "" until the QUEUED is recorded; ListJobs keeps one tenant's jobs
// when asked, and JobTenant answers for a deleted job too.
func testTenants(t *testing.T, open Opener) {
	const tenA, tenB = "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa", "ten_bbbbbbbbbbbbbbbbbbbbbbbbbb"
	jobID, assetID := eventtest.Job("tenant")
	queuedFor := func(tn string) *kilnv1.JobEvent {
		ev := eventtest.Event(jobID, queued, 0)
		ev.TenantId = tn
		return ev
	}
	probingFor := func(tn string) *kilnv1.JobEvent { // only QUEUED carries it
		ev := eventtest.Event(jobID, probing, 0)
		ev.TenantId = tn
		return ev
	}
	tests := []struct {
		name   string
		events []*kilnv1.JobEvent
		want   string
	}{
		{"named", []*kilnv1.JobEvent{queuedFor(tenA), eventtest.Event(jobID, ready, 0)}, tenA},
		{"producer without tenants: the default", []*kilnv1.JobEvent{queuedFor(""), eventtest.Event(jobID, ready, 0)}, tenant.Default},
		{"not queued yet: nobody's", []*kilnv1.JobEvent{eventtest.Event(jobID, probing, 0), eventtest.Event(jobID, ready, 0)}, ""},
		{"only QUEUED carries it", []*kilnv1.JobEvent{probingFor(tenA), eventtest.Event(jobID, ready, 0)}, ""},
		{"late QUEUED fills it in", []*kilnv1.JobEvent{eventtest.Event(jobID, probing, 0), eventtest.Event(jobID, ready, 0), queuedFor(tenB)}, tenB},
		{"never contradicted", []*kilnv1.JobEvent{queuedFor(tenA), queuedFor(tenB), eventtest.Event(jobID, ready, 0)}, tenA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustApply(t, s, tt.events...)
			j, err := s.Job(t.Context(), jobID)
			if err != nil {
				t.Fatal(err)
			}
			a, err := s.Asset(t.Context(), assetID)
			if err != nil {
				t.Fatal(err)
			}
			owner, err := s.JobTenant(t.Context(), jobID)
			if err != nil || j.TenantID != tt.want || a.TenantID != tt.want || owner != tt.want {
				t.Errorf("tenant: job %q, asset %q, JobTenant %q (%v); want %q", j.TenantID, a.TenantID, owner, err, tt.want)
			}
		})
	}
	t.Run("malformed tenant id is an invalid event", func(t *testing.T) {
		s := open(t)
		if _, err := s.Apply(t.Context(), queuedFor("ten_../../x")); !errors.Is(err, catalog.ErrInvalidEvent) {
			t.Fatalf("Apply = %v, want ErrInvalidEvent", err)
		}
	})
	t.Run("ListJobs and JobTenant", func(t *testing.T) {
		s := open(t)
		owners := map[string]string{}
		for i, tn := range []string{tenA, tenB, tenA, "", tenant.Default} {
			id, _ := eventtest.Job(fmt.Sprintf("tenant-%d", i))
			ev := eventtest.Event(id, queued, 0)
			ev.TenantId = tn
			mustApply(t, s, ev)
			owners[id] = tenant.OfEvent(tn)
		}
		for _, tn := range []string{tenA, tenB, tenant.Default, "ten_cccccccccccccccccccccccccc"} {
			jobs, _, err := s.ListJobs(t.Context(), catalog.JobFilter{Tenant: tn})
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			for _, o := range owners {
				if o == tn {
					want++
				}
			}
			if len(jobs) != want {
				t.Errorf("tenant %s lists %d jobs, want %d", tn, len(jobs), want)
			}
			for _, j := range jobs {
				if j.TenantID != tn || owners[j.ID] != tn {
					t.Errorf("tenant %s lists %s of %q", tn, j.ID, j.TenantID)
				}
			}
		}
		if all, _, err := s.ListJobs(t.Context(), catalog.JobFilter{}); err != nil || len(all) != len(owners) {
			t.Errorf("no tenant filter: %d jobs, %v; want %d", len(all), err, len(owners))
		}
		id, _ := eventtest.Job("tenant-0")
		mustApply(t, s, eventtest.Event(id, ready, 0))
		if _, err := s.DeleteJob(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		if owner, err := s.JobTenant(t.Context(), id); err != nil || owner != tenA {
			t.Errorf("JobTenant of a deleted job: %q, %v; want %s", owner, err, tenA)
		}
		if _, err := s.JobTenant(t.Context(), "job_unknownunknownunknownun"); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("JobTenant of an unknown job: %v, want ErrNotFound", err)
		}
	})
}

func testCancelAndAttempts(t *testing.T, open Opener) {
	store := open(t)
	ctx := t.Context()
	jobID, _ := eventtest.Job("attempts")
	apply := applier(t, store)
	apply(eventtest.Event(jobID, queued, 0), 0, true)
	apply(eventtest.Event(jobID, transcoding, 0.2), 1, true)
	apply(eventtest.Event(jobID, canceled, 0), 1, true)
	apply(eventtest.Event(jobID, packaging, 0), 1, false) // after a terminal state
	apply(eventtest.Event(jobID, failed, 0), 1, false)
	j, err := store.Job(ctx, jobID)
	if err != nil || j.State != catalog.StateCanceled || j.ErrorCode != failure.Canceled || j.ErrorMessage != failure.MessageCanceled ||
		j.Timestamps[catalog.StateCanceled].IsZero() {
		t.Fatalf("canceled job = %+v, %v", j, err)
	}
	apply(eventtest.Event(jobID, queued, 0), 2, true) // the retry
	apply(eventtest.Event(jobID, transcoding, 0.5), 1, false)
	apply(eventtest.Event(jobID, failed, 0), 1, false) // the old attempt's late failure
	apply(eventtest.Event(jobID, probing, 0), 2, true)
	j, _ = store.Job(ctx, jobID)
	if j.State != catalog.StateProbing || j.Attempt != 2 || j.ErrorCode != "" || !j.Timestamps[catalog.StateCanceled].IsZero() || j.Timestamps[catalog.StateQueued].IsZero() {
		t.Fatalf("retried job = %+v", j)
	}
	apply(eventtest.Event(jobID, ready, 0), 2, true)
	if a, err := store.Asset(ctx, jobid.AssetOf(jobID)); err != nil || !a.Ready() {
		t.Fatalf("asset after retry: %+v %v", a, err)
	}
	if _, err := store.DeleteJob(ctx, jobID); err != nil {
		t.Fatal(err)
	}
	apply(eventtest.Event(jobID, queued, 0), 3, false) // a deleted job never changes
	if _, err := store.Job(ctx, jobID); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("deleted job: %v", err)
	}
	if _, err := store.Asset(ctx, jobid.AssetOf(jobID)); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("deleted asset: %v", err)
	}
	running, _ := eventtest.Job("running")
	apply(eventtest.Event(running, transcoding, 0), 1, true)
	if _, err := store.DeleteJob(ctx, running); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("delete running: %v", err)
	}
}

func testDeleteJob(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	jobID, assetID := eventtest.Job("delete")
	mustApply(t, s, eventtest.Event(jobID, queued, 0), eventtest.Event(jobID, ready, 0))
	j, err := s.DeleteJob(ctx, jobID)
	if err != nil || j.ID != jobID || j.State != catalog.StateReady || j.Source.Key != eventtest.Source(jobID).Key {
		t.Fatalf("DeleteJob = %+v, %v; want the job as it was", j, err)
	}
	// Again: succeeds (the removal of objects may be repeated).
	if j, err := s.DeleteJob(ctx, jobID); err != nil || j.ID != jobID {
		t.Fatalf("DeleteJob again = %+v, %v", j, err)
	}
	// The outputs bucket is still known, for the removal.
	if b, err := s.OutputsBucket(ctx, assetID); err != nil || b != "outputs" {
		t.Errorf("outputs bucket of a deleted asset = %q, %v", b, err)
	}
	if jobs, _, err := s.ListJobs(ctx, catalog.JobFilter{}); err != nil || len(jobs) != 0 {
		t.Errorf("ListJobs after delete = %v, %v", jobs, err)
	}
	if _, err := s.RetryRendition(ctx, assetID, "720p"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("RetryRendition of a deleted asset: %v", err)
	}
}

func testListJobs(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	var ids []string
	for i := range 5 {
		id, _ := eventtest.Job(fmt.Sprint("list-", i))
		ids = append(ids, id)
		mustApply(t, s, eventtest.Event(id, queued, 0))
		if i%2 == 0 {
			mustApply(t, s, eventtest.Event(id, failed, 0))
		}
	}
	// Pages of two, newest first, each job once.
	var (
		seen  []string
		after *catalog.Cursor
		last  *catalog.Job
		pages int
	)
	for {
		jobs, next, err := s.ListJobs(ctx, catalog.JobFilter{Limit: 2, After: after})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(jobs) > 2 || (next != nil && len(jobs) != 2) {
			t.Fatalf("page %d: %d jobs, next %v", pages, len(jobs), next)
		}
		for _, j := range jobs {
			if last != nil && (j.CreatedAt.After(last.CreatedAt) || (j.CreatedAt.Equal(last.CreatedAt) && j.ID >= last.ID)) {
				t.Errorf("%s (%v) listed after %s (%v)", j.ID, j.CreatedAt, last.ID, last.CreatedAt)
			}
			seen, last = append(seen, j.ID), j
		}
		if next == nil {
			break
		}
		if n := jobs[len(jobs)-1]; !next.CreatedAt.Equal(n.CreatedAt) || next.ID != n.ID {
			t.Errorf("cursor %+v is not the page's last job %s", next, n.ID)
		}
		after = next
	}
	if pages != 3 || len(seen) != 5 {
		t.Errorf("%d pages, jobs %v", pages, seen)
	}
	slices.Sort(seen)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Errorf("listed %v, want %v", seen, want)
	}
	// Filters.
	jobs, next, err := s.ListJobs(ctx, catalog.JobFilter{State: catalog.StateFailed})
	if err != nil || next != nil || len(jobs) != 3 {
		t.Errorf("failed jobs = %d, %v, %v", len(jobs), next, err)
	}
	for _, j := range jobs {
		if j.State != catalog.StateFailed {
			t.Errorf("state filter returned %s", j.State)
		}
	}
	jobs, _, err = s.ListJobs(ctx, catalog.JobFilter{SourceKey: eventtest.Source(ids[1]).Key})
	if err != nil || len(jobs) != 1 || jobs[0].ID != ids[1] {
		t.Errorf("source key filter = %v, %v", jobs, err)
	}
	if jobs, _, err := s.ListJobs(ctx, catalog.JobFilter{Limit: catalog.MaxListLimit + 1}); err != nil || len(jobs) != 5 {
		t.Errorf("limit above the maximum = %d, %v", len(jobs), err)
	}
	// Failed renditions of listed ready jobs are loaded.
	r, _ := eventtest.Job("list-ready")
	mustApply(t, s, eventtest.ReadyWithFailure(r))
	jobs, _, err = s.ListJobs(ctx, catalog.JobFilter{State: catalog.StateReady})
	if err != nil || len(jobs) != 1 || !slices.Equal(jobs[0].FailedRenditions, []string{"720p"}) {
		t.Errorf("ready jobs = %+v, %v", jobs, err)
	}
}

// testListJobsByName: JobFilter.Name finds jobs by their source file name,
// ignoring case, and searches an upload's file name only (not its random
// folder), a key put in the bucket directly whole.
func testListJobsByName(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	keys := map[string]string{
		"name-a": "uploads/0123456789abcdef01234567/Holiday_Beach.mp4",
		"name-b": "uploads/fedcba9876543210fedcba98/beach-day-bowl.mov",
		"name-c": "uploads/00000000000000000000cafe/office.mkv",
		"name-d": "inbox/beach/raw.mov", // put in the bucket directly
	}
	ids := map[string]string{}
	for name, key := range keys {
		id, _ := eventtest.Job(name)
		ids[name] = id
		ev := eventtest.Event(id, queued, 0)
		ev.Source.Key = key
		mustApply(t, s, ev)
	}
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"beach", []string{"name-a", "name-b", "name-d"}},
		{"BEACH.MP4", []string{"name-a"}},
		{"holiday beach", []string{"name-a"}}, // the space as SafeName stored it
		{"y_b", []string{"name-a"}},           // '_' is no wildcard (y-b)
		{"%", []string{"name-a"}},             // nor '%' (it is a run: '_')
		{"cafe", nil},                         // the random folder is not the name
		{"inbox/", []string{"name-d"}},
		{"uploads", nil},
	} {
		jobs, _, err := s.ListJobs(ctx, catalog.JobFilter{Name: tc.q})
		if err != nil {
			t.Fatalf("q %q: %v", tc.q, err)
		}
		var got []string
		for _, j := range jobs {
			for name, id := range ids {
				if j.ID == id {
					got = append(got, name)
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("q %q found %v, want %v", tc.q, got, tc.want)
		}
	}
}

func testPartialReadyIgnored(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	apply := applier(t, s)

	// A job that is not ready ignores partial events, and an unknown job is
	// not created by one.
	id, asset := eventtest.Job("partial-not-ready")
	apply(eventtest.PartialReady(id, "1"), 1, false)
	if _, err := s.Job(ctx, id); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("job created by a partial event: %v", err)
	}
	apply(eventtest.Event(id, queued, 0), 1, true)
	apply(eventtest.Event(id, packaging, 0), 1, true)
	apply(eventtest.PartialReady(id, "1"), 1, false)
	a, err := s.Asset(ctx, asset)
	if err != nil || a.State != catalog.StatePackaging || len(a.Renditions) != 0 {
		t.Errorf("asset after an ignored partial = %+v, %v", a, err)
	}
	// Had it written a rendition, the READY would show it beside its own.
	apply(eventtest.Event(id, ready, 0), 1, true)
	if a, err := s.Asset(ctx, asset); err != nil || len(a.Renditions) != 2 || len(a.Failed) != 0 {
		t.Errorf("asset = %+v, %v", a, err)
	}

	// A new attempt clears the failures; a partial event of the old attempt
	// is then ignored.
	id, asset = eventtest.Job("partial-attempts")
	apply(eventtest.Event(id, queued, 0), 1, true)
	apply(eventtest.Event(id, probing, 0), 1, true)
	apply(eventtest.ReadyWithFailure(id), 1, true)
	if a, err := s.Asset(ctx, asset); err != nil || len(a.Failed) != 1 {
		t.Fatalf("asset = %+v, %v", a, err)
	}
	if j, err := s.Job(ctx, id); err != nil || len(j.FailedRenditions) != 1 || j.FailedRenditions[0] != "720p" {
		t.Fatalf("job = %+v, %v", j, err)
	}
	apply(eventtest.Event(id, queued, 0), 2, true)
	if a, err := s.Asset(ctx, asset); err != nil || len(a.Failed) != 0 || len(a.Renditions) != 0 {
		t.Errorf("asset after a new attempt = %+v, %v", a, err)
	}
	if j, err := s.Job(ctx, id); err != nil || len(j.FailedRenditions) != 0 {
		t.Errorf("job after a new attempt = %+v, %v", j, err)
	}
	apply(eventtest.ReadyWithFailure(id), 2, true)
	apply(eventtest.PartialReady(id, "1"), 1, false) // an older attempt
	a, err = s.Asset(ctx, asset)
	if err != nil || len(a.Failed) != 1 || len(a.Renditions) != 1 {
		t.Errorf("asset after an old attempt's partial = %+v, %v", a, err)
	}
	apply(eventtest.PartialReady(id, "1"), 2, true)

	// A complete READY of a new attempt replaces the failures.
	apply(eventtest.Event(id, queued, 0), 3, true)
	apply(eventtest.Event(id, ready, 0), 3, true)
	if a, err := s.Asset(ctx, asset); err != nil || len(a.Failed) != 0 || len(a.Renditions) != 2 {
		t.Errorf("asset after a complete ready = %+v, %v", a, err)
	}

	// A deleted job ignores partial events.
	id, _ = eventtest.Job("partial-deleted")
	apply(eventtest.ReadyWithFailure(id), 1, true)
	if _, err := s.DeleteJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	apply(eventtest.PartialReady(id, "1"), 1, false)
}

func testPartialReadyValidation(t *testing.T, open Opener) {
	s := open(t)
	id, _ := eventtest.Job("partial-invalid")
	for name, mut := range map[string]func(*kilnv1.AssetOutputs){
		"empty partial":       func(o *kilnv1.AssetOutputs) { o.Renditions = nil },
		"bad failed name":     func(o *kilnv1.AssetOutputs) { o.FailedRenditions = []*kilnv1.FailedRendition{{Name: "../x"}} },
		"ready and failed":    func(o *kilnv1.AssetOutputs) { o.FailedRenditions = []*kilnv1.FailedRendition{{Name: "720p"}} },
		"duplicate failed":    func(o *kilnv1.AssetOutputs) { o.FailedRenditions = []*kilnv1.FailedRendition{{Name: "a"}, {Name: "a"}} },
		"complete, no ready":  func(o *kilnv1.AssetOutputs) { o.Partial, o.Renditions = false, nil },
		"partial, bad codecs": func(o *kilnv1.AssetOutputs) { o.Renditions[0].Codecs = "a\"b" },
	} {
		ev := eventtest.PartialReady(id, "1")
		mut(ev.Outputs)
		if _, err := s.Apply(t.Context(), ev); !errors.Is(err, catalog.ErrInvalidEvent) {
			t.Errorf("%s: %v, want ErrInvalidEvent", name, err)
		}
	}
	// A failed-only partial (the retry failed again) is valid.
	ev := eventtest.PartialReady(id, "1")
	ev.Outputs.Renditions = nil
	ev.Outputs.FailedRenditions = []*kilnv1.FailedRendition{{Name: "720p"}}
	if _, err := s.Apply(t.Context(), ev); err != nil {
		t.Errorf("failed-only partial: %v", err)
	}
}

// testPartialReadyRenditions: what a partial READY does to a ready job's
// renditions and failures.
func testPartialReadyRenditions(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	apply := applier(t, s)
	id, asset := eventtest.Job("partial-renditions")
	apply(eventtest.Event(id, probing, 0), 1, true) // the plan sizes failures
	apply(eventtest.ReadyWithFailure(id), 1, true)
	mustRetry(t, s, asset, "720p") // retries: 1

	// The retry failed again: the failure is updated, its retry count kept.
	again := eventtest.PartialReady(id, "1")
	again.Outputs.Renditions = nil
	again.Outputs.FailedRenditions = []*kilnv1.FailedRendition{{Name: "720p", Error: &kilnv1.JobError{Code: failure.Timeout, Message: "slow"}}}
	apply(again, 1, true)
	apply(again, 1, false) // a repeat
	a, err := s.Asset(ctx, asset)
	if err != nil || len(a.Failed) != 1 {
		t.Fatalf("asset = %+v, %v", a, err)
	}
	if f := a.Failed[0]; f.ErrorCode != failure.Timeout || f.ErrorMessage != "slow" || f.Retries != 1 ||
		f.EncodedKey != "assets/"+asset+"/enc/720p.mp4" || f.Width != 1280 || f.Height != 720 {
		t.Errorf("failure after a failed retry = %+v (the encoded key without a new one is kept)", f)
	}
	// A failure without a code is internal.
	again.Outputs.FailedRenditions[0].Error = nil
	apply(again, 1, true)
	if a, _ := s.Asset(ctx, asset); a.Failed[0].ErrorCode != failure.Internal {
		t.Errorf("failure code = %q, want %q", a.Failed[0].ErrorCode, failure.Internal)
	}

	// The next retry succeeds: ready, no failure.
	before, _ := s.Job(ctx, id)
	apply(eventtest.PartialReady(id, "2"), 1, true)
	a, err = s.Asset(ctx, asset)
	if err != nil || len(a.Failed) != 0 || len(a.Renditions) != 2 || a.Renditions[1].Name != "720p" || a.Renditions[1].Bandwidth != 3_400_000 {
		t.Fatalf("asset after a successful retry = %+v, %v", a, err)
	}
	j, _ := s.Job(ctx, id)
	if len(j.FailedRenditions) != 0 || j.State != catalog.StateReady || j.UpdatedAt.Before(before.UpdatedAt) {
		t.Errorf("job after a successful retry = %+v", j)
	}
	// A late failure never hides a working rendition; a repeat changes
	// nothing.
	apply(again, 1, false)
	apply(eventtest.PartialReady(id, "2"), 1, false)
	if a, _ := s.Asset(ctx, asset); len(a.Failed) != 0 || len(a.Renditions) != 2 {
		t.Errorf("asset after a late failure = %+v", a)
	}
	// A changed rendition is a change.
	changedEv := eventtest.PartialReady(id, "3")
	changedEv.Outputs.Renditions[0].Bandwidth = 3_500_000
	apply(changedEv, 1, true)
	if a, _ := s.Asset(ctx, asset); a.Renditions[1].Bandwidth != 3_500_000 {
		t.Errorf("renditions = %+v", a.Renditions)
	}
}

func mustRetry(t *testing.T, s catalog.Store, asset, name string) catalog.RenditionRetry {
	t.Helper()
	got, err := s.RetryRendition(t.Context(), asset, name)
	if err != nil {
		t.Fatalf("RetryRendition(%s): %v", name, err)
	}
	if err := s.RenditionRetryDone(t.Context(), asset, name, got.Retry, true); err != nil {
		t.Fatalf("RenditionRetryDone(%s): %v", name, err)
	}
	return got
}

// testEncodedKeys: renditions and failures keep their encoded object's key,
// from full and partial READY events.
func testEncodedKeys(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	id, asset := eventtest.Job("encoded")
	mustApply(t, s, eventtest.ReadyWithFailure(id))
	a, err := s.Asset(ctx, asset)
	if err != nil || len(a.Renditions) != 1 || len(a.Failed) != 1 {
		t.Fatalf("asset = %+v, %v", a, err)
	}
	if got, want := a.Renditions[0].EncodedKey, "assets/"+asset+"/enc/360p.mp4"; got != want {
		t.Errorf("360p encoded key %q, want %q", got, want)
	}
	if got, want := a.Failed[0].EncodedKey, "assets/"+asset+"/enc/720p.mp4"; got != want {
		t.Errorf("failed 720p encoded key %q, want %q", got, want)
	}
	ev := eventtest.PartialReady(id, "1")
	ev.Outputs.Renditions[0].EncodedKey = "assets/" + asset + "/enc/720p-v2.mp4"
	mustApply(t, s, ev)
	a, _ = s.Asset(ctx, asset)
	if r, ok := a.Rendition("720p"); !ok || r.EncodedKey != "assets/"+asset+"/enc/720p-v2.mp4" {
		t.Errorf("720p after the partial ready = %+v, %v", r, ok)
	}
	// A partial failure carrying a key records it.
	other, otherAsset := eventtest.Job("encoded-partial-failure")
	ev = eventtest.ReadyWithFailure(other)
	ev.Outputs.FailedRenditions[0].EncodedKey = ""
	mustApply(t, s, ev)
	if a, _ := s.Asset(ctx, otherAsset); a.Failed[0].EncodedKey != "" {
		t.Errorf("failure without a key = %+v", a.Failed[0])
	}
	fail := eventtest.PartialReady(other, "1")
	fail.Outputs.Renditions = nil
	fail.Outputs.FailedRenditions = []*kilnv1.FailedRendition{{Name: "720p", EncodedKey: "k.mp4", Error: &kilnv1.JobError{Code: "packaging_failed", Message: "segmenter exited 1"}}}
	if changed, err := s.Apply(ctx, fail); err != nil || !changed {
		t.Fatalf("partial failure with a key: %v, %v", changed, err)
	}
	if a, _ := s.Asset(ctx, otherAsset); a.Failed[0].EncodedKey != "k.mp4" {
		t.Errorf("failure = %+v, want encoded key k.mp4", a.Failed[0])
	}
}

func testRetryRendition(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	id, asset := eventtest.Job("retry")
	ev := eventtest.ReadyWithFailure(id)
	ev.Outputs.Thumbnails = &kilnv1.Thumbnails{PosterKey: "p.jpg", IntervalSeconds: 2}
	mustApply(t, s, eventtest.Event(id, queued, 0), eventtest.Event(id, probing, 0), ev)

	for _, c := range []struct {
		name string
		want error
	}{
		{"360p", catalog.ErrConflict},     // ready
		{"1080p", catalog.ErrNoRendition}, // unknown
	} {
		if _, err := s.RetryRendition(ctx, asset, c.name); !errors.Is(err, c.want) {
			t.Errorf("retry %s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := s.RetryRendition(ctx, asset, "1080p"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("ErrNoRendition does not wrap ErrNotFound: %v", err)
	}
	pending, pendingAsset := eventtest.Job("retry-pending")
	mustApply(t, s, eventtest.Event(pending, queued, 0))
	if _, err := s.RetryRendition(ctx, pendingAsset, "720p"); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("retry on a job that is not ready: %v, want ErrConflict", err)
	}

	// A retry whose enqueue failed is taken back.
	taken, err := s.RetryRendition(ctx, asset, "720p")
	if err != nil || taken.Retry != 1 {
		t.Fatalf("retry: %+v, %v", taken, err)
	}
	if err := s.RenditionRetryDone(ctx, asset, "720p", taken.Retry, false); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.Asset(ctx, asset); a.Failed[0].Retries != 0 {
		t.Errorf("retries after a failed enqueue = %d", a.Failed[0].Retries)
	}
	if p, err := s.PendingRenditionRetries(ctx, time.Now().Add(time.Hour), 10); err != nil || len(p) != 0 {
		t.Errorf("pending after a taken-back retry: %+v, %v", p, err)
	}

	rr := mustRetry(t, s, asset, "720p")
	if rr.Retry != 1 || rr.Name != "720p" || rr.EncodedKey != "assets/"+asset+"/enc/720p.mp4" {
		t.Errorf("retry = %+v", rr)
	}
	if j := rr.Job; j == nil || j.ID != id || j.AssetID != asset || j.Attempt != 1 || !proto.Equal(j.Media, eventtest.Media()) || !proto.Equal(j.Plan, eventtest.Plan()) {
		t.Errorf("retry job = %+v", rr.Job)
	}
	full := eventtest.Outputs(asset)
	if a := rr.Asset; a == nil || a.ID != asset || a.JobID != id || a.State != catalog.StateReady || a.Bucket != "outputs" ||
		a.Prefix != full.Prefix || a.PosterKey != full.PosterKey || !proto.Equal(a.Thumbnails, ev.Outputs.Thumbnails) {
		t.Errorf("retry asset = %+v", rr.Asset)
	}
	if rr := mustRetry(t, s, asset, "720p"); rr.Retry != 2 {
		t.Errorf("second retry = %d", rr.Retry)
	}
	if a, _ := s.Asset(ctx, asset); a.Failed[0].Retries != 2 {
		t.Errorf("retries = %d, want 2", a.Failed[0].Retries)
	}
	if p, err := s.PendingRenditionRetries(ctx, time.Now().Add(time.Hour), 10); err != nil || len(p) != 0 {
		t.Errorf("pending after settled retries: %+v, %v", p, err)
	}

	// A retry never settled (its request died after the commit) is
	// pending, with everything its task needs, once it is older than the
	// cutoff; settling it ends that, and settling again changes nothing.
	lost, err := s.RetryRendition(ctx, asset, "720p")
	if err != nil || lost.Retry != 3 {
		t.Fatalf("third retry: %+v, %v", lost, err)
	}
	if p, _ := s.PendingRenditionRetries(ctx, time.Now().Add(-time.Hour), 10); len(p) != 0 {
		t.Errorf("a fresh retry is pending before its grace: %+v", p)
	}
	p, err := s.PendingRenditionRetries(ctx, time.Now().Add(time.Hour), 10)
	if err != nil || len(p) != 1 {
		t.Fatalf("pending: %+v, %v", p, err)
	}
	if got := p[0]; got.Name != "720p" || got.Retry != 3 || got.EncodedKey != lost.EncodedKey || got.Job == nil || got.Job.ID != id ||
		got.Asset == nil || got.Asset.Bucket != "outputs" || got.Asset.PosterKey != lost.Asset.PosterKey {
		t.Errorf("pending retry = %+v, want %+v", got, lost)
	}
	for range 2 {
		if err := s.RenditionRetryDone(ctx, asset, "720p", 3, true); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := s.PendingRenditionRetries(ctx, time.Now().Add(time.Hour), 10); len(p) != 0 {
		t.Errorf("pending after settling: %+v", p)
	}
	if a, _ := s.Asset(ctx, asset); a.Failed[0].Retries != 3 {
		t.Errorf("retries = %d, want 3", a.Failed[0].Retries)
	}
}

func testHasJob(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	a, _ := eventtest.Job("a")
	b, _ := eventtest.Job("b")
	mustApply(t, s, eventtest.Event(a, queued, 0), eventtest.Event(a, failed, 0))
	for id, want := range map[string]bool{a: true, b: false} {
		if got, err := s.HasJob(ctx, id); err != nil || got != want {
			t.Errorf("HasJob(%s) = %v, %v, want %v", id, got, err, want)
		}
	}
	if _, err := s.DeleteJob(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, err := s.HasJob(ctx, a); err != nil || !got {
		t.Errorf("HasJob(deleted) = %v, %v, want true: a deleted job's source must not start it again", got, err)
	}
}

func testCountJobs(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	if got, err := s.CountJobs(ctx); err != nil || len(got) != 0 {
		t.Fatalf("CountJobs of an empty store = %v, %v", got, err)
	}
	a, _ := eventtest.Job("count-a")
	b, _ := eventtest.Job("count-b")
	c, _ := eventtest.Job("count-c")
	d, _ := eventtest.Job("count-d")
	mustApply(t, s, eventtest.Event(a, queued, 0), eventtest.Event(b, queued, 0), eventtest.Event(c, queued, 0),
		eventtest.Event(c, ready, 0), eventtest.Event(d, queued, 0), eventtest.Event(d, failed, 0))
	if _, err := s.DeleteJob(ctx, d); err != nil {
		t.Fatal(err)
	}
	got, err := s.CountJobs(ctx)
	want := map[catalog.State]int{catalog.StateQueued: 2, catalog.StateReady: 1} // the deleted job is not counted
	if err != nil || !maps.Equal(got, want) {
		t.Errorf("CountJobs = %v, %v; want %v", got, err, want)
	}
}

// testUsage: the stored bytes of a tenant's jobs not deleted, the seconds
// of its jobs made ready since a time (deleted or not), its running jobs'
// sources, and which sources ended.
func testUsage(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	const tenA, tenB = "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa", "ten_bbbbbbbbbbbbbbbbbbbbbbbbbb"
	if u, err := s.TenantUsage(ctx, "", eventtest.T0); err != nil || len(u) != 0 {
		t.Fatalf("TenantUsage of an empty store = %v, %v", u, err)
	}
	queuedFor := func(job, tn string) *kilnv1.JobEvent {
		ev := eventtest.Event(job, queued, 0)
		ev.TenantId = tn
		return ev
	}
	run, _ := eventtest.Job("usage-run")           // A, transcoding
	done, doneAsset := eventtest.Job("usage-done") // A, ready
	gone, _ := eventtest.Job("usage-gone")         // A, ready, then deleted
	other, _ := eventtest.Job("usage-other")       // B, queued
	orphan, _ := eventtest.Job("usage-orphan")     // nobody's: no QUEUED
	mustApply(t, s, queuedFor(run, tenA), eventtest.Event(run, transcoding, 0.5),
		queuedFor(done, tenA), eventtest.Event(done, ready, 0),
		queuedFor(gone, tenA), eventtest.Event(gone, ready, 0),
		queuedFor(other, tenB), eventtest.Event(orphan, probing, 0))
	if _, err := s.DeleteJob(ctx, gone); err != nil {
		t.Fatal(err)
	}
	a, err := s.Asset(ctx, doneAsset)
	if err != nil {
		t.Fatal(err)
	}
	size := eventtest.Source(run).Size
	got, err := s.TenantUsage(ctx, "", eventtest.T0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]quota.Usage{
		tenA: {StoredBytes: 2 * size, EncodedSeconds: 2 * a.DurationSeconds}, // run and done kept; done and gone encoded
		tenB: {StoredBytes: size},
	}
	if !maps.Equal(got, want) {
		t.Errorf("TenantUsage = %v, want %v", got, want)
	}
	if got, err := s.TenantUsage(ctx, tenB, eventtest.T0); err != nil || !maps.Equal(got, map[string]quota.Usage{tenB: {StoredBytes: size}}) {
		t.Errorf("TenantUsage of B = %v, %v", got, err)
	}
	// Since a time after the READYs: nothing encoded.
	if got, err := s.TenantUsage(ctx, tenA, eventtest.T0.Add(24*time.Hour)); err != nil || got[tenA].EncodedSeconds != 0 || got[tenA].StoredBytes != 2*size {
		t.Errorf("TenantUsage of A after its READYs = %v, %v", got, err)
	}
	running, err := s.RunningSources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(running) != fmt.Sprint(map[string][]string{tenA: {eventtest.Source(run).Key}, tenB: {eventtest.Source(other).Key}}) {
		t.Errorf("RunningSources = %v", running)
	}
	ended, err := s.EndedSources(ctx, []string{eventtest.Source(run).Key, eventtest.Source(done).Key, eventtest.Source(gone).Key, "in/unknown.mov"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{eventtest.Source(done).Key, eventtest.Source(gone).Key}; !slices.Equal(ended, want) {
		t.Errorf("EndedSources = %v, want %v", ended, want)
	}
}

func testStaleJobs(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	ids := map[string]string{}
	for _, k := range []string{"queued", "probing", "transcoding", "packaging", "ready", "failed", "canceled", "deleted"} {
		ids[k], _ = eventtest.Job(k)
	}
	before := time.Now().Add(-time.Hour)
	mustApply(t, s, eventtest.Event(ids["queued"], queued, 0))
	mustApply(t, s, eventtest.Event(ids["probing"], queued, 0), eventtest.Event(ids["probing"], probing, 0))
	mustApply(t, s, eventtest.Event(ids["transcoding"], queued, 0), eventtest.Event(ids["transcoding"], transcoding, 0.5))
	mustApply(t, s, eventtest.Event(ids["packaging"], queued, 0), eventtest.Event(ids["packaging"], packaging, 0))
	mustApply(t, s, eventtest.Event(ids["ready"], queued, 0), eventtest.Event(ids["ready"], ready, 0))
	mustApply(t, s, eventtest.Event(ids["failed"], queued, 0), eventtest.Event(ids["failed"], failed, 0))
	mustApply(t, s, eventtest.Event(ids["canceled"], queued, 0), eventtest.Event(ids["canceled"], canceled, 0))
	mustApply(t, s, eventtest.Event(ids["deleted"], queued, 0), eventtest.Event(ids["deleted"], failed, 0))
	if _, err := s.DeleteJob(ctx, ids["deleted"]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.StaleJobs(ctx, catalog.StaleFilter{Before: before, Limit: 10}); err != nil || len(got) != 0 {
		t.Fatalf("StaleJobs(before every update) = %d jobs, %v, want none", len(got), err)
	}
	after := time.Now().Add(time.Hour)
	got, err := s.StaleJobs(ctx, catalog.StaleFilter{Before: after, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ids["queued"], ids["probing"], ids["transcoding"], ids["packaging"]} // in update order
	var gotIDs []string
	for i, j := range got {
		gotIDs = append(gotIDs, j.ID)
		if i > 0 && j.UpdatedAt.Before(got[i-1].UpdatedAt) {
			t.Errorf("StaleJobs not least recently updated first: %v after %v", j.UpdatedAt, got[i-1].UpdatedAt)
		}
	}
	if !slices.Equal(gotIDs, want) {
		t.Errorf("StaleJobs = %v, want the running jobs %v", gotIDs, want)
	}
	if got[1].State != catalog.StateProbing || got[1].Media == nil || got[1].Plan == nil || got[0].Source.Key == "" {
		t.Errorf("StaleJobs jobs lack what the reconciler rebuilds tasks from: %+v", got[1])
	}
	page1, err := s.StaleJobs(ctx, catalog.StaleFilter{Before: after, Limit: 3})
	if err != nil || len(page1) != 3 || page1[0].ID != want[0] {
		t.Fatalf("StaleJobs(limit 3) = %d jobs, %v", len(page1), err)
	}
	page2, err := s.StaleJobs(ctx, catalog.StaleFilter{Before: after, Limit: 3, After: page1[2]})
	if err != nil || len(page2) != 1 || page2[0].ID != want[3] {
		t.Errorf("StaleJobs(after the first page) = %d jobs, %v, want %s", len(page2), err, want[3])
	}
	// A job updated again is no longer stale as of before its update.
	mid := time.Now()
	mustApply(t, s, eventtest.Event(ids["queued"], probing, 0))
	if got, err := s.StaleJobs(ctx, catalog.StaleFilter{Before: mid, Limit: 10}); err != nil || len(got) != 3 || slices.ContainsFunc(got, func(j *catalog.Job) bool { return j.ID == ids["queued"] }) {
		t.Errorf("StaleJobs after an update = %d jobs, %v, want the 3 others", len(got), err)
	}
}

func testLease(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	const ttl = time.Minute
	acquire := func(holder string, at time.Time, want bool) {
		t.Helper()
		if got, err := s.AcquireLease(ctx, "reconciler", holder, at, ttl); err != nil || got != want {
			t.Fatalf("AcquireLease(%s, eventtest.T0+%v) = %v, %v, want %v", holder, at.Sub(eventtest.T0), got, err, want)
		}
	}
	acquire("a", eventtest.T0, true)                      // free
	acquire("b", eventtest.T0.Add(30*time.Second), false) // held by a
	acquire("a", eventtest.T0.Add(50*time.Second), true)  // renewed until eventtest.T0+110s
	acquire("b", eventtest.T0.Add(100*time.Second), false)
	acquire("b", eventtest.T0.Add(110*time.Second), true) // expired: taken over
	acquire("a", eventtest.T0.Add(120*time.Second), false)
	if got, err := s.AcquireLease(ctx, "other", "a", eventtest.T0, ttl); err != nil || !got {
		t.Errorf("AcquireLease(another name) = %v, %v, want true", got, err)
	}
	if err := s.ReleaseLease(ctx, "reconciler", "a"); err != nil { // not a's: a no-op
		t.Fatal(err)
	}
	acquire("a", eventtest.T0.Add(130*time.Second), false)
	if err := s.ReleaseLease(ctx, "reconciler", "b"); err != nil {
		t.Fatal(err)
	}
	acquire("a", eventtest.T0.Add(131*time.Second), true) // released: free at once
	if _, err := s.AcquireLease(ctx, "reconciler", "", eventtest.T0, ttl); err == nil {
		t.Error("AcquireLease without a holder: nil error")
	}
}

// renditionNames are a's renditions' names, in order.
func renditionNames(a *catalog.Asset) string {
	var names []string
	for _, r := range a.Renditions {
		names = append(names, r.Name)
	}
	return strings.Join(names, ",")
}

// testPlayable: a playable event makes a running job's outputs play before
// READY, once; READY replaces them.
func testPlayable(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	apply := applier(t, s)
	id, asset := eventtest.Job("playable")
	apply(eventtest.Event(id, queued, 0), 1, true)
	apply(eventtest.Event(id, probing, 0), 1, true)
	pl := eventtest.Playable(id)
	apply(pl, 1, true) // advances to transcoding
	j, err := s.Job(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != catalog.StateTranscoding || !j.PlayableAt.Equal(pl.GetTime().AsTime()) || j.Progress != 0.2 {
		t.Fatalf("job after playable = state %s, progress %v, playable at %v; want transcoding, 0.2, %v", j.State, j.Progress, j.PlayableAt, pl.GetTime().AsTime())
	}
	if j.Timestamps[catalog.StateTranscoding].IsZero() {
		t.Error("no transcoding timestamp")
	}
	a, err := s.Asset(ctx, asset)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Playable() || a.Ready() || !a.ReadyAt.IsZero() || !a.PlayableAt.Equal(j.PlayableAt) || a.Bucket != eventtest.OutputsBucket ||
		a.Prefix != "assets/"+asset+"/" || a.MP4Key != "" || a.DurationSeconds != 12.5 {
		t.Fatalf("playable asset = %+v", a)
	}
	if got := renditionNames(a); got != "audio,360p,720p" {
		t.Fatalf("renditions = %s, want audio,360p,720p (by bandwidth)", got)
	}
	if r, _ := a.Rendition("audio"); r.Width != 0 || r.Codecs != "mp4a.40.2" || r.PlaylistKey != "assets/"+asset+"/hls/audio/index.m3u8" {
		t.Errorf("audio rendition = %+v", r)
	}
	if b, err := s.OutputsBucket(ctx, asset); err != nil || b != eventtest.OutputsBucket {
		t.Errorf("outputs bucket = %q, %v", b, err)
	}

	// A repeat changes nothing, even with other outputs (the first are the
	// attempt's); progress events keep the playable time.
	again := eventtest.Playable(id)
	again.Outputs.Renditions = again.Outputs.Renditions[:1]
	again.Time = timestamppb.New(eventtest.T0.Add(time.Hour))
	apply(again, 1, false)
	apply(eventtest.Event(id, transcoding, 0.6), 1, true)
	apply(eventtest.Event(id, packaging, 0), 1, true)
	if a, err := s.Asset(ctx, asset); err != nil || renditionNames(a) != "audio,360p,720p" || !a.Playable() {
		t.Fatalf("asset after a repeat and packaging = %+v, %v", a, err)
	}
	if j, err := s.Job(ctx, id); err != nil || !j.PlayableAt.Equal(pl.GetTime().AsTime()) {
		t.Fatalf("playable at after a repeat = %+v, %v", j, err)
	}

	// READY replaces the outputs with its measured ones; a playable event
	// after it changes nothing.
	rd := eventtest.Event(id, ready, 0)
	rd.Outputs.Mp4Key = ""
	apply(rd, 1, true)
	a, err = s.Asset(ctx, asset)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Ready() || !a.Playable() || a.ReadyAt.IsZero() || a.DurationSeconds != 12.48 || renditionNames(a) != "360p,720p" || a.MP4Key != "" {
		t.Fatalf("asset after READY = %+v", a)
	}
	apply(eventtest.Playable(id), 1, false)
	if a, err := s.Asset(ctx, asset); err != nil || renditionNames(a) != "360p,720p" || !a.PlayableAt.Equal(pl.GetTime().AsTime()) {
		t.Fatalf("asset after a late playable = %+v, %v", a, err)
	}

	// A playable event may be a job's first (its earlier ones are late),
	// and makes a packaging job playable too.
	first, firstAsset := eventtest.Job("playable-first")
	apply(eventtest.Playable(first), 1, true)
	if a, err := s.Asset(ctx, firstAsset); err != nil || !a.Playable() || renditionNames(a) != "audio,360p,720p" {
		t.Fatalf("asset of a job created by its playable event = %+v, %v", a, err)
	}
	late, lateAsset := eventtest.Job("playable-late")
	apply(eventtest.Event(late, packaging, 0), 1, true)
	if a, err := s.Asset(ctx, lateAsset); err != nil || a.Playable() || len(a.Renditions) != 0 {
		t.Fatalf("asset of a packaging job = %+v, %v", a, err)
	}
	apply(eventtest.Playable(late), 1, true)
	if j, err := s.Job(ctx, late); err != nil || j.State != catalog.StatePackaging || j.PlayableAt.IsZero() {
		t.Fatalf("packaging job after its playable event = %+v, %v", j, err)
	}
	if a, err := s.Asset(ctx, lateAsset); err != nil || !a.Playable() || len(a.Renditions) != 3 {
		t.Fatalf("packaging asset after its playable event = %+v, %v", a, err)
	}

	// A job that failed before READY plays no more.
	bad, badAsset := eventtest.Job("playable-failed")
	apply(eventtest.Playable(bad), 1, true)
	apply(eventtest.Event(bad, failed, 0), 1, true)
	apply(eventtest.Playable(bad), 1, false)
	if a, err := s.Asset(ctx, badAsset); err != nil || a.Playable() || len(a.Renditions) != 0 || a.Bucket != "" {
		t.Fatalf("asset of a job failed after playable = %+v, %v", a, err)
	}
	if b, err := s.OutputsBucket(ctx, badAsset); err != nil || b != eventtest.OutputsBucket {
		t.Errorf("outputs bucket of a failed playable job = %q, %v (DELETE empties it)", b, err)
	}

	// Invalid playable events.
	for name, mut := range map[string]func(*kilnv1.JobEvent){
		"not transcoding":   func(ev *kilnv1.JobEvent) { ev.State = packaging },
		"ready":             func(ev *kilnv1.JobEvent) { ev.State = ready },
		"no outputs":        func(ev *kilnv1.JobEvent) { ev.Outputs = nil },
		"no renditions":     func(ev *kilnv1.JobEvent) { ev.Outputs.Renditions = nil },
		"partial":           func(ev *kilnv1.JobEvent) { ev.Outputs.Partial = true },
		"bad codecs":        func(ev *kilnv1.JobEvent) { ev.Outputs.Renditions[2].Codecs = `mp4a",URI="x` },
		"no bandwidth":      func(ev *kilnv1.JobEvent) { ev.Outputs.Renditions[0].Bandwidth = 0 },
		"rendition name ..": func(ev *kilnv1.JobEvent) { ev.Outputs.Renditions[0].Name = ".." },
	} {
		ev := eventtest.Playable(first)
		mut(ev)
		if changed, err := s.Apply(ctx, ev); !errors.Is(err, catalog.ErrInvalidEvent) || changed {
			t.Errorf("%s: Apply = %v, %v; want ErrInvalidEvent", name, changed, err)
		}
	}
}

// testPlayableAttempts: a new attempt clears the playable time and the
// outputs; an old attempt's playable event is ignored.
func testPlayableAttempts(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	apply := applier(t, s)
	id, asset := eventtest.Job("playable-attempts")
	apply(eventtest.Event(id, queued, 0), 1, true)
	apply(eventtest.Playable(id), 1, true)
	apply(eventtest.Event(id, failed, 0), 1, true)
	apply(eventtest.Event(id, queued, 0), 2, true)
	if j, err := s.Job(ctx, id); err != nil || !j.PlayableAt.IsZero() || j.Attempt != 2 {
		t.Fatalf("job of a new attempt = %+v, %v", j, err)
	}
	if a, err := s.Asset(ctx, asset); err != nil || a.Playable() || !a.PlayableAt.IsZero() || len(a.Renditions) != 0 {
		t.Fatalf("asset of a new attempt = %+v, %v", a, err)
	}
	apply(eventtest.Playable(id), 1, false) // the old attempt's
	if j, err := s.Job(ctx, id); err != nil || !j.PlayableAt.IsZero() {
		t.Fatalf("old attempt's playable recorded: %+v, %v", j, err)
	}
	pl := eventtest.Playable(id)
	pl.Time = timestamppb.New(eventtest.T0.Add(42 * time.Minute))
	apply(pl, 2, true)
	if j, err := s.Job(ctx, id); err != nil || !j.PlayableAt.Equal(pl.GetTime().AsTime()) {
		t.Fatalf("job after the new attempt's playable = %+v, %v", j, err)
	}
	// A playable event of a newer attempt starts it, playable.
	pl = eventtest.Playable(id)
	apply(pl, 3, true)
	if j, err := s.Job(ctx, id); err != nil || j.Attempt != 3 || j.State != catalog.StateTranscoding || !j.PlayableAt.Equal(pl.GetTime().AsTime()) {
		t.Fatalf("job after attempt 3's playable = %+v, %v", j, err)
	}
	if a, err := s.Asset(ctx, asset); err != nil || !a.Playable() || len(a.Renditions) != 3 {
		t.Fatalf("asset after attempt 3's playable = %+v, %v", a, err)
	}
}

// testChunks: a chunked transcode's chunk counts are recorded from its
// events, raised by one at the same progress, never lowered by a late one
// (nor raised by an event of a lower progress), kept through the later
// states and set by a new attempt; an older attempt's are ignored.
func testChunks(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	apply := applier(t, s)
	id, _ := eventtest.Job("chunks")
	chunk := func(ev *kilnv1.JobEvent, done, total int32) *kilnv1.JobEvent {
		ev.ChunksDone, ev.ChunksTotal = done, total
		return ev
	}
	progress := func(p float64, done, total int32) *kilnv1.JobEvent {
		return chunk(eventtest.Event(id, transcoding, p), done, total)
	}
	check := func(what string, want catalog.Chunks, wantProgress float64) {
		t.Helper()
		j, err := s.Job(ctx, id)
		if err != nil || j.Chunks != want || j.Progress != wantProgress {
			t.Fatalf("%s: job = %+v, %v; want chunks %+v, progress %v", what, j, err, want, wantProgress)
		}
		jobs, _, err := s.ListJobs(ctx, catalog.JobFilter{})
		if err != nil || len(jobs) != 1 || jobs[0].Chunks != want {
			t.Fatalf("%s: listed %+v, %v; want chunks %+v", what, jobs, err, want)
		}
	}
	apply(eventtest.Event(id, queued, 0), 1, true)
	apply(eventtest.Event(id, probing, 0), 1, true)
	check("not chunked", catalog.Chunks{}, 0)
	apply(progress(0.1, 1, 8), 1, true) // advances to transcoding
	check("first chunk", catalog.Chunks{Done: 1, Total: 8}, 0.1)
	apply(progress(0.5, 4, 8), 1, true)
	check("four chunks", catalog.Chunks{Done: 4, Total: 8}, 0.5)
	apply(progress(0.3, 3, 8), 1, false) // late
	check("after a late event", catalog.Chunks{Done: 4, Total: 8}, 0.5)
	apply(progress(0.5, 5, 8), 1, true) // more chunks, same progress
	check("more chunks alone", catalog.Chunks{Done: 5, Total: 8}, 0.5)
	apply(progress(0.4, 6, 8), 1, false) // more chunks, a lower progress: out of order
	check("more chunks, lower progress", catalog.Chunks{Done: 5, Total: 8}, 0.5)
	apply(progress(0.5, 5, 8), 1, false) // a repeat
	apply(progress(0.6, 4, 8), 1, true)  // more progress, late chunks
	check("more progress, fewer chunks", catalog.Chunks{Done: 5, Total: 8}, 0.6)
	apply(progress(0.7, 0, 0), 1, true) // progress without chunks
	check("progress without chunks", catalog.Chunks{Done: 5, Total: 8}, 0.7)
	apply(chunk(eventtest.Playable(id), 6, 8), 1, true) // the first playable event
	check("first playable", catalog.Chunks{Done: 6, Total: 8}, 0.7)
	apply(chunk(eventtest.Playable(id), 7, 8), 1, false) // a repeat: its outputs were recorded
	check("repeated playable", catalog.Chunks{Done: 6, Total: 8}, 0.7)
	apply(progress(0.9, 7, 8), 1, true)
	check("seven chunks", catalog.Chunks{Done: 7, Total: 8}, 0.9)
	apply(chunk(eventtest.Event(id, packaging, 0), 8, 8), 1, true)
	check("packaging", catalog.Chunks{Done: 8, Total: 8}, 0)
	apply(progress(0.95, 7, 8), 1, false) // a late transcoding event
	apply(eventtest.Event(id, failed, 0), 1, true)
	check("failed", catalog.Chunks{Done: 8, Total: 8}, 0)

	apply(eventtest.Event(id, queued, 0), 2, true) // a retry resets them
	check("new attempt", catalog.Chunks{}, 0)
	apply(progress(0.9, 7, 8), 1, false) // the old attempt's
	check("old attempt's event", catalog.Chunks{}, 0)
	apply(progress(0.2, 2, 10), 2, true)
	check("new attempt's chunks", catalog.Chunks{Done: 2, Total: 10}, 0.2)
	apply(progress(0.1, 1, 10), 3, true) // a newer attempt's first event sets them, lower
	check("attempt 3", catalog.Chunks{Done: 1, Total: 10}, 0.1)

	// Counts out of range are clamped: done within [0, total], none without a total.
	apply(progress(0.2, 12, 10), 3, true)
	check("done above total", catalog.Chunks{Done: 10, Total: 10}, 0.2)
	other, _ := eventtest.Job("chunks-bad")
	ev := chunk(eventtest.Event(other, transcoding, 0.1), 3, 0)
	apply(ev, 1, true)
	if j, err := s.Job(ctx, other); err != nil || j.Chunks != (catalog.Chunks{}) {
		t.Fatalf("done without total: job = %+v, %v", j, err)
	}
}

// testDownload: the partial READY of the MP4 download, after READY or
// before it is applied, sets the MP4 key once.
func testDownload(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	apply := applier(t, s)
	id, asset := eventtest.Job("download")
	apply(eventtest.Event(id, queued, 0), 1, true)
	rd := eventtest.Event(id, ready, 0)
	rd.Outputs.Mp4Key = ""
	apply(rd, 1, true)
	if a, err := s.Asset(ctx, asset); err != nil || a.MP4Key != "" {
		t.Fatalf("asset before its download = %+v, %v", a, err)
	}
	dl := eventtest.Download(id)
	apply(dl, 1, true)
	apply(eventtest.Download(id), 1, false) // a repeat
	a, err := s.Asset(ctx, asset)
	if err != nil || a.MP4Key != dl.Outputs.Mp4Key || renditionNames(a) != "360p,720p" || !a.Ready() {
		t.Fatalf("asset after its download = %+v, %v", a, err)
	}
	apply(eventtest.Download(id), 2, false) // another attempt's

	// Before READY is applied (a redelivered READY), on a playable job:
	// recorded, and kept by the READY that names none.
	early, earlyAsset := eventtest.Job("download-early")
	apply(eventtest.Download(early), 1, false) // no job yet
	apply(eventtest.Event(early, queued, 0), 1, true)
	apply(eventtest.Download(early), 1, false) // nothing to play yet
	apply(eventtest.Playable(early), 1, true)
	apply(eventtest.Download(early), 1, true)
	rd = eventtest.Event(early, ready, 0)
	rd.Outputs.Mp4Key = ""
	apply(rd, 1, true)
	if a, err := s.Asset(ctx, earlyAsset); err != nil || a.MP4Key != eventtest.Download(early).Outputs.Mp4Key || !a.Ready() {
		t.Fatalf("asset after an early download and READY = %+v, %v", a, err)
	}
	// A READY that names its own download (the former packager) keeps it.
	old, oldAsset := eventtest.Job("download-old")
	apply(eventtest.Event(old, ready, 0), 1, true)
	if a, err := s.Asset(ctx, oldAsset); err != nil || a.MP4Key != "assets/"+oldAsset+"/download.mp4" {
		t.Fatalf("asset of a READY with its download = %+v, %v", a, err)
	}
	// A failed job takes no download.
	bad, _ := eventtest.Job("download-failed")
	apply(eventtest.Playable(bad), 1, true)
	apply(eventtest.Event(bad, failed, 0), 1, true)
	apply(eventtest.Download(bad), 1, false)
}
