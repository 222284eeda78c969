package fakes

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// ProbeTask is the probe of attempt of job: asset "asset-"+job, preset
// "default", source kiln-sources/uploads/<job>.mp4.
func ProbeTask(job string, attempt int32) *kilnv1.ProbeTask {
	return &kilnv1.ProbeTask{JobId: job, AssetId: "asset-" + job, Preset: "default", Attempt: attempt,
		Source: &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "uploads/" + job + ".mp4", Etag: "etag"}}
}

// EnqueueStage enqueues the stage command of payload (a stage task message)
// on queue, with everything else from its NewXTask constructor, and returns
// the error of tasks.Enqueue.
func EnqueueStage(ctx context.Context, tb testing.TB, q tasks.Enqueuer, queue string, payload proto.Message) error {
	tb.Helper()
	var (
		c   tasks.Command
		err error
	)
	switch p := payload.(type) {
	case *kilnv1.ProbeTask:
		c, err = tasks.NewProbeTask(ctx, p)
	case *kilnv1.TranscodeTask:
		c, err = tasks.NewTranscodeTask(ctx, p)
	case *kilnv1.PackageTask:
		c, err = tasks.NewPackageTask(ctx, p)
	default:
		tb.Fatalf("enqueue: %T is not a stage task", payload)
	}
	if err != nil {
		tb.Fatal(err)
	}
	c.Options = append(c.Options, asynq.Queue(queue))
	return tasks.Enqueue(ctx, q, c)
}
