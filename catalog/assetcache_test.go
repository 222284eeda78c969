package catalog

import (
	"context"
	"net/http"
	"testing"

	"github.com/kilnvideo/kiln/internal/jobid"
)

// TestPlaybackCacheFollowsChanges: playback reads assets through a cache,
// which forgets an asset as soon as its job changes — applied here, deleted
// here, or changed by another replica and announced (JobChanged). The
// fixture's clock stands still, so nothing expires by itself.
func TestPlaybackCacheFollowsChanges(t *testing.T) {
	f := newPlaybackFixture(t, func(c *Config) { c.Remover, c.OutputsBucket = nopRemover{}, "outputs" })
	master := func() int { return f.get(t, "/v1/play/"+f.public+"/master.m3u8").Code }
	if code := master(); code != http.StatusOK {
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
	if code := master(); code != http.StatusOK {
		t.Fatalf("master before the change notice: %d, want the cached 200 (the test would prove nothing)", code)
	}
	f.svc.JobChanged(job)
	if code := master(); code != http.StatusNotFound {
		t.Errorf("master after the change notice: %d, want 404", code)
	}

	// Applied on this replica: at once.
	ready := event(job, ready, 0)
	ready.EventId, ready.Attempt = job+".a2.ready", 2
	if err := f.svc.HandleEvent(t.Context(), ready); err != nil {
		t.Fatal(err)
	}
	if code := master(); code != http.StatusOK {
		t.Fatalf("master of the ready attempt 2: %d", code)
	}
	// Deleted on this replica: at once.
	if rec := f.do(t, http.MethodDelete, "/v1/assets/"+f.public, nil, "Authorization", "Bearer "+testKey); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	if code := master(); code != http.StatusNotFound {
		t.Errorf("master of a deleted asset: %d, want 404", code)
	}
}

// nopRemover removes nothing (the fixture's objects stay).
type nopRemover struct{}

func (nopRemover) Remove(context.Context, string, string) error       { return nil }
func (nopRemover) RemovePrefix(context.Context, string, string) error { return nil }
