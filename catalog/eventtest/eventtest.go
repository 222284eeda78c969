// Package eventtest holds the job events the catalog's tests apply: a job
// over a source object, the event of each state as a real producer would
// send it, and READY outputs whose encoded keys deliberately differ from the
// workers' layout (so a test proves the catalog uses the stored key). It
// imports nothing of the catalog, so the catalog's own tests and the store
// contract suite (storetest) share it.
package eventtest

import (
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/jobid"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// T0 is the time of the fixtures' events.
var T0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// The buckets of the fixtures: a catalog that applies them through its
// Service is configured with these (catalog.Config.SourcesBucket and
// OutputsBucket).
const (
	SourcesBucket = "sources"
	OutputsBucket = "outputs"
)

// names remembers the name of each job Job returned.
var names sync.Map // job id → name

// Job returns the ids of a job over the source object of name (Source):
// derived from it, as ingest derives them, so its QUEUED event passes the
// catalog's checks (catalog.CheckEvent).
func Job(name string) (jobID, assetID string) {
	src := sourceOf(name)
	jobID, assetID = jobid.FromObject(src.Bucket, src.Key, src.Etag)
	names.Store(jobID, name)
	return jobID, assetID
}

// Source is the source object of a job: in/<name>.mov in SourcesBucket,
// ETag "e1", 1234 bytes for a job of Job(name); for another job id,
// in/<job id>.mov (the job id is then not the one derived from it).
func Source(jobID string) *kilnv1.ObjectRef {
	if name, ok := names.Load(jobID); ok {
		return sourceOf(name.(string))
	}
	return &kilnv1.ObjectRef{Bucket: SourcesBucket, Key: "in/" + jobID + ".mov", Etag: "e1", Size: 1234}
}

func sourceOf(name string) *kilnv1.ObjectRef {
	return &kilnv1.ObjectRef{Bucket: SourcesBucket, Key: "in/" + name + ".mov", Etag: "e1", Size: 1234}
}

// Event builds a JobEvent of job for st, carrying what a real producer of
// that state would carry.
func Event(jobID string, st kilnv1.JobState, progress float64) *kilnv1.JobEvent {
	ev := &kilnv1.JobEvent{
		EventId:  jobID + "/" + st.String(),
		JobId:    jobID,
		AssetId:  jobid.AssetOf(jobID),
		State:    st,
		Time:     timestamppb.New(T0.Add(time.Duration(st) * time.Minute)),
		Progress: progress,
	}
	switch st {
	case kilnv1.JobState_JOB_STATE_QUEUED:
		ev.Source = Source(jobID)
		ev.Preset = "default"
	case kilnv1.JobState_JOB_STATE_PROBING:
		ev.Media = Media()
		ev.Plan = Plan()
	case kilnv1.JobState_JOB_STATE_READY:
		ev.Outputs = Outputs(jobid.AssetOf(jobID))
	case kilnv1.JobState_JOB_STATE_FAILED:
		ev.Error = &kilnv1.JobError{Code: failure.InvalidMedia, Message: "no decodable stream"}
	}
	return ev
}

// Media is the probe result of the fixtures.
func Media() *kilnv1.MediaInfo {
	return &kilnv1.MediaInfo{Format: "mov,mp4", DurationSeconds: 12.5, SizeBytes: 1234, BitRate: 800_000,
		Video: &kilnv1.VideoStream{Codec: "h264", Width: 1280, Height: 720, FrameRate: 29.97},
		Audio: &kilnv1.AudioStream{Codec: "aac", Channels: 2, SampleRate: 48000}}
}

// Plan is the ladder of the fixtures: 720p and 360p.
func Plan() *kilnv1.Plan {
	return &kilnv1.Plan{FrameRate: 29.97, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000,
		Rungs: []*kilnv1.Rung{{Name: "720p", Width: 1280, Height: 720, VideoBitRate: 3_000_000},
			{Name: "360p", Width: 640, Height: 360, VideoBitRate: 800_000}}}
}

// Outputs are a READY's outputs: 720p and 360p, deliberately not in
// bandwidth order.
func Outputs(assetID string) *kilnv1.AssetOutputs {
	p := "assets/" + assetID
	return &kilnv1.AssetOutputs{
		Bucket: OutputsBucket, Prefix: p + "/",
		Mp4Key: p + "/download.mp4", PosterKey: p + "/poster.jpg",
		DurationSeconds: 12.48,
		Renditions: []*kilnv1.Rendition{
			{Name: "720p", Width: 1280, Height: 720, FrameRate: 29.97, Bandwidth: 3_400_000, AverageBandwidth: 3_100_000,
				Codecs: "avc1.64001f,mp4a.40.2", PlaylistKey: p + "/hls/720p/index.m3u8", EncodedKey: p + "/enc/720p.mp4"},
			{Name: "360p", Width: 640, Height: 360, FrameRate: 29.97, Bandwidth: 950_000, AverageBandwidth: 900_000,
				Codecs: "avc1.64001e,mp4a.40.2", PlaylistKey: p + "/hls/360p/index.m3u8", EncodedKey: p + "/enc/360p.mp4"},
		},
	}
}

// ReadyWithFailure is a READY event whose 720p rendition failed.
func ReadyWithFailure(jobID string) *kilnv1.JobEvent {
	ev := Event(jobID, kilnv1.JobState_JOB_STATE_READY, 1)
	o := ev.Outputs
	enc := o.Renditions[0].EncodedKey
	o.Renditions = o.Renditions[1:] // 360p only
	o.FailedRenditions = []*kilnv1.FailedRendition{{Name: "720p", EncodedKey: enc,
		Error: &kilnv1.JobError{Code: "packaging_failed", Message: "segmenter exited 1"}}}
	return ev
}

// PartialReady is the partial READY event of retry n of the 720p rendition,
// which succeeded.
func PartialReady(jobID string, n string) *kilnv1.JobEvent {
	ev := Event(jobID, kilnv1.JobState_JOB_STATE_READY, 1)
	ev.EventId += "/720p.r" + n
	full := ev.Outputs
	ev.Outputs = &kilnv1.AssetOutputs{Bucket: full.Bucket, Prefix: full.Prefix, Partial: true,
		Renditions: full.Renditions[:1]} // 720p
	return ev
}

// Playable is the playable event of a job (state TRANSCODING): what a
// transcode that encodes straight to segments publishes once the first
// segment of every rendition and of the audio is stored. Video renditions
// carry only their video codec, the audio is a rendition of its own;
// bandwidths are the plan's estimates, the duration the expected one, and
// there is no MP4 download (nor encoded key) yet.
func Playable(jobID string) *kilnv1.JobEvent {
	ev := Event(jobID, kilnv1.JobState_JOB_STATE_TRANSCODING, 0.2)
	ev.EventId += "/playable"
	ev.Playable = true
	p := "assets/" + jobid.AssetOf(jobID)
	ev.Outputs = &kilnv1.AssetOutputs{
		Bucket: OutputsBucket, Prefix: p + "/", DurationSeconds: 12.5,
		Renditions: []*kilnv1.Rendition{
			{Name: "720p", Width: 1280, Height: 720, FrameRate: 29.97, Bandwidth: 3_300_000, AverageBandwidth: 3_000_000,
				Codecs: "avc1.64001f", PlaylistKey: p + "/hls/720p/index.m3u8"},
			{Name: "360p", Width: 640, Height: 360, FrameRate: 29.97, Bandwidth: 880_000, AverageBandwidth: 800_000,
				Codecs: "avc1.64001e", PlaylistKey: p + "/hls/360p/index.m3u8"},
			{Name: "audio", Bandwidth: 140_000, AverageBandwidth: 128_000,
				Codecs: "mp4a.40.2", PlaylistKey: p + "/hls/audio/index.m3u8"},
		},
	}
	return ev
}

// Download is the partial READY announcing the MP4 download, built after
// READY from the top rendition's segments and the audio's.
func Download(jobID string) *kilnv1.JobEvent {
	ev := Event(jobID, kilnv1.JobState_JOB_STATE_READY, 1)
	ev.EventId += "/mp4"
	p := "assets/" + jobid.AssetOf(jobID)
	ev.Outputs = &kilnv1.AssetOutputs{Bucket: OutputsBucket, Prefix: p + "/", Partial: true, Mp4Key: p + "/mp4/720p.mp4"}
	return ev
}
