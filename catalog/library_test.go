package catalog

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kilnvideo/kiln/internal/jobid"
)

// TestListJobsByName: GET /v1/jobs?q= finds the key's jobs by source file
// name (with the state filter and pages), and refuses a q that is too long
// or given twice.
func TestListJobsByName(t *testing.T) {
	f := newAPIFixture(t)
	for i, name := range []string{"Beach Day.mp4", "beach-night.mov", "office.mkv"} {
		// An upload's job id is derived from its object.
		key := "uploads/0123456789abcdef0123456" + string(rune('0'+i)) + "/" + strings.ReplaceAll(name, " ", "_")
		id, _ := jobid.FromObject("sources", key, "e1")
		ev := event(id, queued, 0)
		ev.Source.Key = key
		f.apply(t, ev)
		if i == 1 {
			f.apply(t, event(id, failed, 0))
		}
	}
	list := func(q url.Values) (int, []string) {
		t.Helper()
		rec := f.do(t, http.MethodGet, "/v1/jobs?"+q.Encode(), "")
		if rec.Code != http.StatusOK {
			return rec.Code, nil
		}
		var page listJobsJSON
		decode(t, rec, &page)
		var keys []string
		for _, j := range page.Jobs {
			keys = append(keys, j.Source.Key[strings.LastIndex(j.Source.Key, "/")+1:])
		}
		return rec.Code, keys
	}
	if _, got := list(url.Values{"q": {"BEACH"}}); strings.Join(got, ",") != "beach-night.mov,Beach_Day.mp4" {
		t.Errorf("q=BEACH: %v", got)
	}
	if _, got := list(url.Values{"q": {"beach day"}}); strings.Join(got, ",") != "Beach_Day.mp4" {
		t.Errorf("q=beach day: %v", got)
	}
	if _, got := list(url.Values{"q": {"beach"}, "state": {"failed"}}); strings.Join(got, ",") != "beach-night.mov" {
		t.Errorf("q=beach&state=failed: %v", got)
	}
	if _, got := list(url.Values{"q": {"zzz"}}); len(got) != 0 {
		t.Errorf("q=zzz: %v", got)
	}
	if code, _ := list(url.Values{"q": {strings.Repeat("a", MaxNameFilter+1)}}); code != http.StatusBadRequest {
		t.Errorf("q too long: %d", code)
	}
	if code, _ := list(url.Values{"q": {"a", "b"}}); code != http.StatusBadRequest {
		t.Errorf("q twice: %d", code)
	}
}
