package ingest

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/metrics"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// TestIntakeRejectsForeignObjects: a landed object outside the sources
// bucket, or whose key is no source key, starts no job: it is refused as
// permanent (dead-lettered) and counted by reason; a bucket notification's
// good records are started all the same.
func TestIntakeRejectsForeignObjects(t *testing.T) {
	landedMsg := func(bucket, key, etag string) []byte {
		b, err := proto.Marshal(&kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: bucket, Key: key, Etag: etag}, Origin: "api"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name     string
		subject  string
		data     []byte
		reason   string
		wantJobs int
	}{
		{"landed in the outputs bucket", bus.SubjectObjectLanded, landedMsg("kiln-outputs", "assets/ast_x/mp4/720p.mp4", "e"), RejectWrongBucket, 0},
		{"landed in any bucket", bus.SubjectObjectLanded, landedMsg("billing", "2025/report.mp4", "e"), RejectWrongBucket, 0},
		{"landed with traversal", bus.SubjectObjectLanded, landedMsg("kiln-sources", "uploads/../../etc/passwd", "e"), RejectBadKey, 0},
		{"landed with a control character", bus.SubjectObjectLanded, landedMsg("kiln-sources", "uploads/a\x00.mp4", "e"), RejectBadKey, 0},
		{"landed absolute", bus.SubjectObjectLanded, landedMsg("kiln-sources", "/uploads/a.mp4", "e"), RejectBadKey, 0},
		{"landed without etag", bus.SubjectObjectLanded, landedMsg("kiln-sources", "uploads/a.mp4", ""), RejectInvalid, 0},
		{"landed with a bad etag", bus.SubjectObjectLanded, landedMsg("kiln-sources", "uploads/a.mp4", "e\ntag"), RejectInvalid, 0},
		{"undecodable landed", bus.SubjectObjectLanded, []byte{0xff, 0xff}, RejectInvalid, 0},
		{"bucket event of another bucket", bus.SubjectS3Events, event(record("s3:ObjectCreated:Put", "kiln-outputs", "k", "e", "")), RejectWrongBucket, 0},
		{"bucket event with traversal", bus.SubjectS3Events, event(record("s3:ObjectCreated:Put", "kiln-sources", "a%2F..%2F..%2Fb", "e", "")), RejectBadKey, 0},
		{"one forged record among good ones", bus.SubjectS3Events, event(
			record("s3:ObjectCreated:Put", "kiln-sources", "uploads%2Fgood.mp4", "e", ""),
			record("s3:ObjectCreated:Put", "secrets", "key.mp4", "e", ""),
			record("s3:ObjectCreated:Put", "kiln-sources", "uploads%2Fgood2.mp4", "e", "")), RejectWrongBucket, 2},
		{"undecodable bucket event", bus.SubjectS3Events, []byte("{"), RejectInvalid, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, queue, rej := &fakeEvents{}, &fakeQueue{}, mustRejections(t)
			s := New(Config{Events: events, Queue: queue, SourcesBucket: "kiln-sources", Rejections: rej})
			err := s.HandleMessage(t.Context(), tt.subject, tt.data)
			if !errors.Is(err, bus.ErrPermanent) {
				t.Fatalf("err = %v, want ErrPermanent", err)
			}
			var r *RejectedError
			if !errors.As(err, &r) || r.Reason != tt.reason {
				t.Fatalf("err = %v, want a rejection for %s", err, tt.reason)
			}
			if n := rej.Count(RejectConsumer, tt.reason); n != 1 {
				t.Errorf("counted %d rejections for %s, want 1", n, tt.reason)
			}
			if len(events.jobs) != tt.wantJobs || len(queue.tasks) != tt.wantJobs {
				t.Fatalf("%d jobs, %d tasks; want %d", len(events.jobs), len(queue.tasks), tt.wantJobs)
			}
			for _, ev := range events.jobs {
				if ev.GetSource().GetBucket() != "kiln-sources" {
					t.Errorf("job started for %v", ev.GetSource())
				}
			}
		})
	}
}

// TestIntakeWithoutSourcesBucket: unconfigured, it starts nothing.
func TestIntakeWithoutSourcesBucket(t *testing.T) {
	events, queue := &fakeEvents{}, &fakeQueue{}
	s := New(Config{Events: events, Queue: queue})
	if err := s.StartJob(t.Context(), landed("kiln-sources", "k")); !errors.Is(err, bus.ErrPermanent) || len(queue.tasks) != 0 {
		t.Fatalf("StartJob = %v with %d tasks, want a rejection", err, len(queue.tasks))
	}
}

// mustRejections is a rejection counter on a registry of its own.
func mustRejections(t *testing.T) *metrics.Rejections {
	t.Helper()
	r, err := metrics.NewRejections(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return r
}
