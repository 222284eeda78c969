package catalog_test

import (
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/grafov/m3u8"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/policy"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// The rendition syntax the catalog promises (catalog/event.go), restated:
// names are URI path segments, codecs a quoted playlist attribute.
var (
	fuzzURLSafeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	fuzzCodecs      = regexp.MustCompile(`^[A-Za-z0-9._+-]+(,[A-Za-z0-9._+-]+)*$`)
)

// fuzzEvents are job events as kiln's producers publish them (ingest's
// QUEUED, the workers' PROBING with media and plan, the packager's READY,
// partial READY and FAILED, a CANCELED), then broken copies of them.
func fuzzEvents() []*kilnv1.JobEvent {
	jobID, assetID := jobid.FromObject("kiln-sources", "uploads/clip.mp4", `"5d41402abc4b2a76b9719d911017c592"`)
	at := func(ev *kilnv1.JobEvent) *kilnv1.JobEvent {
		ev.Time = timestamppb.New(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
		return ev
	}
	queued := at(jobevent.New(jobID, assetID, 1, kilnv1.JobState_JOB_STATE_QUEUED, "queued"))
	queued.Source = &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "uploads/clip.mp4", Etag: "5d41402abc4b2a76b9719d911017c592", Size: 1234, ContentType: "video/mp4"}
	queued.Preset, queued.PlaybackPolicy, queued.WebhookUrl = "default", policy.Signed, "https://example.com/hook"

	media := &kilnv1.MediaInfo{Format: "mov,mp4,m4a,3gp,3g2,mj2", DurationSeconds: 7, SizeBytes: 737_000, BitRate: 842_000,
		Video: &kilnv1.VideoStream{Codec: "h264", Width: 320, Height: 180, DisplayWidth: 320, DisplayHeight: 180, FrameRate: 30, NominalFrameRate: 30,
			PixFmt: "yuv420p", BitDepth: 8, SampleAspectRatio: "1:1", FieldOrder: "progressive"},
		Audio:        &kilnv1.AudioStream{Codec: "aac", Profile: "LC", Channels: 1, ChannelLayout: "mono", SampleRate: 48000, BitRate: 69_000},
		VideoStreams: 1, AudioStreams: 1}
	plan := &kilnv1.Plan{Preset: "default", FrameRate: 30, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000,
		Rungs:         []*kilnv1.Rung{{Name: "180p", Width: 320, Height: 180, VideoBitRate: 200_000}},
		Normalisation: &kilnv1.Normalisation{}, Decisions: []string{"video: smaller than the lowest rung: one rendition at the source size"}}
	probing := at(jobevent.New(jobID, assetID, 1, kilnv1.JobState_JOB_STATE_PROBING, "probed"))
	probing.Media, probing.Plan = media, plan

	transcoding := at(jobevent.New(jobID, assetID, 2, kilnv1.JobState_JOB_STATE_TRANSCODING, "transcoding.42"))
	transcoding.Progress = 0.42

	prefix := layout.AssetPrefix(assetID)
	rend := func(name string, w, h int32, bw int64) *kilnv1.Rendition {
		return &kilnv1.Rendition{Name: name, Width: w, Height: h, FrameRate: 30, Bandwidth: bw, AverageBandwidth: bw * 9 / 10,
			Codecs: "avc1.64000d,mp4a.40.2", PlaylistKey: layout.PlaylistKey(assetID, name), EncodedKey: prefix + "enc/" + name + ".mp4"}
	}
	ready := at(jobevent.New(jobID, assetID, 1, kilnv1.JobState_JOB_STATE_READY, "ready"))
	ready.Media, ready.Plan = media, plan
	ready.Outputs = &kilnv1.AssetOutputs{Bucket: "kiln-outputs", Prefix: prefix,
		Renditions:       []*kilnv1.Rendition{rend("180p", 320, 180, 330_000), rend("144p", 256, 144, 250_000)},
		FailedRenditions: []*kilnv1.FailedRendition{{Name: "240p", EncodedKey: prefix + "enc/240p.mp4", Error: &kilnv1.JobError{Code: failure.PackageFailed, Message: "segmenter exited 1"}}},
		Mp4Key:           prefix + "enc/180p.mp4", PosterKey: prefix + "poster.jpg", DurationSeconds: 7}
	partial := at(jobevent.New(jobID, assetID, 1, kilnv1.JobState_JOB_STATE_READY, "rendition.240p.1"))
	partial.Outputs = &kilnv1.AssetOutputs{Bucket: "kiln-outputs", Prefix: prefix, Partial: true,
		Renditions: []*kilnv1.Rendition{rend("240p", 426, 240, 500_000)}}
	failed := at(jobevent.Failed(jobID, assetID, 1, failure.InvalidMedia, "the file is not a readable video or audio file"))
	canceled := at(jobevent.New(jobID, assetID, 1, kilnv1.JobState_JOB_STATE_CANCELED, "canceled"))

	evs := []*kilnv1.JobEvent{queued, probing, transcoding, ready, partial, failed, canceled}
	broken := func(ev *kilnv1.JobEvent, mod func(*kilnv1.JobEvent)) {
		c := proto.Clone(ev).(*kilnv1.JobEvent)
		mod(c)
		evs = append(evs, c)
	}
	broken(ready, func(e *kilnv1.JobEvent) { e.Outputs.Renditions[0].Name = "../180p" })
	broken(ready, func(e *kilnv1.JobEvent) { e.Outputs.Renditions[1].Name = "180p" })
	broken(ready, func(e *kilnv1.JobEvent) { e.Outputs.FailedRenditions[0].Name = "144p" })
	broken(ready, func(e *kilnv1.JobEvent) { e.Outputs.Renditions[0].Codecs = `avc1.64000d",mp4a.40.2` })
	broken(ready, func(e *kilnv1.JobEvent) { e.Outputs.Renditions[0].Name = "180p\n#EXT-X-ENDLIST" })
	broken(ready, func(e *kilnv1.JobEvent) { e.Outputs.Renditions[0].FrameRate = math.Inf(1) })
	broken(ready, func(e *kilnv1.JobEvent) { e.Outputs.Renditions[0].Bandwidth = 0 })
	broken(ready, func(e *kilnv1.JobEvent) { e.Outputs = nil })
	broken(partial, func(e *kilnv1.JobEvent) { e.Outputs.Renditions = nil })
	broken(transcoding, func(e *kilnv1.JobEvent) {
		e.Progress, e.Attempt, e.Time = math.NaN(), -3, &timestamppb.Timestamp{Seconds: math.MaxInt64}
	})
	broken(transcoding, func(e *kilnv1.JobEvent) { e.State = 99 })
	broken(transcoding, func(e *kilnv1.JobEvent) { e.AssetId = "ast_aaaaaaaaaaaaaaaaaaaaaaaaaa" })
	broken(transcoding, func(e *kilnv1.JobEvent) { e.JobId = "job_AAAAAAAAAAAAAAAAAAAAAAAAAA" })
	broken(failed, func(e *kilnv1.JobEvent) { e.Error = nil })
	return evs
}

// FuzzFactOf decodes arbitrary bytes as a JobEvent (what the catalog's bus
// handler does with a message on kiln.jobs.*) and validates it with FactOf.
// Seeds: the events of every state as kiln's producers build them, and
// broken copies (path-traversing, duplicate or multi-line rendition names,
// a quote in CODECS, NaN progress, an unknown state, a foreign asset).
//
// Properties: no panic; a refusal wraps ErrInvalidEvent and returns no
// fact; an accepted fact has a valid job id and its own asset id, an
// attempt ≥ 1, a progress in [0, 1] (1 when ready), a policy only when
// queued, an error code when failed or canceled, the event's time when it
// has a valid one, outputs only when ready; and every rendition name it
// accepts is URL-safe and unique, every CODECS attribute-safe, every
// rendition has a playlist key and a bandwidth, so the master playlist the
// catalog renders from it has exactly one variant per rendition, at
// "<name>/index.m3u8", with its CODECS unchanged.
func FuzzFactOf(f *testing.F) {
	for _, ev := range fuzzEvents() {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev kilnv1.JobEvent
		if err := proto.Unmarshal(data, &ev); err != nil {
			return
		}
		fact, err := catalog.FactOf(&ev, now)
		if err != nil {
			if !errors.Is(err, catalog.ErrInvalidEvent) || fact != nil {
				t.Fatalf("refusal %v (fact %v) does not wrap ErrInvalidEvent with no fact", err, fact)
			}
			return
		}
		checkFact(t, &ev, fact, now)
	})
}

func checkFact(t *testing.T, ev *kilnv1.JobEvent, f *catalog.Fact, now time.Time) {
	t.Helper()
	bad := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("accepted event: "+format+"\nevent: %v", append(args, ev)...)
	}
	if !jobid.ValidJob(f.JobID) || f.AssetID != jobid.AssetOf(f.JobID) || !jobid.ValidAsset(f.AssetID) {
		bad("job %q, asset %q", f.JobID, f.AssetID)
	}
	if a := ev.GetAssetId(); a != "" && a != f.AssetID {
		bad("event asset %q, fact asset %q", a, f.AssetID)
	}
	if f.Attempt < 1 {
		bad("attempt %d", f.Attempt)
	}
	if !(f.Progress >= 0 && f.Progress <= 1) || (f.State == catalog.StateReady && f.Progress != 1) {
		bad("progress %v in state %s", f.Progress, f.State)
	}
	switch {
	case f.State == catalog.StateQueued && f.Policy != policy.Public && f.Policy != policy.Signed:
		bad("queued with policy %q", f.Policy)
	case f.State != catalog.StateQueued && f.Policy != "":
		bad("policy %q in state %s", f.Policy, f.State)
	case (f.State == catalog.StateFailed || f.State == catalog.StateCanceled) && f.ErrorCode == "":
		bad("%s without an error code", f.State)
	}
	wantAt := now
	if ts := ev.GetTime(); ts.IsValid() {
		wantAt = ts.AsTime()
	}
	if !f.At.Equal(wantAt) {
		bad("at %v, want %v", f.At, wantAt)
	}
	if f.State != catalog.StateReady {
		if f.Outputs != nil {
			bad("outputs in state %s", f.State)
		}
		return
	}
	o := f.Outputs
	if o == nil {
		bad("ready without outputs")
	}
	if !o.GetPartial() && (o.GetBucket() == "" || len(o.GetRenditions()) == 0) {
		bad("full ready without bucket or renditions")
	}
	if len(o.GetRenditions())+len(o.GetFailedRenditions()) == 0 {
		bad("ready without any rendition")
	}
	seen := map[string]bool{}
	for _, r := range o.GetFailedRenditions() {
		if !fuzzURLSafeName.MatchString(r.GetName()) || seen[r.GetName()] {
			bad("failed rendition name %q not URL-safe or not unique", r.GetName())
		}
		seen[r.GetName()] = true
	}
	var variants []playlist.Variant
	for _, r := range o.GetRenditions() {
		switch {
		case !fuzzURLSafeName.MatchString(r.GetName()) || seen[r.GetName()]:
			bad("rendition name %q not URL-safe or not unique", r.GetName())
		case !fuzzCodecs.MatchString(r.GetCodecs()):
			bad("rendition %s: codecs %q", r.GetName(), r.GetCodecs())
		case r.GetPlaylistKey() == "" || r.GetBandwidth() <= 0:
			bad("rendition %s without playlist key or bandwidth", r.GetName())
		}
		seen[r.GetName()] = true
		// As catalog.Asset.variants maps stored renditions.
		variants = append(variants, playlist.Variant{Name: r.GetName(), Width: int(r.GetWidth()), Height: int(r.GetHeight()),
			FrameRate: r.GetFrameRate(), Bandwidth: r.GetBandwidth(), AverageBandwidth: r.GetAverageBandwidth(), Codecs: r.GetCodecs()})
	}
	checkMasterStructure(t, playlist.Master(variants), o.GetRenditions())
}

// checkMasterStructure: one EXT-X-STREAM-INF per rendition, each followed
// by its "<name>/index.m3u8", CODECS as given, nothing else.
func checkMasterStructure(t *testing.T, master []byte, rs []*kilnv1.Rendition) {
	t.Helper()
	codecs := map[string]string{}
	for _, r := range rs {
		codecs[r.GetName()+"/index.m3u8"] = r.GetCodecs()
	}
	lines := strings.Split(strings.TrimSuffix(string(master), "\n"), "\n")
	if len(lines) != 3+2*len(rs) {
		t.Fatalf("master playlist of %d renditions has %d lines:\n%s", len(rs), len(lines), master)
	}
	for i := 3; i < len(lines); i += 2 {
		attrs, ok := strings.CutPrefix(lines[i], "#EXT-X-STREAM-INF:")
		want, known := codecs[lines[i+1]]
		if !ok || !known {
			t.Fatalf("master playlist line %d-%d is not a variant of a rendition:\n%s", i, i+1, master)
		}
		if got := m3u8.DecodeAttributeList(attrs)["CODECS"]; got != want {
			t.Fatalf("variant %s: CODECS %q, want %q:\n%s", lines[i+1], got, want, master)
		}
		delete(codecs, lines[i+1])
	}
}
