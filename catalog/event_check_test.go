package catalog_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

var checkBuckets = catalog.Buckets{Sources: "kiln-sources", Outputs: "kiln-outputs"}

// honest returns the QUEUED and READY events ingest and the packager
// publish for one upload, keys from the layout.
func honest() (queued, ready *kilnv1.JobEvent) {
	src := &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "uploads/0123456789abcdef01234567/clip.mp4", Etag: "5d41402abc4b2a76b9719d911017c592", Size: 1234}
	jobID, assetID := jobid.FromObject(src.Bucket, src.Key, src.Etag)
	queued = jobevent.New(jobID, assetID, 1, kilnv1.JobState_JOB_STATE_QUEUED, "queued")
	queued.Source = src
	ready = jobevent.New(jobID, assetID, 1, kilnv1.JobState_JOB_STATE_READY, "ready")
	thumbs := layout.ThumbnailDir(assetID)
	ready.Outputs = &kilnv1.AssetOutputs{
		Bucket: "kiln-outputs", Prefix: layout.AssetPrefix(assetID),
		Renditions: []*kilnv1.Rendition{{Name: "360p", Width: 640, Height: 360, Bandwidth: 900_000, Codecs: "avc1.64001e,mp4a.40.2",
			PlaylistKey: layout.PlaylistKey(assetID, "360p"), EncodedKey: layout.EncodedKey(assetID, "360p")}},
		FailedRenditions: []*kilnv1.FailedRendition{{Name: "720p", EncodedKey: layout.EncodedKey(assetID, "720p")}},
		Mp4Key:           layout.EncodedKey(assetID, "360p"),
		PosterKey:        layout.PosterKey(assetID),
		Thumbnails: &kilnv1.Thumbnails{PosterKey: layout.PosterKey(assetID), Keys: []string{thumbs + "/t_00001.jpg"},
			SpriteKey: thumbs + "/sprite.jpg", StoryboardKey: thumbs + "/storyboard.vtt"},
		DurationSeconds: 7,
	}
	return queued, ready
}

func TestCheckEventAcceptsWhatProducersSend(t *testing.T) {
	queued, ready := honest()
	partial := proto.Clone(ready).(*kilnv1.JobEvent)
	partial.Outputs = &kilnv1.AssetOutputs{Bucket: ready.Outputs.Bucket, Prefix: ready.Outputs.Prefix, Partial: true,
		Renditions: ready.Outputs.Renditions}
	probing := jobevent.New(queued.JobId, queued.AssetId, 1, kilnv1.JobState_JOB_STATE_PROBING, "probed")
	failed := jobevent.Failed(queued.JobId, queued.AssetId, 1, "invalid_media", "no stream")
	for _, ev := range []*kilnv1.JobEvent{queued, probing, ready, partial, failed} {
		if _, err := catalog.CheckEvent(ev, checkBuckets, time.Now()); err != nil {
			t.Errorf("%s: %v", ev.GetState(), err)
		}
	}
}

// TestCheckEventRejectsForgeries: whatever a publisher on kiln.jobs.* puts
// in an event, the catalog records no object outside the job's own.
func TestCheckEventRejectsForgeries(t *testing.T) {
	_, otherAsset := jobid.FromObject("kiln-sources", "uploads/other.mp4", "e")
	tests := []struct {
		name   string
		forge  func(queued, ready *kilnv1.JobEvent) *kilnv1.JobEvent
		reason string
	}{
		{"source in another bucket", func(q, _ *kilnv1.JobEvent) *kilnv1.JobEvent {
			q.Source.Bucket = "kiln-outputs"
			q.JobId, q.AssetId = jobid.FromObject(q.Source.Bucket, q.Source.Key, q.Source.Etag) // consistent ids do not help
			return q
		}, catalog.RejectWrongBucket},
		{"source key with traversal", func(q, _ *kilnv1.JobEvent) *kilnv1.JobEvent {
			q.Source.Key = "uploads/../../secrets/key.pem"
			q.JobId, q.AssetId = jobid.FromObject(q.Source.Bucket, q.Source.Key, q.Source.Etag)
			return q
		}, catalog.RejectBadKey},
		{"source key with a newline", func(q, _ *kilnv1.JobEvent) *kilnv1.JobEvent {
			q.Source.Key = "uploads/a\nb.mp4"
			q.JobId, q.AssetId = jobid.FromObject(q.Source.Bucket, q.Source.Key, q.Source.Etag)
			return q
		}, catalog.RejectBadKey},
		{"job id not derived from its source", func(q, _ *kilnv1.JobEvent) *kilnv1.JobEvent {
			q.Source.Key = "uploads/someone-elses.mp4"
			return q
		}, catalog.RejectIDMismatch},
		{"another job's etag", func(q, _ *kilnv1.JobEvent) *kilnv1.JobEvent {
			q.Source.Etag = "ffff"
			return q
		}, catalog.RejectIDMismatch},
		{"asset id of another job", func(q, _ *kilnv1.JobEvent) *kilnv1.JobEvent {
			q.AssetId = otherAsset
			return q
		}, catalog.RejectInvalid},
		{"outputs in the sources bucket", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Bucket = "kiln-sources"
			return r
		}, catalog.RejectWrongBucket},
		{"outputs in any bucket", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Bucket = "billing-exports"
			return r
		}, catalog.RejectWrongBucket},
		{"partial outputs without a bucket", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Bucket, r.Outputs.Partial, r.Outputs.FailedRenditions = "", true, nil
			return r
		}, catalog.RejectWrongBucket},
		{"another asset's prefix", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Prefix = layout.AssetPrefix(otherAsset)
			return r
		}, catalog.RejectOutsideAsset},
		{"playlist of another asset", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Renditions[0].PlaylistKey = layout.PlaylistKey(otherAsset, "360p")
			return r
		}, catalog.RejectOutsideAsset},
		{"playlist climbing out of the asset", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Renditions[0].PlaylistKey = r.Outputs.Prefix + "hls/../../" + strings.TrimPrefix(layout.PlaylistKey(otherAsset, "360p"), "assets/")
			return r
		}, catalog.RejectOutsideAsset},
		{"playlist of another rendition", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Renditions[0].PlaylistKey = layout.PlaylistKey(r.AssetId, "720p")
			return r
		}, catalog.RejectBadKey},
		{"playlist elsewhere in the asset", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Renditions[0].PlaylistKey = layout.PosterKey(r.AssetId)
			return r
		}, catalog.RejectBadKey},
		{"MP4 of another asset", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Mp4Key = layout.EncodedKey(otherAsset, "360p")
			return r
		}, catalog.RejectOutsideAsset},
		{"MP4 that is a source", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Mp4Key = "uploads/0123456789abcdef01234567/clip.mp4"
			return r
		}, catalog.RejectOutsideAsset},
		{"MP4 by traversal", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Mp4Key = r.Outputs.Prefix + "../../uploads/x.mp4"
			return r
		}, catalog.RejectOutsideAsset},
		{"poster outside", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.PosterKey = "/etc/passwd"
			return r
		}, catalog.RejectOutsideAsset},
		{"encoded rendition outside", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Renditions[0].EncodedKey = layout.EncodedKey(otherAsset, "360p")
			return r
		}, catalog.RejectOutsideAsset},
		{"failed rendition's encoded key outside", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.FailedRenditions[0].EncodedKey = "uploads/x.mp4"
			return r
		}, catalog.RejectOutsideAsset},
		{"thumbnail poster outside", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Thumbnails.PosterKey = layout.PosterKey(otherAsset)
			return r
		}, catalog.RejectOutsideAsset},
		{"thumbnail outside", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Thumbnails.Keys = append(r.Outputs.Thumbnails.Keys, r.Outputs.Prefix+"thumbnails/./../../../x.jpg")
			return r
		}, catalog.RejectOutsideAsset},
		{"sprite outside", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Thumbnails.SpriteKey = "sprite.jpg"
			return r
		}, catalog.RejectOutsideAsset},
		{"storyboard outside", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Outputs.Thumbnails.StoryboardKey = layout.AssetPrefix(otherAsset) + "thumbnails/storyboard.vtt"
			return r
		}, catalog.RejectOutsideAsset},
		{"event from the future", func(_, r *kilnv1.JobEvent) *kilnv1.JobEvent {
			r.Time = timestamppb.New(time.Now().Add(catalog.MaxClockSkew + time.Minute))
			return r
		}, catalog.RejectFutureTime},
		{"malformed job id", func(q, _ *kilnv1.JobEvent) *kilnv1.JobEvent {
			q.JobId = "job_../../x"
			return q
		}, catalog.RejectInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := tt.forge(honest())
			_, err := catalog.CheckEvent(ev, checkBuckets, time.Now())
			var rej *catalog.RejectedError
			if !errors.As(err, &rej) || !errors.Is(err, catalog.ErrInvalidEvent) {
				t.Fatalf("CheckEvent = %v, want a *RejectedError wrapping ErrInvalidEvent", err)
			}
			if rej.Reason != tt.reason {
				t.Fatalf("reason %q (%v), want %q", rej.Reason, err, tt.reason)
			}
		})
	}
}

// FuzzCheckEvent: whatever the bytes of a message on kiln.jobs.*, an event
// CheckEvent accepts names sources only in the sources bucket under a
// source key, for the job derived from them, and outputs only in the
// outputs bucket under the job's asset prefix.
func FuzzCheckEvent(f *testing.F) {
	queued, ready := honest()
	for _, ev := range []*kilnv1.JobEvent{queued, ready} {
		b, err := proto.Marshal(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev kilnv1.JobEvent
		if proto.Unmarshal(data, &ev) != nil {
			return
		}
		fact, err := catalog.CheckEvent(&ev, checkBuckets, now)
		if err != nil {
			if !errors.Is(err, catalog.ErrInvalidEvent) {
				t.Fatalf("CheckEvent error %v does not wrap ErrInvalidEvent", err)
			}
			return
		}
		if src := ev.GetSource(); src != nil {
			job, _ := jobid.FromObject(src.GetBucket(), src.GetKey(), src.GetEtag())
			if src.GetBucket() != checkBuckets.Sources || !layout.IsSourceKey(src.GetKey()) || job != fact.JobID {
				t.Fatalf("accepted source %v for job %s", src, fact.JobID)
			}
		}
		o := fact.Outputs
		if o == nil {
			return
		}
		if o.GetBucket() != checkBuckets.Outputs || o.GetPrefix() != layout.AssetPrefix(fact.AssetID) {
			t.Fatalf("accepted outputs in %s/%s for asset %s", o.GetBucket(), o.GetPrefix(), fact.AssetID)
		}
		keys := []string{o.GetMp4Key(), o.GetPosterKey(), o.GetThumbnails().GetPosterKey(), o.GetThumbnails().GetSpriteKey(), o.GetThumbnails().GetStoryboardKey()}
		keys = append(keys, o.GetThumbnails().GetKeys()...)
		for _, r := range o.GetRenditions() {
			keys = append(keys, r.GetPlaylistKey(), r.GetEncodedKey())
		}
		for _, r := range o.GetFailedRenditions() {
			keys = append(keys, r.GetEncodedKey())
		}
		for _, k := range keys {
			if k != "" && !layout.UnderAsset(fact.AssetID, k) {
				t.Fatalf("accepted key %q outside asset %s", k, fact.AssetID)
			}
		}
	})
}
