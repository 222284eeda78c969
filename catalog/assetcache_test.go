package catalog

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/playlist"
)

// TestPlaybackCacheFollowsChanges: playback reads assets through a cache,
// which forgets an asset as soon as its job changes — applied here, deleted
// here, or changed by another replica and announced (JobChanged). The
// fixture's clock stands still, so nothing expires by itself.
func TestPlaybackCacheFollowsChanges(t *testing.T) {
	f := newPlaybackFixture(t, func(c *Config) { c.Remover, c.OutputsBucket = nopRemover{}, "outputs" })
	// master answers the status of a public master request and, for a 200,
	// checks its body (plain and gzipped) is the master of the asset
	// stored now — or, when the cache is meant to be stale, the one
	// answered before: the rendered master is cached with its asset and
	// must follow it.
	var last []byte
	master := func(stale bool) int {
		t.Helper()
		rec := f.get(t, "/v1/play/"+f.public+"/master.m3u8")
		if rec.Code != http.StatusOK {
			return rec.Code
		}
		a, err := f.svc.store.Asset(t.Context(), f.public)
		if err != nil {
			t.Fatal(err)
		}
		want := playlist.Master(a.variants())
		if stale {
			want = last
		}
		last = want
		if !bytes.Equal(rec.Body.Bytes(), want) {
			t.Errorf("master:\n%s\nwant the stored asset's:\n%s", rec.Body, want)
		}
		zrec := f.get(t, "/v1/play/"+f.public+"/master.m3u8", "Accept-Encoding", "gzip")
		zr, err := gzip.NewReader(zrec.Body)
		if err != nil {
			t.Fatalf("gzipped master: %v", err)
		}
		if got, err := io.ReadAll(zr); err != nil || !bytes.Equal(got, want) {
			t.Errorf("gzipped master: %q, %v; want the stored asset's", got, err)
		}
		return rec.Code
	}
	if code := master(false); code != http.StatusOK {
		t.Fatalf("master: %d", code)
	}
	job := jobid.JobOf(f.public)

	// Another replica starts the job over (a new attempt: no asset until
	// it plays again) straight in the shared store.
	restart := event(job, queued, 0)
	restart.EventId, restart.Attempt = job+".a2.queued", 2
	if _, err := f.svc.store.Apply(t.Context(), restart); err != nil {
		t.Fatal(err)
	}
	if code := master(true); code != http.StatusOK {
		t.Fatalf("master before the change notice: %d, want the cached 200 (the test would prove nothing)", code)
	}
	f.svc.JobChanged(job)
	if code := master(false); code != http.StatusNotFound {
		t.Errorf("master after the change notice: %d, want 404", code)
	}

	// Applied on this replica: at once.
	ready := event(job, ready, 0)
	ready.EventId, ready.Attempt = job+".a2.ready", 2
	ready.Outputs.Renditions[0].Bandwidth += 100_000 // attempt 2 measured another peak: another master
	if err := f.svc.HandleEvent(t.Context(), ready); err != nil {
		t.Fatal(err)
	}
	if code := master(false); code != http.StatusOK {
		t.Fatalf("master of the ready attempt 2: %d", code)
	}
	// Deleted on this replica: at once.
	if rec := f.do(t, http.MethodDelete, "/v1/assets/"+f.public, nil, "Authorization", "Bearer "+testKey); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	if code := master(false); code != http.StatusNotFound {
		t.Errorf("master of a deleted asset: %d, want 404", code)
	}
}

// nopRemover removes nothing (the fixture's objects stay).
type nopRemover struct{}

func (nopRemover) Remove(context.Context, string, string) error       { return nil }
func (nopRemover) RemovePrefix(context.Context, string, string) error { return nil }
