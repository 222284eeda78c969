package packager_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/failure"
	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/packager"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

const (
	jobID         = "job1"
	assetID       = "asset1"
	attempt       = 2 // not the first, so event ids must carry it
	outputsBucket = "kiln-outputs"
	videoCodecs   = "avc1.64001f,mp4a.40.2" // the init segment's avcC wins over ffprobe's level 3.0
)

type harness struct {
	ff      *fakeFFmpeg
	objects *fakes.Objects
	events  *fakes.Events
	jobs    *fakes.Jobs
	workDir string
	h       *packager.Handler
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	x := &harness{ff: &fakeFFmpeg{}, objects: &fakes.Objects{}, events: &fakes.Events{}, jobs: &fakes.Jobs{}, workDir: t.TempDir()}
	x.h = packager.New(packager.Config{FFmpeg: x.ff, Objects: x.objects, Events: x.events, OutputsBucket: outputsBucket,
		WorkDir: x.workDir, Jobs: x.jobs})
	return x
}

func (x *harness) checkClean(t *testing.T) {
	t.Helper()
	if left, err := os.ReadDir(x.workDir); err != nil || len(left) > 0 {
		t.Errorf("work dir not cleaned up: %v %v", left, err)
	}
}

// uploadedUnder lists the upload keys under the HLS folder of rendition.
func (x *harness) uploadedUnder(rendition string) []string {
	var keys []string
	for _, p := range x.objects.Puts() {
		if strings.HasPrefix(p.Key, layout.HLSDir(assetID, rendition)+"/") {
			keys = append(keys, p.Key)
		}
	}
	return keys
}

// upload is an upload by its size: the segments are too long to compare
// (or print) by content.
type upload struct {
	Bucket, Key, ContentType string
	Size                     int
}

// uploads are the uploads so far, in order.
func (x *harness) uploads() []upload {
	var ups []upload
	for _, p := range x.objects.Puts() {
		ups = append(ups, upload{p.Bucket, p.Key, p.ContentType, p.Size()})
	}
	return ups
}

func eventID(fact string) string { return fmt.Sprintf("%s.a%d.%s", jobID, attempt, fact) }

func rungs() []*kilnv1.Rung {
	return []*kilnv1.Rung{
		{Name: "360p", Width: 640, Height: 360, VideoBitRate: 800_000},
		{Name: "240p", Width: 426, Height: 240, VideoBitRate: 400_000},
		{Name: "144p", Width: 256, Height: 144, VideoBitRate: 200_000},
	}
}

func packageTask(audioOnly bool) *kilnv1.PackageTask {
	p := &kilnv1.PackageTask{JobId: jobID, AssetId: assetID, Attempt: attempt,
		Media:     &kilnv1.MediaInfo{Format: "mov,mp4,m4a,3gp,3g2,mj2", DurationSeconds: 10},
		Plan:      &kilnv1.Plan{Preset: "default", Rungs: rungs(), FrameRate: 30, GopFrames: 60, SegmentSeconds: 6, HasAudio: true, AudioBitRate: 128_000},
		PosterKey: layout.PosterKey(assetID),
		Thumbnails: &kilnv1.Thumbnails{PosterKey: layout.PosterKey(assetID), Keys: []string{layout.ThumbnailDir(assetID) + "/t_00001.jpg"},
			IntervalSeconds: 1, Width: 160, Height: 90},
	}
	if audioOnly {
		p.Plan = &kilnv1.Plan{Preset: "default", SegmentSeconds: 6, HasAudio: true, AudioOnly: true, AudioBitRate: 128_000}
		p.PosterKey, p.Thumbnails = "", nil
		p.Encoded = []*kilnv1.EncodedRung{{Name: layout.AudioRendition,
			Object: &kilnv1.ObjectRef{Bucket: outputsBucket, Key: layout.EncodedKey(assetID, layout.AudioRendition)}}}
		return p
	}
	for _, r := range p.Plan.Rungs {
		p.Encoded = append(p.Encoded, &kilnv1.EncodedRung{Name: r.Name,
			Object: &kilnv1.ObjectRef{Bucket: outputsBucket, Key: layout.EncodedKey(assetID, r.Name)}})
	}
	return p
}

func asTask(t *testing.T, p *kilnv1.PackageTask) *asynq.Task {
	t.Helper()
	cmd, err := tasks.NewPackageTask(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Task
}

// rendition is what the fake HLS output of a rung measures as.
func rendition(r *kilnv1.Rung, codecs string, fps float64) *kilnv1.Rendition {
	return &kilnv1.Rendition{Name: r.Name, Width: r.Width, Height: r.Height, FrameRate: fps,
		Bandwidth: fakePeak, AverageBandwidth: fakeAverage, Codecs: codecs,
		PlaylistKey: layout.PlaylistKey(assetID, r.Name), EncodedKey: layout.EncodedKey(assetID, r.Name)}
}

// failOn fails inputs naming the encoded object of rendition.
func failOn(rendition string, err error) func(string) error {
	return func(input string) error {
		if strings.Contains(input, "/"+rendition+".") {
			return err
		}
		return nil
	}
}

// ready returns the one READY event.
func (x *harness) ready(t *testing.T) *kilnv1.JobEvent {
	t.Helper()
	var got []*kilnv1.JobEvent
	for _, ev := range x.events.Events() {
		if ev.GetState() == kilnv1.JobState_JOB_STATE_READY {
			got = append(got, ev)
		}
	}
	if len(got) != 1 {
		t.Fatalf("events %q: want one READY", x.events.IDs())
	}
	if got[0].GetAttempt() != attempt || got[0].GetJobId() != jobID || got[0].GetAssetId() != assetID {
		t.Errorf("READY of %s/%s attempt %d", got[0].GetJobId(), got[0].GetAssetId(), got[0].GetAttempt())
	}
	return got[0]
}

func (x *harness) wantNoReady(t *testing.T) {
	t.Helper()
	for _, ev := range x.events.Events() {
		if ev.GetState() == kilnv1.JobState_JOB_STATE_READY {
			t.Fatalf("published READY %s, want none", ev.GetEventId())
		}
	}
}

func TestPackageRetryableFailures(t *testing.T) {
	s3Err := errors.New("s3: slow down")
	busErr := errors.New("nats: no responders")
	sig, deadline, canceledExit := fakes.SignaledError(), fakes.DeadlineError(), fakes.CanceledExitError()
	tests := []struct {
		name  string
		setup func(*harness)
		cause error
	}{
		{"packaging ffmpeg signaled", func(x *harness) { x.ff.fail = failOn("240p", sig) }, sig},
		{"packaging ffmpeg past the deadline", func(x *harness) { x.ff.fail = failOn("240p", deadline) }, context.DeadlineExceeded},
		{"packaging ffmpeg exits as the context is canceled", func(x *harness) { x.ff.fail = failOn("240p", canceledExit) }, context.Canceled},
		{"ffprobe signaled", func(x *harness) { x.ff.failProbe = failOn("240p", sig) }, sig},
		{"segment upload fails", func(x *harness) {
			x.objects.FailPut = func(k string) error { return keyErr(k, "240p/seg_00002", s3Err) }
		}, s3Err},
		{"playlist upload fails", func(x *harness) {
			x.objects.FailPut = func(k string) error { return keyErr(k, "240p/"+layout.PlaylistFile, s3Err) }
		}, s3Err},
		{"presign fails", func(x *harness) { x.objects.PresignErr = s3Err }, s3Err},
		{"publishing READY fails", func(x *harness) { x.events.Fail = stateErr(kilnv1.JobState_JOB_STATE_READY, busErr) }, busErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newHarness(t)
			tt.setup(x)
			fakes.WantRetryable(t, x.h.Package(t.Context(), asTask(t, retryOf("240p"))), tt.cause)
			x.wantNoReady(t)
			x.checkClean(t)
		})
	}
}

func keyErr(key, part string, err error) error {
	if strings.Contains(key, part) {
		return err
	}
	return nil
}

func stateErr(st kilnv1.JobState, err error) func(*kilnv1.JobEvent) error {
	return func(ev *kilnv1.JobEvent) error {
		if ev.GetState() == st {
			return err
		}
		return nil
	}
}

func TestPackageBadTask(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*kilnv1.PackageTask)
	}{
		{"neither the download nor a rendition", func(p *kilnv1.PackageTask) { p.Only, p.RenditionRetry = "", 0 }},
		{"nothing encoded", func(p *kilnv1.PackageTask) { p.Encoded = nil }},
		{"encoded rendition not in the plan", func(p *kilnv1.PackageTask) { p.Encoded[1].Name, p.Only = "999p", "999p" }},
		{"rendition retry of a rendition not encoded", func(p *kilnv1.PackageTask) { p.Only, p.RenditionRetry = "1080p", 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newHarness(t)
			p := retryOf("240p")
			tt.modify(p)
			fakes.WantPermanent(t, x.h.Package(t.Context(), asTask(t, p)), failure.Internal)
			x.wantNoReady(t)
		})
	}
	t.Run("malformed payload", func(t *testing.T) {
		x := newHarness(t)
		fakes.WantPermanent(t, x.h.Package(t.Context(), asynq.NewTask(tasks.TypePackage, []byte("\xff\xff"))), failure.Internal)
	})
}

func TestPackageCanceledMeanwhile(t *testing.T) {
	x := newHarness(t)
	x.ff.during = x.jobs.Cancel
	err := x.h.Package(t.Context(), asTask(t, retryOf("240p")))
	fakes.WantCanceled(t, err)
	x.wantNoReady(t)
	x.checkClean(t)
}

// retryOf is the first rendition retry of name.
func retryOf(name string) *kilnv1.PackageTask {
	p := packageTask(false)
	p.Only, p.RenditionRetry = name, 1
	return p
}

func TestPackageRenditionRetry(t *testing.T) {
	const retry = 3
	retryTask := func() *kilnv1.PackageTask {
		p := packageTask(false)
		p.Only, p.RenditionRetry = "240p", retry
		return p
	}
	wantID := eventID(fmt.Sprintf("rendition.240p.%d", retry))

	t.Run("succeeds", func(t *testing.T) {
		x := newHarness(t)
		if err := x.h.Package(t.Context(), asTask(t, retryTask())); err != nil {
			t.Fatal(err)
		}
		if got := x.events.IDs(); !slices.Equal(got, []string{wantID}) {
			t.Fatalf("events %q, want just %q (no PACKAGING)", got, wantID)
		}
		want := &kilnv1.AssetOutputs{Bucket: outputsBucket, Prefix: layout.AssetPrefix(assetID), Partial: true,
			Renditions: []*kilnv1.Rendition{rendition(rungs()[1], videoCodecs, 30)}}
		if out := x.ready(t).GetOutputs(); !proto.Equal(out, want) {
			t.Errorf("outputs\n%v\nwant\n%v", out, want)
		}
		if got := x.ff.Runs(); !slices.Equal(got, []string{fakes.URL(outputsBucket, layout.EncodedKey(assetID, "240p"))}) {
			t.Errorf("packaged %q, want 240p only", got)
		}
		if len(x.uploadedUnder("360p"))+len(x.uploadedUnder("144p")) > 0 {
			t.Error("a rendition retry uploaded other renditions")
		}
	})
	t.Run("fails again", func(t *testing.T) {
		x := newHarness(t)
		x.ff.fail = failOn("240p", fakes.ExitError("ffmpeg"))
		if err := x.h.Package(t.Context(), asTask(t, retryTask())); err != nil {
			t.Fatalf("Package = %v, want the failure published", err)
		}
		ev := x.ready(t)
		out := ev.GetOutputs()
		if ev.GetEventId() != wantID || !out.GetPartial() || len(out.GetRenditions()) > 0 || len(out.GetFailedRenditions()) != 1 {
			t.Fatalf("event %s outputs %v, want a partial READY listing 240p as failed", ev.GetEventId(), out)
		}
		if f := out.GetFailedRenditions()[0]; f.GetName() != "240p" || f.GetError().GetCode() != failure.PackageFailed ||
			f.GetEncodedKey() != layout.EncodedKey(assetID, "240p") {
			t.Errorf("failed rendition %v", f)
		}
	})
	t.Run("attempt replaced meanwhile", func(t *testing.T) {
		x := newHarness(t)
		x.ff.during = x.jobs.Cancel
		fakes.WantCanceled(t, x.h.Package(t.Context(), asTask(t, retryTask())))
		x.wantNoReady(t)
	})
	t.Run("interrupted", func(t *testing.T) {
		x := newHarness(t)
		sig := fakes.SignaledError()
		x.ff.fail = failOn("240p", sig)
		fakes.WantRetryable(t, x.h.Package(t.Context(), asTask(t, retryTask())), sig)
		x.wantNoReady(t)
	})
}
