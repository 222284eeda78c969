package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// minioPut is a bucket notification as MinIO publishes it to NATS: the
// object key is URL-encoded QueryEscape-style ("/" → %2F, " " → "+").
const minioPut = `{
  "EventName": "s3:ObjectCreated:Put",
  "Key": "kiln-sources/dir/a%20b.mp4",
  "Records": [{
    "eventVersion": "2.0",
    "eventSource": "minio:s3",
    "awsRegion": "",
    "eventTime": "2024-05-01T10:11:12.345Z",
    "eventName": "s3:ObjectCreated:Put",
    "userIdentity": {"principalId": "minioadmin"},
    "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "172.17.0.1"},
    "responseElements": {"x-amz-id-2": "dd9025bab4ad", "x-amz-request-id": "17CB0D0DE8E0F3A5"},
    "s3": {
      "s3SchemaVersion": "1.0",
      "configurationId": "Config",
      "bucket": {"name": "kiln-sources", "ownerIdentity": {"principalId": "minioadmin"}, "arn": "arn:aws:s3:::kiln-sources"},
      "object": {
        "key": "dir%2Fa+b.mp4",
        "size": 123,
        "eTag": "abc",
        "contentType": "video/mp4",
        "userMetadata": {"X-Amz-Meta-Kiln-Preset": "default", "content-type": "video/mp4"},
        "sequencer": "17CB0D0DE8F4A7B1"
      }
    },
    "source": {"host": "172.17.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"}
  }]
}`

// record builds a one-record S3 event.
func record(eventName, bucket, key, etag, meta string) string {
	if meta == "" {
		meta = "{}"
	}
	return `{"eventName":"` + eventName + `","eventTime":"2024-05-01T10:11:12Z","s3":{"bucket":{"name":"` + bucket +
		`"},"object":{"key":"` + key + `","size":7,"eTag":"` + etag + `","contentType":"video/mp4","userMetadata":` + meta + `}}}`
}

func event(records ...string) []byte {
	return []byte(`{"Records":[` + strings.Join(records, ",") + `]}`)
}

func TestParseS3Event(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		want    []string // "bucket|key|etag|size|contentType|preset|playbackPolicy"
		wantErr bool
	}{
		{
			name: "minio put",
			data: []byte(minioPut),
			want: []string{"kiln-sources|dir/a b.mp4|abc|123|video/mp4|default|"},
		},
		{
			name: "aws style event name and quoted etag",
			data: event(record("ObjectCreated:CompleteMultipartUpload", "b", "x.mov", `\"e1\"`, "")),
			want: []string{"b|x.mov|e1|7|video/mp4||"},
		},
		{
			name: "escaped plus, percent and unicode",
			data: event(record("s3:ObjectCreated:Copy", "b", "a%2Bb+%25+%C3%A9t%C3%A9.mp4", "e", "")),
			want: []string{"b|a+b % été.mp4|e|7|video/mp4||"},
		},
		{
			name: "preset metadata key is case-insensitive",
			data: event(record("s3:ObjectCreated:Put", "b", "k", "e", `{"x-amz-meta-kiln-preset":"hd"}`)),
			want: []string{"b|k|e|7|video/mp4|hd|"},
		},
		{
			name: "playback policy metadata",
			data: event(record("s3:ObjectCreated:Put", "b", "k", "e", `{"X-Amz-Meta-Kiln-Playback-Policy":"signed","X-Amz-Meta-Kiln-Preset":"hd"}`)),
			want: []string{"b|k|e|7|video/mp4|hd|signed"},
		},
		{
			name: "delete skipped",
			data: event(record("s3:ObjectRemoved:Delete", "b", "k", "", "")),
			want: nil,
		},
		{
			name: "other events skipped, created kept",
			data: event(
				record("s3:ObjectAccessed:Get", "b", "k1", "e", ""),
				record("s3:ObjectCreated:Put", "b", "k2", "e", ""),
				record("s3:ObjectRemoved:DeleteMarkerCreated", "b", "k3", "e", ""),
			),
			want: []string{"b|k2|e|7|video/mp4||"},
		},
		{
			name: "folder marker skipped",
			data: event(record("s3:ObjectCreated:Put", "b", "dir%2Fsub%2F", "e", "")),
			want: nil,
		},
		{
			name: "empty key and empty bucket skipped",
			data: event(record("s3:ObjectCreated:Put", "b", "", "e", ""), record("s3:ObjectCreated:Put", "", "k", "e", "")),
			want: nil,
		},
		{name: "malformed json", data: []byte(`{"Records":[`), wantErr: true},
		{name: "not json", data: []byte("kiln"), wantErr: true},
		{name: "wrong type", data: []byte(`{"Records":{}}`), wantErr: true},
		{name: "no records field", data: []byte(`{"EventName":"s3:ObjectCreated:Put"}`), wantErr: true},
		{name: "empty records", data: []byte(`{"Records":[]}`), wantErr: true},
		{name: "bad key escape", data: event(record("s3:ObjectCreated:Put", "b", "a%zz", "e", "")), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseS3Event(tt.data)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("err = nil, want an error; got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gotS []string
			for _, ev := range got {
				o := ev.GetObject()
				gotS = append(gotS, strings.Join([]string{o.Bucket, o.Key, o.Etag,
					strconv.FormatInt(o.Size, 10), o.ContentType, ev.Preset, ev.PlaybackPolicy}, "|"))
				if ev.Origin != "s3" {
					t.Errorf("origin = %q, want s3", ev.Origin)
				}
				if ev.GetTime().AsTime().IsZero() || ev.GetTime().AsTime().Year() != 2024 {
					t.Errorf("time = %v, want the event time", ev.GetTime().AsTime())
				}
			}
			if !slices.Equal(gotS, tt.want) {
				t.Fatalf("objects =\n%q\nwant\n%q", gotS, tt.want)
			}
		})
	}
}

func TestParseS3EventMinioTime(t *testing.T) {
	got, err := ParseS3Event([]byte(minioPut))
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2024, 5, 1, 10, 11, 12, 345e6, time.UTC)
	if tm := got[0].GetTime().AsTime(); !tm.Equal(want) {
		t.Fatalf("time = %v, want %v", tm, want)
	}
}

func FuzzParseS3Event(f *testing.F) {
	f.Add([]byte(minioPut))
	f.Add(event(record("s3:ObjectCreated:Put", "b", "dir%2F", "e", "")))
	f.Add(event(record("s3:ObjectRemoved:Delete", "b", "k", "e", "")))
	f.Add([]byte(`{"Records":[{"s3":null}]}`))
	f.Add([]byte(`{"Records":[null]}`))
	f.Add([]byte(`{"Records":[{"eventName":"s3:ObjectCreated:Put","eventTime":"x"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseS3Event(data)
		if err != nil {
			if got != nil {
				t.Fatalf("result %v with error %v", got, err)
			}
			return
		}
		for _, ev := range got {
			o := ev.GetObject()
			if o.GetBucket() == "" || o.GetKey() == "" || strings.HasSuffix(o.GetKey(), "/") {
				t.Fatalf("object %v should have been skipped", o)
			}
			if strings.Contains(o.GetEtag(), `"`) {
				t.Fatalf("etag %q keeps quotes", o.GetEtag())
			}
		}
	})
}

// fakeObjects records Put calls; it reads the whole body as a real store
// would, so MaxBytesReader errors surface through it.
type fakeObjects struct {
	mu   sync.Mutex
	puts []fakePut
	err  error
	// onPut, when set, runs after a successful Put (e.g. the client goes).
	onPut func()
}

type fakePut struct {
	Bucket, Key, ContentType string
	Size                     int64
	Data                     []byte
	Meta                     map[string]string
}

var _ Objects = (*fakeObjects)(nil)

func (f *fakeObjects) Put(ctx context.Context, bucket, key string, r io.Reader, size int64, contentType string, meta map[string]string) (objstore.Info, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return objstore.Info{}, fmt.Errorf("fake put %s/%s: %w", bucket, key, err)
	}
	if f.err != nil {
		return objstore.Info{}, f.err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts = append(f.puts, fakePut{bucket, key, contentType, size, data, maps.Clone(meta)})
	if f.onPut != nil {
		f.onPut()
	}
	return objstore.Info{Bucket: bucket, Key: key, ETag: fmt.Sprintf("etag-%d", len(data)), Size: int64(len(data)), ContentType: contentType}, nil
}

// fakeEvents records published facts.
type fakeEvents struct {
	mu        sync.Mutex
	landed    []*kilnv1.ObjectLanded
	jobs      []*kilnv1.JobEvent
	landedErr error
	jobErr    error
	// landedCtx are ctx.Err() and whether ctx had a deadline, per
	// PublishObjectLanded call.
	landedCtx []landedCtx
	// calls logs "enqueue" and "publish" in order (with fakeQueue.calls).
	calls *[]string
}

type landedCtx struct {
	err         error
	hasDeadline bool
}

var _ Events = (*fakeEvents)(nil)

func (f *fakeEvents) PublishObjectLanded(ctx context.Context, ev *kilnv1.ObjectLanded) error {
	f.mu.Lock()
	_, ok := ctx.Deadline()
	f.landedCtx = append(f.landedCtx, landedCtx{ctx.Err(), ok})
	f.mu.Unlock()
	if f.landedErr != nil {
		return f.landedErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.landed = append(f.landed, proto.Clone(ev).(*kilnv1.ObjectLanded))
	return nil
}

func (f *fakeEvents) PublishJobEvent(ctx context.Context, ev *kilnv1.JobEvent) error {
	if f.calls != nil {
		*f.calls = append(*f.calls, "publish "+ev.GetState().String())
	}
	if f.jobErr != nil {
		return f.jobErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs = append(f.jobs, proto.Clone(ev).(*kilnv1.JobEvent))
	return nil
}

// fakeQueue records enqueued tasks and their options.
type fakeQueue struct {
	mu    sync.Mutex
	tasks []*asynq.Task
	opts  [][]asynq.Option
	err   error
	calls *[]string
}

var _ tasks.Enqueuer = (*fakeQueue)(nil)

func (f *fakeQueue) EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks = append(f.tasks, task)
	f.opts = append(f.opts, opts)
	if f.calls != nil {
		*f.calls = append(*f.calls, "enqueue "+task.Type())
	}
	if f.err != nil {
		return nil, f.err
	}
	return &asynq.TaskInfo{Type: task.Type(), Payload: task.Payload()}, nil
}

// optionValues maps each asynq option type to its value.
func optionValues(opts []asynq.Option) map[asynq.OptionType]any {
	m := map[asynq.OptionType]any{}
	for _, o := range opts {
		m[o.Type()] = o.Value()
	}
	return m
}

func TestStartJob(t *testing.T) {
	src := &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "uploads/x/clip.mp4", Etag: "abc", Size: 123, ContentType: "video/mp4"}
	wantJob, wantAsset := jobid.FromObject(src.Bucket, src.Key, src.Etag)
	tests := []struct {
		name         string
		preset       string
		policy       string
		priority     string
		wantPreset   string
		wantPolicy   string
		wantPriority string
	}{
		{"defaults when empty", "", "", "", "default", policy.Public, tasks.PriorityNormal},
		{"explicit preset, signed, low", "hd", policy.Signed, tasks.PriorityLow, "hd", policy.Signed, tasks.PriorityLow},
		{"unknown policy is public, unknown priority normal", "", "bogus", "urgent", "default", policy.Public, tasks.PriorityNormal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, queue := &fakeEvents{}, &fakeQueue{}
			s := New(Config{Events: events, Queue: queue, SourcesBucket: "kiln-sources"})
			if err := s.StartJob(t.Context(), &kilnv1.ObjectLanded{Object: src, Origin: "api", Preset: tt.preset, PlaybackPolicy: tt.policy,
				Priority: tt.priority}); err != nil {
				t.Fatal(err)
			}
			if len(events.jobs) != 1 {
				t.Fatalf("published %d job events, want 1", len(events.jobs))
			}
			ev := events.jobs[0]
			if ev.EventId != wantJob+".queued" || ev.JobId != wantJob || ev.AssetId != wantAsset {
				t.Errorf("event ids = %q %q %q", ev.EventId, ev.JobId, ev.AssetId)
			}
			if ev.State != kilnv1.JobState_JOB_STATE_QUEUED || ev.Preset != tt.wantPreset || ev.PlaybackPolicy != tt.wantPolicy ||
				ev.Priority != tt.wantPriority || !proto.Equal(ev.Source, src) {
				t.Errorf("event = %v", ev)
			}

			if len(queue.tasks) != 1 {
				t.Fatalf("enqueued %d tasks, want 1", len(queue.tasks))
			}
			task := queue.tasks[0]
			if task.Type() != tasks.TypeProbe {
				t.Errorf("task type = %q, want %q", task.Type(), tasks.TypeProbe)
			}
			var p kilnv1.ProbeTask
			if err := proto.Unmarshal(task.Payload(), &p); err != nil {
				t.Fatal(err)
			}
			if p.JobId != wantJob || p.AssetId != wantAsset || p.Preset != tt.wantPreset || p.Priority != tt.wantPriority || !proto.Equal(p.Source, src) {
				t.Errorf("probe payload = %v", &p)
			}
			opts := optionValues(queue.opts[0])
			want := map[asynq.OptionType]any{
				asynq.TaskIDOpt:    "kiln:probe:" + wantJob,
				asynq.QueueOpt:     "probe",
				asynq.TimeoutOpt:   2 * time.Minute,
				asynq.MaxRetryOpt:  8,
				asynq.RetentionOpt: tasks.Retention,
			}
			for typ, v := range want {
				if opts[typ] != v {
					t.Errorf("option %v = %v, want %v (all: %v)", typ, opts[typ], v, queue.opts[0])
				}
			}
		})
	}
}

func TestStartJobIdempotent(t *testing.T) {
	events, queue := &fakeEvents{}, &fakeQueue{}
	s := New(Config{Events: events, Queue: queue, SourcesBucket: "b"})
	ev := &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: "b", Key: "k", Etag: `"e"`}}
	for range 2 {
		if err := s.StartJob(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	// The same object (etag quoted or not) gives the same ids both times.
	if len(events.jobs) != 2 || events.jobs[0].EventId != events.jobs[1].EventId {
		t.Fatalf("event ids differ: %v", events.jobs)
	}
	id0 := optionValues(queue.opts[0])[asynq.TaskIDOpt]
	id1 := optionValues(queue.opts[1])[asynq.TaskIDOpt]
	if id0 != id1 {
		t.Fatalf("task ids differ: %v %v", id0, id1)
	}
	job, _ := jobid.FromObject("b", "k", "e")
	if id0 != "kiln:probe:"+job {
		t.Fatalf("task id = %v, want kiln:probe:%s", id0, job)
	}
}

func TestStartJobErrors(t *testing.T) {
	pubErr := errors.New("nats down")
	tests := []struct {
		name        string
		ev          *kilnv1.ObjectLanded
		jobErr      error
		queueErr    error
		wantErr     error // nil: success
		wantEnqueue int
	}{
		{name: "no object", ev: &kilnv1.ObjectLanded{}, wantErr: bus.ErrPermanent},
		{name: "no key", ev: &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: "b"}}, wantErr: bus.ErrPermanent},
		{name: "no bucket", ev: &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Key: "k"}}, wantErr: bus.ErrPermanent},
		{name: "publish fails after the probe is enqueued", ev: landed("b", "k"), jobErr: pubErr, wantErr: pubErr, wantEnqueue: 1},
		{name: "duplicate task id is success", ev: landed("b", "k"), queueErr: asynq.ErrTaskIDConflict, wantEnqueue: 1},
		{name: "duplicate task is success", ev: landed("b", "k"), queueErr: asynq.ErrDuplicateTask, wantEnqueue: 1},
		{name: "redis down is an error", ev: landed("b", "k"), queueErr: errRedis, wantErr: errRedis, wantEnqueue: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, queue := &fakeEvents{jobErr: tt.jobErr}, &fakeQueue{err: tt.queueErr}
			s := New(Config{Events: events, Queue: queue, SourcesBucket: "b"})
			err := s.StartJob(t.Context(), tt.ev)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if len(queue.tasks) != tt.wantEnqueue {
				t.Fatalf("enqueued %d, want %d", len(queue.tasks), tt.wantEnqueue)
			}
			if tt.queueErr != nil && err != nil && len(events.jobs) != 0 {
				t.Fatalf("published %d job events after a failed enqueue, want none", len(events.jobs))
			}
		})
	}
}

// TestStartJobEnqueuesBeforeQueued: the probe is enqueued before QUEUED is
// published, so a queue outage never leaves a job queued without its probe:
// the enqueue error is returned (the message is redelivered), nothing is
// published, and the redelivery does both.
func TestStartJobEnqueuesBeforeQueued(t *testing.T) {
	var calls []string
	events, queue := &fakeEvents{calls: &calls}, &fakeQueue{calls: &calls, err: errRedis}
	s := New(Config{Events: events, Queue: queue, SourcesBucket: "b"})
	data, err := proto.Marshal(landed("b", "k"))
	if err != nil {
		t.Fatal(err)
	}
	err = s.HandleMessage(t.Context(), bus.SubjectObjectLanded, data)
	if !errors.Is(err, errRedis) || errors.Is(err, bus.ErrPermanent) {
		t.Fatalf("err = %v, want the (transient) queue error", err)
	}
	if want := []string{"enqueue " + tasks.TypeProbe}; !slices.Equal(calls, want) || len(events.jobs) != 0 {
		t.Fatalf("calls = %v, %d job events; want %v and none", calls, len(events.jobs), want)
	}
	queue.err = nil // Redis is back: the redelivery
	if err := s.HandleMessage(t.Context(), bus.SubjectObjectLanded, data); err != nil {
		t.Fatal(err)
	}
	want := []string{"enqueue " + tasks.TypeProbe, "enqueue " + tasks.TypeProbe, "publish JOB_STATE_QUEUED"}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls = %v, want %v", calls, want)
	}
}

var errRedis = errors.New("redis down")

func landed(bucket, key string) *kilnv1.ObjectLanded {
	return &kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: bucket, Key: key, Etag: "e"}}
}

func TestHandleMessage(t *testing.T) {
	landedBytes, err := proto.Marshal(&kilnv1.ObjectLanded{Object: &kilnv1.ObjectRef{Bucket: "kiln-sources", Key: "k", Etag: "e"}, Preset: "hd"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		subject   string
		data      []byte
		wantJobs  []string // keys of the started jobs
		permanent bool
	}{
		{name: "minio event in sources bucket", subject: bus.SubjectS3Events, data: []byte(minioPut), wantJobs: []string{"dir/a b.mp4"}},
		{name: "other bucket rejected", subject: bus.SubjectS3Events, data: event(record("s3:ObjectCreated:Put", "kiln-outputs", "k", "e", "")), permanent: true},
		{name: "delete ignored", subject: bus.SubjectS3Events, data: event(record("s3:ObjectRemoved:Delete", "kiln-sources", "k", "e", ""))},
		{name: "malformed s3 event", subject: bus.SubjectS3Events, data: []byte("{"), permanent: true},
		{name: "object landed", subject: bus.SubjectObjectLanded, data: landedBytes, wantJobs: []string{"k"}},
		{name: "malformed object landed", subject: bus.SubjectObjectLanded, data: []byte{0xff, 0xff}, permanent: true},
		{name: "unknown subject", subject: "kiln.other", data: landedBytes, permanent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, queue := &fakeEvents{}, &fakeQueue{}
			s := New(Config{Events: events, Queue: queue, SourcesBucket: "kiln-sources"})
			err := s.HandleMessage(t.Context(), tt.subject, tt.data)
			if tt.permanent {
				if !errors.Is(err, bus.ErrPermanent) {
					t.Fatalf("err = %v, want ErrPermanent", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, ev := range events.jobs {
				keys = append(keys, ev.GetSource().GetKey())
			}
			if !slices.Equal(keys, tt.wantJobs) || len(queue.tasks) != len(tt.wantJobs) {
				t.Fatalf("jobs for %q (%d tasks), want %q", keys, len(queue.tasks), tt.wantJobs)
			}
		})
	}
}
