package catalog

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/internal/jobid"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newStore(t *testing.T) *Store {
	t.Helper()
	return openStore(t, filepath.Join(t.TempDir(), "catalog.db"))
}

// testJob returns the ids of a job over source object key.
func testJob(key string) (jobID, assetID string) {
	return jobid.FromObject("sources", key, "etag-"+key)
}

// event builds a JobEvent of job for st, carrying what a real producer of
// that state would carry.
func event(jobID string, st kilnv1.JobState, progress float64) *kilnv1.JobEvent {
	ev := &kilnv1.JobEvent{
		EventId:  jobID + "/" + st.String(),
		JobId:    jobID,
		AssetId:  jobid.AssetOf(jobID),
		State:    st,
		Time:     timestamppb.New(t0.Add(time.Duration(st) * time.Minute)),
		Progress: progress,
	}
	switch st {
	case kilnv1.JobState_JOB_STATE_QUEUED:
		ev.Source = &kilnv1.ObjectRef{Bucket: "sources", Key: "in/" + jobID + ".mov", Etag: "e1", Size: 1234}
		ev.Preset = "default"
	case kilnv1.JobState_JOB_STATE_PROBING:
		ev.Media = testMedia()
		ev.Plan = testPlan()
	case kilnv1.JobState_JOB_STATE_READY:
		ev.Outputs = testOutputs(jobid.AssetOf(jobID))
	case kilnv1.JobState_JOB_STATE_FAILED:
		ev.Error = &kilnv1.JobError{Code: "invalid_media", Message: "no decodable stream"}
	}
	return ev
}

func testMedia() *kilnv1.MediaInfo {
	return &kilnv1.MediaInfo{Format: "mov,mp4", DurationSeconds: 12.5, SizeBytes: 1234, BitRate: 800_000,
		Video: &kilnv1.VideoStream{Codec: "h264", Width: 1280, Height: 720, FrameRate: 29.97},
		Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 2, SampleRate: 48000}}
}

func testPlan() *kilnv1.Plan {
	return &kilnv1.Plan{FrameRate: 29.97, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000,
		Rungs: []*kilnv1.Rung{{Name: "720p", Width: 1280, Height: 720, VideoBitRate: 3_000_000},
			{Name: "360p", Width: 640, Height: 360, VideoBitRate: 800_000}}}
}

func testOutputs(assetID string) *kilnv1.AssetOutputs {
	p := "assets/" + assetID
	return &kilnv1.AssetOutputs{
		Bucket: "outputs", Prefix: p + "/",
		Mp4Key: p + "/download.mp4", PosterKey: p + "/poster.jpg",
		DurationSeconds: 12.48,
		Renditions: []*kilnv1.Rendition{ // deliberately not in bandwidth order
			{Name: "720p", Width: 1280, Height: 720, FrameRate: 29.97, Bandwidth: 3_400_000, AverageBandwidth: 3_100_000,
				Codecs: "avc1.64001f,mp4a.40.2", PlaylistKey: p + "/hls/720p/index.m3u8"},
			{Name: "360p", Width: 640, Height: 360, FrameRate: 29.97, Bandwidth: 950_000, AverageBandwidth: 900_000,
				Codecs: "avc1.64001e,mp4a.40.2", PlaylistKey: p + "/hls/360p/index.m3u8"},
		},
	}
}

const (
	queued      = kilnv1.JobState_JOB_STATE_QUEUED
	probing     = kilnv1.JobState_JOB_STATE_PROBING
	transcoding = kilnv1.JobState_JOB_STATE_TRANSCODING
	packaging   = kilnv1.JobState_JOB_STATE_PACKAGING
	ready       = kilnv1.JobState_JOB_STATE_READY
	failed      = kilnv1.JobState_JOB_STATE_FAILED
)

func TestApplyTransitions(t *testing.T) {
	jobID, _ := testJob("a")
	type step struct {
		ev       *kilnv1.JobEvent
		changed  bool
		state    State
		progress float64
	}
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, j *Job)
	}{
		{
			name: "happy path",
			steps: []step{
				{event(jobID, queued, 0), true, StateQueued, 0},
				{event(jobID, probing, 0), true, StateProbing, 0},
				{event(jobID, transcoding, 0.1), true, StateTranscoding, 0.1},
				{event(jobID, packaging, 0), true, StatePackaging, 0},
				{event(jobID, ready, 0), true, StateReady, 1},
			},
			check: func(t *testing.T, j *Job) {
				for _, st := range []State{StateQueued, StateProbing, StateTranscoding, StatePackaging, StateReady} {
					if j.Timestamps[st].IsZero() {
						t.Errorf("no %s timestamp", st)
					}
				}
				if want := t0.Add(5 * time.Minute); !j.Timestamps[StateReady].Equal(want) {
					t.Errorf("ready at %v, want event time %v", j.Timestamps[StateReady], want)
				}
				if !proto.Equal(j.Media, testMedia()) || !proto.Equal(j.Plan, testPlan()) {
					t.Errorf("media/plan = %v / %v", j.Media, j.Plan)
				}
				if j.Source.Key != "in/"+jobID+".mov" || j.Source.Size != 1234 || j.Preset != "default" {
					t.Errorf("source = %+v, preset %q", j.Source, j.Preset)
				}
			},
		},
		{
			name: "stale event ignored",
			steps: []step{
				{event(jobID, queued, 0), true, StateQueued, 0},
				{event(jobID, transcoding, 0.2), true, StateTranscoding, 0.2},
				{event(jobID, probing, 0), false, StateTranscoding, 0.2},
				{event(jobID, queued, 0), false, StateTranscoding, 0.2},
			},
		},
		{
			name: "duplicate ready is a no-op",
			steps: []step{
				{event(jobID, ready, 0), true, StateReady, 1},
				{event(jobID, ready, 0), false, StateReady, 1},
				{event(jobID, packaging, 0), false, StateReady, 1},
				{event(jobID, failed, 0), false, StateReady, 1},
			},
		},
		{
			name: "failed after transcoding, then everything ignored",
			steps: []step{
				{event(jobID, queued, 0), true, StateQueued, 0},
				{event(jobID, transcoding, 0.4), true, StateTranscoding, 0.4},
				{event(jobID, failed, 0), true, StateFailed, 0},
				{event(jobID, packaging, 0), false, StateFailed, 0},
				{event(jobID, ready, 0), false, StateFailed, 0},
				{event(jobID, failed, 0), false, StateFailed, 0},
			},
			check: func(t *testing.T, j *Job) {
				if j.ErrorCode != "invalid_media" || j.ErrorMessage == "" {
					t.Errorf("error = %q %q", j.ErrorCode, j.ErrorMessage)
				}
				if _, ok := j.Timestamps[StateReady]; ok {
					t.Error("ready timestamp on a failed job")
				}
			},
		},
		{
			name: "progress within a state only rises",
			steps: []step{
				{event(jobID, transcoding, 0.1), true, StateTranscoding, 0.1},
				{event(jobID, transcoding, 0.5), true, StateTranscoding, 0.5},
				{event(jobID, transcoding, 0.3), false, StateTranscoding, 0.5},
				{event(jobID, transcoding, 0.5), false, StateTranscoding, 0.5},
				{event(jobID, transcoding, 7), true, StateTranscoding, 1}, // clamped
			},
		},
		{
			name: "event before QUEUED creates the row; late QUEUED fills the source",
			steps: []step{
				{event(jobID, probing, 0), true, StateProbing, 0},
				{event(jobID, queued, 0), false, StateProbing, 0},
			},
			check: func(t *testing.T, j *Job) {
				if j.Source.Bucket != "sources" || j.Preset != "default" || j.Media == nil {
					t.Errorf("source = %+v, preset %q, media %v", j.Source, j.Preset, j.Media)
				}
				if _, ok := j.Timestamps[StateQueued]; ok {
					t.Error("queued timestamp recorded from a stale event")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
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

func TestApplyReadyWritesAsset(t *testing.T) {
	s := newStore(t)
	jobID, assetID := testJob("a")
	if a, err := s.Asset(t.Context(), assetID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Asset before any event = %v, %v; want ErrNotFound", a, err)
	}
	for _, st := range []kilnv1.JobState{queued, probing} {
		if _, err := s.Apply(t.Context(), event(jobID, st, 0)); err != nil {
			t.Fatal(err)
		}
	}
	a, err := s.Asset(t.Context(), assetID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Ready() || a.State != StateProbing || a.JobID != jobID || len(a.Renditions) != 0 {
		t.Fatalf("asset of a probing job = %+v", a)
	}
	if _, err := s.Apply(t.Context(), event(jobID, ready, 0)); err != nil {
		t.Fatal(err)
	}
	if a, err = s.Asset(t.Context(), assetID); err != nil {
		t.Fatal(err)
	}
	if !a.Ready() || a.Bucket != "outputs" || a.MP4Key == "" || a.PosterKey == "" || a.DurationSeconds != 12.48 {
		t.Fatalf("ready asset = %+v", a)
	}
	if len(a.Renditions) != 2 || a.Renditions[0].Name != "360p" || a.Renditions[1].Name != "720p" {
		t.Fatalf("renditions not ordered by bandwidth: %+v", a.Renditions)
	}
	if r, ok := a.Rendition("720p"); !ok || r.Codecs != "avc1.64001f,mp4a.40.2" || r.Width != 1280 || r.AverageBandwidth != 3_100_000 {
		t.Fatalf("720p = %+v, %v", r, ok)
	}
}

func TestApplyRejectsInvalidEvents(t *testing.T) {
	jobID, _ := testJob("a")
	otherJob, _ := testJob("b")
	badOutputs := func(mut func(o *kilnv1.AssetOutputs)) *kilnv1.JobEvent {
		ev := event(jobID, ready, 0)
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
	s := newStore(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if changed, err := s.Apply(t.Context(), tt.ev); !errors.Is(err, ErrInvalidEvent) || changed {
				t.Fatalf("Apply = %v, %v; want ErrInvalidEvent", changed, err)
			}
		})
	}
	if _, err := s.Job(t.Context(), jobID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an invalid event left a job behind: %v", err)
	}
}

func TestStoreSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	jobID, assetID := testJob("a")
	failedJob, _ := testJob("b")

	s, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []kilnv1.JobState{queued, probing, transcoding, packaging, ready} {
		if _, err := s.Apply(t.Context(), event(jobID, st, 0.5)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Apply(t.Context(), event(failedJob, failed, 0)); err != nil {
		t.Fatal(err)
	}
	wantJob, err := s.Job(t.Context(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	wantAsset, err := s.Asset(t.Context(), assetID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path) // migrations must be idempotent
	var mode string
	var fk, version int
	if err := s.db.QueryRowContext(t.Context(), `SELECT (SELECT journal_mode FROM pragma_journal_mode),
			(SELECT foreign_keys FROM pragma_foreign_keys), (SELECT MAX(version) FROM schema_version)`).
		Scan(&mode, &fk, &version); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" || fk != 1 || version != len(migrations) {
		t.Errorf("journal_mode=%s foreign_keys=%d schema_version=%d", mode, fk, version)
	}
	gotJob, err := s.Job(t.Context(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	if !jobsEqual(gotJob, wantJob) {
		t.Errorf("job after restart = %+v, want %+v", gotJob, wantJob)
	}
	gotAsset, err := s.Asset(t.Context(), assetID)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotAsset.Renditions) != 2 || gotAsset.Renditions[0] != wantAsset.Renditions[0] ||
		gotAsset.MP4Key != wantAsset.MP4Key || !gotAsset.ReadyAt.Equal(wantAsset.ReadyAt) {
		t.Errorf("asset after restart = %+v, want %+v", gotAsset, wantAsset)
	}
	if j, err := s.Job(t.Context(), failedJob); err != nil || j.State != StateFailed || j.ErrorCode != "invalid_media" {
		t.Errorf("failed job after restart = %+v, %v", j, err)
	}
	if changed, err := s.Apply(t.Context(), event(jobID, ready, 0)); err != nil || changed {
		t.Errorf("redelivered READY after restart: changed=%v err=%v", changed, err)
	}
}

func jobsEqual(a, b *Job) bool {
	if a.ID != b.ID || a.AssetID != b.AssetID || a.State != b.State || a.Progress != b.Progress || a.PlaybackPolicy != b.PlaybackPolicy ||
		a.Source != b.Source || a.Preset != b.Preset || !a.CreatedAt.Equal(b.CreatedAt) ||
		!a.UpdatedAt.Equal(b.UpdatedAt) || !proto.Equal(a.Media, b.Media) || !proto.Equal(a.Plan, b.Plan) ||
		len(a.Timestamps) != len(b.Timestamps) {
		return false
	}
	for k, v := range a.Timestamps {
		if !v.Equal(b.Timestamps[k]) {
			return false
		}
	}
	return true
}

func TestNotFound(t *testing.T) {
	s := newStore(t)
	jobID, assetID := testJob("missing")
	if _, err := s.Job(t.Context(), jobID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Job: %v, want ErrNotFound", err)
	}
	if _, err := s.Asset(t.Context(), assetID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Asset: %v, want ErrNotFound", err)
	}
}

func TestPlaybackPolicy(t *testing.T) {
	jobID, assetID := testJob("policy")
	queuedWith := func(policy string) *kilnv1.JobEvent {
		ev := event(jobID, queued, 0)
		ev.PlaybackPolicy = policy
		return ev
	}
	probingWith := func(policy string) *kilnv1.JobEvent { // policies on other events are ignored
		ev := event(jobID, probing, 0)
		ev.PlaybackPolicy = policy
		return ev
	}
	tests := []struct {
		name   string
		events []*kilnv1.JobEvent
		want   string
	}{
		{"signed", []*kilnv1.JobEvent{queuedWith("signed"), event(jobID, ready, 0)}, PolicySigned},
		{"public", []*kilnv1.JobEvent{queuedWith("public"), event(jobID, ready, 0)}, PolicyPublic},
		{"producer without policies", []*kilnv1.JobEvent{queuedWith(""), event(jobID, ready, 0)}, PolicyPublic},
		{"unknown value is public, as ingest decides", []*kilnv1.JobEvent{queuedWith("SIGNED?")}, PolicyPublic},
		{"not queued yet fails closed", []*kilnv1.JobEvent{event(jobID, probing, 0), event(jobID, ready, 0)}, PolicySigned},
		{"only QUEUED carries it", []*kilnv1.JobEvent{probingWith("public"), event(jobID, ready, 0)}, PolicySigned},
		{"late QUEUED fills it in", []*kilnv1.JobEvent{event(jobID, probing, 0), event(jobID, ready, 0), queuedWith("public")}, PolicyPublic},
		{"late signed QUEUED", []*kilnv1.JobEvent{event(jobID, transcoding, 0.5), queuedWith("signed")}, PolicySigned},
		{"never contradicted", []*kilnv1.JobEvent{queuedWith("signed"), queuedWith("public"), event(jobID, ready, 0)}, PolicySigned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			for _, ev := range tt.events {
				if _, err := s.Apply(t.Context(), ev); err != nil {
					t.Fatal(err)
				}
			}
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

// TestMigratePlaybackPolicy: jobs recorded before the playback_policy
// column existed were public.
func TestMigratePlaybackPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	all := migrations
	migrations = all[:1]
	s, err := OpenSQLite(t.Context(), path)
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	jobID, assetID := testJob("old")
	if _, err := s.db.ExecContext(t.Context(), `INSERT INTO jobs (id, asset_id, state, created_at, updated_at)
		VALUES (?, ?, 'queued', ?, ?)`, jobID, assetID, fmtTime(t0), fmtTime(t0)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	if j, err := s.Job(t.Context(), jobID); err != nil || j.PlaybackPolicy != PolicyPublic {
		t.Fatalf("old job after migration: %+v, %v", j, err)
	}
	if a, err := s.Asset(t.Context(), assetID); err != nil || a.PlaybackPolicy != PolicyPublic {
		t.Fatalf("old asset after migration: %+v, %v", a, err)
	}
}
