package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/sqldialect"

	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/httpapi"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// fakeRenditionRetrier captures the rendition retries; err, when set, fails
// them.
type fakeRenditionRetrier struct {
	mu    sync.Mutex
	tasks []*kilnv1.PackageTask
	err   error
}

func (f *fakeRenditionRetrier) RetryRendition(_ context.Context, t *kilnv1.PackageTask) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.tasks = append(f.tasks, proto.Clone(t).(*kilnv1.PackageTask))
	return nil
}

// withRenditionRetrier rebuilds the fixture's service with rr (nil: none).
func (f *apiFixture) withRenditionRetrier(t *testing.T, rr RenditionRetrier) {
	t.Helper()
	cfg := Config{Store: f.store, Objects: f.objects, PublicURL: testPublic, APIKeys: httpapi.NewKeys([]string{testKey}),
		Logger: zaptest.NewLogger(t), SigningKey: tokenKey, Canceler: f, Retrier: f, Remover: f, OutputsBucket: "outputs", SourcesBucket: "sources"}
	if rr != nil {
		cfg.RenditionRetrier = rr
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.svc, f.h = svc, svc.Handler()
}

// readyWithFailure is a READY event whose 720p rendition failed.
func readyWithFailure(jobID string) *kilnv1.JobEvent {
	ev := event(jobID, ready, 1)
	o := ev.Outputs
	enc := o.Renditions[0].EncodedKey // the packager records the 720p's
	o.Renditions = o.Renditions[1:]   // 360p only
	o.FailedRenditions = []*kilnv1.FailedRendition{{Name: "720p", EncodedKey: enc,
		Error: &kilnv1.JobError{Code: "packaging_failed", Message: "segmenter exited 1"}}}
	return ev
}

// partialReady is the partial READY event of retry n of the 720p rendition,
// which succeeded.
func partialReady(jobID string, n string) *kilnv1.JobEvent {
	ev := event(jobID, ready, 1)
	ev.EventId += "/720p.r" + n
	full := ev.Outputs
	ev.Outputs = &kilnv1.AssetOutputs{Bucket: full.Bucket, Prefix: full.Prefix, Partial: true,
		Renditions: full.Renditions[:1]} // 720p
	return ev
}

func failureRows(t *testing.T, s Store, assetID string) int {
	t.Helper()
	var n int
	if err := dbOf(t, s).QueryRowContext(t.Context(), `SELECT COUNT(*) FROM rendition_failures WHERE asset_id = ?`, assetID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRenditionFailureAndRetry(t *testing.T) {
	f := newAPIFixture(t)
	rr := &fakeRenditionRetrier{}
	f.withRenditionRetrier(t, rr)
	id, asset := testJob("rendition-retry")
	f.apply(t, event(id, queued, 0), event(id, probing, 0), event(id, transcoding, 0), event(id, packaging, 0),
		readyWithFailure(id))

	getAsset := func() (assetJSON, string) {
		t.Helper()
		rec := f.do(t, http.MethodGet, "/v1/assets/"+asset, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET asset: %d %s", rec.Code, rec.Body)
		}
		var a assetJSON
		decode(t, rec, &a)
		return a, rec.Body.String()
	}
	master := func() string {
		t.Helper()
		rec := f.do(t, http.MethodGet, "/v1/play/"+asset+"/master.m3u8", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("master: %d %s", rec.Code, rec.Body)
		}
		return rec.Body.String()
	}

	// The failed rendition is listed, failed, with its error and the plan's
	// size; the master playlist leaves it out.
	a, _ := getAsset()
	if len(a.Renditions) != 2 {
		t.Fatalf("renditions = %+v", a.Renditions)
	}
	if r := a.Renditions[0]; r.Name != "360p" || r.State != "ready" || r.Error != nil || r.Bandwidth != 950_000 {
		t.Errorf("rendition[0] = %+v", r)
	}
	if r := a.Renditions[1]; r.Name != "720p" || r.State != "failed" || r.Width != 1280 || r.Height != 720 ||
		r.Error == nil || r.Error.Code != "packaging_failed" || r.Error.Message != "segmenter exited 1" {
		t.Errorf("rendition[1] = %+v (error %+v)", r, r.Error)
	}
	if m := master(); !strings.Contains(m, "360p/index.m3u8") || strings.Contains(m, "720p") {
		t.Errorf("master:\n%s", m)
	}
	states := map[string]string{}
	for _, r := range f.job(t, id).Renditions {
		states[r.Name] = r.State
	}
	if states["720p"] != "failed" || states["360p"] != "ready" {
		t.Errorf("job rendition states = %v", states)
	}
	// A failed rendition's media routes are not found.
	if rec := f.do(t, http.MethodGet, "/v1/play/"+asset+"/720p/index.m3u8", ""); rec.Code != http.StatusNotFound {
		t.Errorf("failed rendition's playlist: %d", rec.Code)
	}

	// The asset JSON with a failed rendition follows the OpenAPI schema.
	var doc struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	_, raw := getAsset()
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatal(err)
	}
	for _, e := range validate(doc.Components.Schemas, json.RawMessage(`{"$ref":"#/components/schemas/Asset"}`), v, "Asset") {
		t.Error(e)
	}

	// Retry errors.
	post := func(asset, name string) int {
		t.Helper()
		return f.do(t, http.MethodPost, "/v1/assets/"+asset+"/renditions/"+name+"/retry", "").Code
	}
	_, otherAsset := testJob("rendition-retry-other")
	for _, c := range []struct {
		asset, name string
		want        int
	}{
		{asset, "360p", http.StatusConflict},  // ready
		{asset, "1080p", http.StatusNotFound}, // unknown
		{asset, "no.pe", http.StatusNotFound}, // not a rendition name
		{otherAsset, "720p", http.StatusNotFound},
		{"ast_x", "720p", http.StatusBadRequest},
	} {
		if got := post(c.asset, c.name); got != c.want {
			t.Errorf("retry %s/%s: %d, want %d", c.asset, c.name, got, c.want)
		}
	}
	pendingID, pendingAsset := testJob("rendition-retry-pending")
	f.apply(t, event(pendingID, queued, 0), event(pendingID, probing, 0))
	if got := post(pendingAsset, "720p"); got != http.StatusConflict {
		t.Errorf("retry on a job that is not ready: %d, want 409", got)
	}
	// A failing retrier rolls the count back.
	rr.err = errors.New("redis down")
	if got := post(asset, "720p"); got != http.StatusServiceUnavailable {
		t.Errorf("retry with a failing retrier: %d, want 503", got)
	}
	rr.err = nil
	if len(rr.tasks) != 0 {
		t.Fatalf("tasks after errors: %v", rr.tasks)
	}

	// The retry: 202 with the asset, and the right task.
	rec := f.do(t, http.MethodPost, "/v1/assets/"+asset+"/renditions/720p/retry", "")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("retry: %d %s", rec.Code, rec.Body)
	}
	var accepted assetJSON
	decode(t, rec, &accepted)
	if accepted.ID != asset || len(accepted.Renditions) != 2 || accepted.Renditions[1].State != "failed" {
		t.Errorf("202 body = %+v", accepted)
	}
	if len(rr.tasks) != 1 {
		t.Fatalf("%d tasks", len(rr.tasks))
	}
	task := rr.tasks[0]
	full := testOutputs(asset)
	want := &kilnv1.PackageTask{
		JobId: id, AssetId: asset, Attempt: 1, Media: testMedia(), Plan: testPlan(),
		Encoded:   []*kilnv1.EncodedRung{{Name: "720p", Object: &kilnv1.ObjectRef{Bucket: "outputs", Key: full.Renditions[0].EncodedKey}}}, // the key the READY recorded, not one derived from the layout
		PosterKey: full.PosterKey, Only: "720p", RenditionRetry: 1,
	}
	if !proto.Equal(task, want) {
		t.Errorf("task =\n%v\nwant\n%v", task, want)
	}
	if f.do(t, http.MethodPost, "/v1/assets/"+asset+"/renditions/720p/retry", "").Code != http.StatusAccepted ||
		len(rr.tasks) != 2 || rr.tasks[1].RenditionRetry != 2 {
		t.Errorf("second retry: %v", rr.tasks)
	}

	// Without a RenditionRetrier: 503.
	f.withRenditionRetrier(t, nil)
	if got := post(asset, "720p"); got != http.StatusServiceUnavailable {
		t.Errorf("retry without a retrier: %d, want 503", got)
	}
	f.withRenditionRetrier(t, rr)

	// The packager's partial READY: the rendition turns ready and joins the
	// master; its failure row is gone.
	changed, err := f.store.Apply(t.Context(), partialReady(id, "2"))
	if err != nil || !changed {
		t.Fatalf("partial ready: changed %v, %v", changed, err)
	}
	a, before := getAsset()
	if len(a.Renditions) != 2 || a.Renditions[0].Name != "360p" || a.Renditions[1].Name != "720p" ||
		a.Renditions[1].State != "ready" || a.Renditions[1].Error != nil || a.Renditions[1].Bandwidth != 3_400_000 {
		t.Errorf("renditions after the partial ready = %+v", a.Renditions)
	}
	checkMaster(t, f.do(t, http.MethodGet, "/v1/play/"+asset+"/master.m3u8", ""))
	if n := failureRows(t, f.store, asset); n != 0 {
		t.Errorf("%d failure rows after the partial ready", n)
	}
	for _, r := range f.job(t, id).Renditions {
		if r.State != "ready" {
			t.Errorf("job rendition %s is %s", r.Name, r.State)
		}
	}
	// Now ready, it cannot be retried.
	if got := post(asset, "720p"); got != http.StatusConflict {
		t.Errorf("retry of the recovered rendition: %d, want 409", got)
	}

	// The same event again, and a late failure of an earlier retry, change
	// nothing.
	late := partialReady(id, "1")
	late.Outputs.Renditions = nil
	late.Outputs.FailedRenditions = []*kilnv1.FailedRendition{{Name: "720p", Error: &kilnv1.JobError{Code: "packaging_failed"}}}
	for i, ev := range []*kilnv1.JobEvent{partialReady(id, "2"), late} {
		changed, err := f.store.Apply(t.Context(), ev)
		if err != nil || changed {
			t.Errorf("repeat %d: changed %v, %v", i, changed, err)
		}
	}
	if _, after := getAsset(); after != before {
		t.Errorf("asset changed by a repeated event:\n%s\n%s", before, after)
	}
	if err := f.svc.HandleEvent(t.Context(), partialReady(id, "2")); err != nil {
		t.Errorf("HandleEvent(repeat): %v", err)
	}
}

// TestRenditionRetryWithoutEncodedKey: a failed rendition whose encoded
// object is not known cannot be retried (409), and nothing is enqueued or
// counted; the catalog does not guess the key.
func TestRenditionRetryWithoutEncodedKey(t *testing.T) {
	f := newAPIFixture(t)
	rr := &fakeRenditionRetrier{}
	f.withRenditionRetrier(t, rr)
	id, asset := testJob("rendition-retry-no-key")
	ev := readyWithFailure(id)
	ev.Outputs.FailedRenditions[0].EncodedKey = ""
	f.apply(t, event(id, queued, 0), event(id, probing, 0), ev)
	rec := f.do(t, http.MethodPost, "/v1/assets/"+asset+"/renditions/720p/retry", "")
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), CodeConflict) {
		t.Fatalf("retry without an encoded key: %d %s, want 409", rec.Code, rec.Body)
	}
	if len(rr.tasks) != 0 {
		t.Errorf("tasks = %v", rr.tasks)
	}
	a, err := f.store.Asset(t.Context(), asset)
	if err != nil || len(a.Failed) != 1 || a.Failed[0].Retries != 0 {
		t.Errorf("asset = %+v, %v; the retry must not be counted", a, err)
	}
}

// dbWritingRetrier is a RenditionRetrier that, while "enqueueing", writes to
// the catalog's database the way event application does: it can only
// succeed if no transaction holds the single writer across the enqueue.
type dbWritingRetrier struct {
	t    *testing.T
	db   sqldialect.DB
	errs []error
}

func (r *dbWritingRetrier) RetryRendition(ctx context.Context, _ *kilnv1.PackageTask) error {
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := r.db.ExecContext(wctx, `UPDATE jobs SET updated_at = updated_at WHERE 1 = 0`)
	r.errs = append(r.errs, err)
	return nil
}

// TestRenditionRetryEnqueuesOutsideTransaction: the enqueue of a rendition
// retry (a Redis call) runs after the retry's transaction has committed, so
// the database is free meanwhile.
func TestRenditionRetryEnqueuesOutsideTransaction(t *testing.T) {
	f := newAPIFixture(t)
	rr := &dbWritingRetrier{t: t, db: dbOf(t, f.store)}
	f.withRenditionRetrier(t, rr)
	id, asset := testJob("rendition-retry-tx")
	f.apply(t, event(id, queued, 0), event(id, probing, 0), event(id, transcoding, 0), event(id, packaging, 0),
		readyWithFailure(id))
	if rec := f.do(t, http.MethodPost, "/v1/assets/"+asset+"/renditions/720p/retry", ""); rec.Code != http.StatusAccepted {
		t.Fatalf("retry: %d %s", rec.Code, rec.Body)
	}
	if len(rr.errs) != 1 || rr.errs[0] != nil {
		t.Fatalf("a database write during the enqueue: %v (the enqueue ran inside a transaction)", rr.errs)
	}
}
