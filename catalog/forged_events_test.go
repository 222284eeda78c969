package catalog_test

// An integration test of the catalog's event validation: a real NATS
// server (bus.StartEmbedded, with the per-role users of kiln serve) and a
// real SQLite catalog consuming kiln.jobs.* as kiln's catalog does.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobevent"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/metrics"
	"github.com/kilnvideo/kiln/internal/objstore"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// recordingObjects is an object store holding the outputs of the honest
// asset and objects the catalog must never serve (a source, another
// bucket's secret); it records every object the catalog reads or
// presigns.
type recordingObjects struct {
	mu      sync.Mutex
	objects map[string][]byte // "bucket/key" → body
	touched []string
}

func (o *recordingObjects) touch(bucket, key string) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.touched = append(o.touched, bucket+"/"+key)
	return o.objects[bucket+"/"+key]
}

func (o *recordingObjects) PresignGetWith(_ context.Context, bucket, key string, _ time.Duration, _ objstore.PresignOptions) (*url.URL, error) {
	o.touch(bucket, key)
	return &url.URL{Scheme: "https", Host: "s3.test", Path: "/" + bucket + "/" + key}, nil
}

func (o *recordingObjects) Get(_ context.Context, bucket, key string, _ int64) ([]byte, error) {
	if b := o.touch(bucket, key); b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("%s/%s: %w", bucket, key, objstore.ErrNotFound)
}

type readSeekNopCloser struct{ io.ReadSeeker }

func (readSeekNopCloser) Close() error { return nil }

func (o *recordingObjects) Open(_ context.Context, bucket, key string) (io.ReadSeekCloser, objstore.Info, error) {
	b := o.touch(bucket, key)
	if b == nil {
		return nil, objstore.Info{}, fmt.Errorf("%s/%s: %w", bucket, key, objstore.ErrNotFound)
	}
	return readSeekNopCloser{bytes.NewReader(b)}, objstore.Info{Bucket: bucket, Key: key, ETag: "e", Size: int64(len(b)), LastModified: time.Now()}, nil
}

func (o *recordingObjects) takeTouched() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	t := o.touched
	o.touched = nil
	return t
}

const forgedTestPassword = "forged-events-test-password-0123"

// roleBus connects to url as a kiln role's NATS user.
func roleBus(t *testing.T, url, user string) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := bus.Connect(ctx, bus.Config{URL: url, Name: user, User: user, Password: forgedTestPassword,
		InboxPrefix: bus.InboxPrefix(user), WaitForStreams: user == bus.UserWorker, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(b.Close)
	return b
}

// TestForgedEventsChangeNothing: whoever may publish job events (here the
// NATS user of workers, which kiln's packager publishes READY as) publishes
// forged events — outputs in another bucket, keys outside the asset's
// prefix or climbing out of it, a job id that is not its asset's or its
// source's. The catalog rejects each one: they are dead-lettered and
// counted, its state is what it was, and playback reads no object but the
// honest asset's own outputs.
func TestForgedEventsChangeNothing(t *testing.T) {
	var users []bus.User
	for _, u := range []string{bus.UserCatalog, bus.UserWorker, bus.UserIngest} {
		p, _ := bus.Permissions(u)
		users = append(users, bus.User{Name: u, Password: forgedTestPassword, Permission: &p})
	}
	users = append(users, bus.User{Name: "admin", Password: forgedTestPassword})
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Users: users, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	catalogBus := roleBus(t, ns.ClientURL(), bus.UserCatalog) // creates the streams
	worker := roleBus(t, ns.ClientURL(), bus.UserWorker)
	ingest := roleBus(t, ns.ClientURL(), bus.UserIngest)

	const sources, outputs = "kiln-sources", "kiln-outputs"
	srcA := &kilnv1.ObjectRef{Bucket: sources, Key: "uploads/aaaaaaaaaaaaaaaaaaaaaaaa/a.mp4", Etag: "ea", Size: 10}
	srcB := &kilnv1.ObjectRef{Bucket: sources, Key: "uploads/bbbbbbbbbbbbbbbbbbbbbbbb/b.mp4", Etag: "eb", Size: 10}
	jobA, assetA := jobid.FromObject(srcA.Bucket, srcA.Key, srcA.Etag)
	jobB, assetB := jobid.FromObject(srcB.Bucket, srcB.Key, srcB.Etag)
	media := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:6.000,\nseg_00001.m4s\n#EXT-X-ENDLIST\n"
	objects := &recordingObjects{objects: map[string][]byte{
		outputs + "/" + layout.PlaylistKey(assetA, "360p"):                 []byte(media),
		outputs + "/" + layout.SegmentKey(assetA, "360p", "seg_00001.m4s"): []byte("segment of A"),
		outputs + "/" + layout.EncodedKey(assetA, "360p"):                  []byte("mp4 of A"),
		outputs + "/" + layout.PosterKey(assetA):                           []byte("poster of A"),
		sources + "/" + srcB.Key:                                           []byte("B's private source"),
		"private/secret.mp4":                                               []byte("a secret"),
		outputs + "/" + layout.PlaylistKey(assetB, "360p"):                 []byte(media),
	}}

	store, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	rejections := mustRejections(t)
	rejections.Register(catalog.RejectConsumer, catalog.RejectReasons...)
	svc, err := catalog.New(catalog.Config{Store: store, Objects: objects, PublicURL: "https://kiln.test",
		APIKeys: httpapi.NewKeys([]string{"key"}), Logger: zaptest.NewLogger(t), Delivery: catalog.DeliveryProxy,
		SourcesBucket: sources, OutputsBucket: outputs, Rejections: rejections})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	consumed := make(chan error, 1)
	go func() {
		consumed <- catalogBus.Consume(ctx, bus.ConsumerConfig{Durable: "catalog", Subjects: []string{bus.SubjectJobs}}, svc.HandleMessage)
	}()
	t.Cleanup(func() { stop(); <-consumed })

	// The honest history: A ready, B queued.
	readyOutputs := func(asset, bucket string) *kilnv1.AssetOutputs {
		return &kilnv1.AssetOutputs{Bucket: bucket, Prefix: layout.AssetPrefix(asset), DurationSeconds: 6,
			Renditions: []*kilnv1.Rendition{{Name: "360p", Width: 640, Height: 360, Bandwidth: 900_000, Codecs: "avc1.64001e,mp4a.40.2",
				PlaylistKey: layout.PlaylistKey(asset, "360p"), EncodedKey: layout.EncodedKey(asset, "360p")}},
			Mp4Key: layout.EncodedKey(asset, "360p"), PosterKey: layout.PosterKey(asset)}
	}
	queuedA := jobevent.New(jobA, assetA, 1, kilnv1.JobState_JOB_STATE_QUEUED, "queued")
	queuedA.Source = srcA
	readyA := jobevent.New(jobA, assetA, 1, kilnv1.JobState_JOB_STATE_READY, "ready")
	readyA.Outputs = readyOutputs(assetA, outputs)
	queuedB := jobevent.New(jobB, assetB, 1, kilnv1.JobState_JOB_STATE_QUEUED, "queued")
	queuedB.Source = srcB
	if err := ingest.PublishJobEvent(t.Context(), queuedA); err != nil {
		t.Fatal(err)
	}
	if err := ingest.PublishJobEvent(t.Context(), queuedB); err != nil {
		t.Fatal(err)
	}
	if err := worker.PublishJobEvent(t.Context(), readyA); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "A ready and B queued", func() bool {
		a, errA := store.Job(t.Context(), jobA)
		b, errB := store.Job(t.Context(), jobB)
		return errA == nil && errB == nil && a.State == catalog.StateReady && b.State == catalog.StateQueued
	})

	// The forged events.
	ready := func(job, asset string, attempt int32, id string, edit func(o *kilnv1.AssetOutputs)) *kilnv1.JobEvent {
		ev := jobevent.New(job, asset, attempt, kilnv1.JobState_JOB_STATE_READY, id)
		ev.Outputs = readyOutputs(asset, outputs)
		edit(ev.Outputs)
		return ev
	}
	queued := func(src *kilnv1.ObjectRef, attempt int32) *kilnv1.JobEvent {
		job, asset := jobid.FromObject(src.Bucket, src.Key, src.Etag)
		ev := jobevent.New(job, asset, attempt, kilnv1.JobState_JOB_STATE_QUEUED, fmt.Sprint("forged.queued.", attempt))
		ev.Source = src
		return ev
	}
	// A playable event's outputs are played from before READY: checked
	// alike (and without an MP4: the download comes after READY).
	playable := func(job, asset string, id string, edit func(o *kilnv1.AssetOutputs)) *kilnv1.JobEvent {
		ev := jobevent.New(job, asset, 1, kilnv1.JobState_JOB_STATE_TRANSCODING, id)
		ev.Playable = true
		ev.Outputs = readyOutputs(asset, outputs)
		ev.Outputs.Mp4Key = ""
		edit(ev.Outputs)
		return ev
	}
	mismatched := ready(jobB, assetA, 1, "forged.mismatch", func(*kilnv1.AssetOutputs) {})
	retryA := jobevent.New(jobA, assetA, 3, kilnv1.JobState_JOB_STATE_QUEUED, "forged.retry")
	retryA.Source = srcB // another object under A's job id
	forged := []struct {
		name   string
		ev     *kilnv1.JobEvent
		reason string
	}{
		{"B ready from the sources bucket", ready(jobB, assetB, 1, "forged.1", func(o *kilnv1.AssetOutputs) {
			o.Bucket, o.Mp4Key = sources, srcB.Key
		}), catalog.RejectWrongBucket},
		{"A's new attempt from a private bucket", ready(jobA, assetA, 2, "forged.2", func(o *kilnv1.AssetOutputs) {
			o.Bucket, o.Mp4Key = "private", "secret.mp4"
		}), catalog.RejectWrongBucket},
		{"B ready with A's MP4", ready(jobB, assetB, 1, "forged.3", func(o *kilnv1.AssetOutputs) {
			o.Mp4Key = layout.EncodedKey(assetA, "360p")
		}), catalog.RejectOutsideAsset},
		{"B ready with a playlist climbing into A", ready(jobB, assetB, 1, "forged.4", func(o *kilnv1.AssetOutputs) {
			o.Renditions[0].PlaylistKey = layout.HLSDir(assetB, "360p") + "/../../../" + assetA + "/hls/360p/" + layout.PlaylistFile
		}), catalog.RejectOutsideAsset},
		{"B ready with a poster by traversal", ready(jobB, assetB, 1, "forged.5", func(o *kilnv1.AssetOutputs) {
			o.PosterKey = layout.AssetPrefix(assetB) + "../../../private/secret.mp4"
		}), catalog.RejectOutsideAsset},
		{"A's rendition retried from B's prefix", ready(jobA, assetA, 1, "forged.6", func(o *kilnv1.AssetOutputs) {
			o.Partial, o.Mp4Key, o.PosterKey = true, "", ""
			o.Renditions[0].PlaylistKey = layout.PlaylistKey(assetB, "360p")
		}), catalog.RejectOutsideAsset},
		{"B playable from the sources bucket", playable(jobB, assetB, "forged.p1", func(o *kilnv1.AssetOutputs) {
			o.Bucket = sources
			o.Renditions[0].PlaylistKey = srcB.Key
		}), catalog.RejectWrongBucket},
		{"B playable with A's playlist", playable(jobB, assetB, "forged.p2", func(o *kilnv1.AssetOutputs) {
			o.Renditions[0].PlaylistKey = layout.PlaylistKey(assetA, "360p")
		}), catalog.RejectOutsideAsset},
		{"B playable with a playlist off the layout", playable(jobB, assetB, "forged.p3", func(o *kilnv1.AssetOutputs) {
			o.Renditions[0].PlaylistKey = layout.AssetPrefix(assetB) + "hls/360p/other.m3u8"
		}), catalog.RejectBadKey},
		{"B playable with a poster by traversal", playable(jobB, assetB, "forged.p4", func(o *kilnv1.AssetOutputs) {
			o.PosterKey = layout.AssetPrefix(assetB) + "../../../private/secret.mp4"
		}), catalog.RejectOutsideAsset},
		{"B playable with thumbnails of A", playable(jobB, assetB, "forged.p5", func(o *kilnv1.AssetOutputs) {
			o.Thumbnails = &kilnv1.Thumbnails{PosterKey: layout.PosterKey(assetA)}
		}), catalog.RejectOutsideAsset},
		{"A's download from B's prefix", ready(jobA, assetA, 1, "forged.mp4", func(o *kilnv1.AssetOutputs) {
			o.Partial, o.Renditions, o.PosterKey = true, nil, ""
			o.Mp4Key = layout.EncodedKey(assetB, "360p")
		}), catalog.RejectOutsideAsset},
		{"job B claiming asset A", mismatched, catalog.RejectInvalid},
		{"job A retried over another source", retryA, catalog.RejectIDMismatch},
		{"a job over a private bucket's object", queued(&kilnv1.ObjectRef{Bucket: "private", Key: "secret.mp4", Etag: "es"}, 1), catalog.RejectWrongBucket},
		{"a job over a traversal key", queued(&kilnv1.ObjectRef{Bucket: sources, Key: "uploads/../../private/secret.mp4", Etag: "es"}, 1), catalog.RejectBadKey},
	}

	// Without the checks, the forged events would change the catalog: each
	// of them, applied to a copy of the honest history, does (but the one
	// FactOf itself refuses).
	for i, f := range forged {
		control, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), fmt.Sprintf("control%d.db", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = control.Close() })
		for _, ev := range []*kilnv1.JobEvent{queuedA, readyA, queuedB} {
			if _, err := control.Apply(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		changed, err := control.Apply(t.Context(), proto.Clone(f.ev).(*kilnv1.JobEvent))
		if f.reason != catalog.RejectInvalid && (err != nil || !changed) {
			t.Errorf("%s: without the checks: changed %v, %v; the test proves nothing", f.name, changed, err)
		}
	}

	before := snapshot(t, store, jobA, jobB)
	beforeJobs, _, err := store.ListJobs(t.Context(), catalog.JobFilter{Limit: catalog.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	objects.takeTouched()
	want := map[string]uint64{}
	for _, f := range forged {
		if err := worker.PublishJobEvent(t.Context(), f.ev); err != nil {
			t.Fatalf("%s: publish: %v", f.name, err)
		}
		want[f.reason]++
	}
	waitUntil(t, "every forged event rejected", func() bool {
		for reason, n := range want {
			if rejections.Count(catalog.RejectConsumer, reason) != n {
				return false
			}
		}
		return true
	})
	waitUntil(t, "every forged event dead-lettered", func() bool {
		counts, err := catalogBus.DeadLetterCounts(t.Context())
		return err == nil && counts["catalog"] == len(forged)
	})
	page, _, err := catalogBus.DeadLetters(t.Context(), bus.DeadLetterQuery{Consumer: "catalog", Limit: 100})
	if err != nil || len(page) != len(forged) {
		t.Fatalf("dead letters %d, %v", len(page), err)
	}
	for _, dl := range page {
		if !strings.Contains(dl.Reason, "invalid job event") || !strings.HasPrefix(dl.Subject, "kiln.jobs.") {
			t.Errorf("dead letter %d: reason %q, subject %q", dl.Seq, dl.Reason, dl.Subject)
		}
	}

	// Nothing changed.
	if after := snapshot(t, store, jobA, jobB); !reflect.DeepEqual(before, after) {
		t.Errorf("catalog state changed:\nbefore %+v\nafter  %+v", before, after)
	}
	afterJobs, _, err := store.ListJobs(t.Context(), catalog.JobFilter{Limit: catalog.MaxListLimit})
	if err != nil || len(afterJobs) != len(beforeJobs) {
		t.Errorf("jobs: %d before, %d after (%v)", len(beforeJobs), len(afterJobs), err)
	}

	// Playback serves nothing new: every playback URL of every asset the
	// forged events named reads only A's own outputs, and B plays nothing.
	h := svc.Handler()
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil))
		return rec.Code
	}
	var assets []string
	for _, f := range forged {
		assets = append(assets, f.ev.GetAssetId())
	}
	for _, a := range append(assets, assetA, assetB) {
		for _, p := range []string{"master.m3u8", "download.mp4", "poster.jpg", "360p/index.m3u8", "360p/seg_00001.m4s"} {
			code := get("/v1/play/" + a + "/" + p)
			if a != assetA && code == http.StatusOK {
				t.Errorf("GET /v1/play/%s/%s = 200: an asset the forged events named plays", a, p)
			}
		}
	}
	if code := get("/v1/play/" + assetA + "/download.mp4"); code != http.StatusOK {
		t.Errorf("A's download = %d, want 200", code)
	}
	for _, k := range objects.takeTouched() {
		if !strings.HasPrefix(k, outputs+"/"+layout.AssetPrefix(assetA)) {
			t.Errorf("playback read %s, which is not one of A's outputs", k)
		}
	}
	if n := rejections.Count(catalog.RejectConsumer, "wrong_bucket"); n != 4 {
		t.Errorf("kiln_events_rejected_total{consumer=\"catalog\",reason=\"wrong_bucket\"} = %d, want 4", n)
	}
}

type state struct {
	Jobs   []catalog.Job
	Assets []catalog.Asset
}

func snapshot(t *testing.T, store *sqlite.Store, jobs ...string) state {
	t.Helper()
	var s state
	for _, id := range jobs {
		j, err := store.Job(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		s.Jobs = append(s.Jobs, *j)
		a, err := store.Asset(t.Context(), jobid.AssetOf(id))
		if err != nil {
			t.Fatal(err)
		}
		s.Assets = append(s.Assets, *a)
	}
	return s
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
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
