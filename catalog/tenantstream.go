package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
)

// jobShown is what a tenant's stream last sent of a job: a change of any of
// these sends it again.
type jobShown struct {
	state    State
	attempt  int32
	progress float64
	playable time.Time
	chunks   Chunks
	failed   int
}

func shownOf(j *Job) jobShown {
	return jobShown{j.State, j.Attempt, j.Progress, j.PlayableAt, j.Chunks, len(j.FailedRenditions)}
}

// maxShown bounds the jobs a tenant's stream remembers it sent; past it,
// it forgets them all (and may send a job again that did not change).
const maxShown = 10_000

// deletedJSON is the data of a tenant stream's "deleted" event.
type deletedJSON struct {
	ID      string `json:"id"`
	AssetID string `json:"asset_id"`
}

// tenantEvents answers GET /v1/events with a text/event-stream of every
// change to the jobs of the key's tenant: first a "ready" event (from then
// on no change is missed: a client reads GET /v1/jobs after it), then a
// "job" event (the job, as GET /v1/jobs/{id} shows it) for each change of a
// job's state, attempt, progress, chunk counts, playable time or failed
// renditions, and a "deleted" event ({"id","asset_id"}) when its asset is
// deleted. "resync" says changes were too many to follow one by one (the
// client reads the listing again). A comment goes every heartbeat. The
// stream counts against Config.MaxStreamsPerKey as a job's does, and has
// its write timeout. Other tenants' jobs never appear.
func (s *Service) tenantEvents(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, "GET /v1/events takes no query parameters")
		return
	}
	sub := s.hub.subscribeAll(streamKey(r))
	if sub == nil {
		s.tooManyStreams(w, r, "GET /v1/jobs")
		return
	}
	defer s.hub.unsubscribe(sub)
	write := s.startStream(w)
	seq := 0
	event := func(name string, v any) bool {
		data, err := json.Marshal(v) // one line: JSON escapes newlines
		if err != nil {
			s.log.Error("render tenant event", zap.Error(err))
			return false
		}
		seq++
		return write(fmt.Appendf(nil, "id: %d\nevent: %s\ndata: %s\n\n", seq, name, data))
	}
	if !event("ready", struct{}{}) {
		return
	}
	ctx := r.Context()
	shown := map[string]jobShown{}
	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-heartbeat.C:
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
			continue
		case <-sub.ch:
		}
		ids, overflow := s.hub.take(sub)
		if overflow {
			clear(shown)
			if !event("resync", struct{}{}) {
				return
			}
			continue
		}
		for _, id := range ids {
			j, err := s.store.Job(ctx, id)
			switch {
			case errors.Is(err, ErrNotFound):
				// Deleted (or not recorded yet): tell the tenant's
				// client once, when the job was its own.
				owner, terr := s.store.JobTenant(ctx, id)
				if _, was := shown[id]; terr != nil || !httpapi.Owns(ctx, owner) || (was && shown[id] == jobShown{}) {
					continue
				}
				shown[id] = jobShown{}
				if !event("deleted", deletedJSON{ID: id, AssetID: jobid.AssetOf(id)}) {
					return
				}
				continue
			case err != nil:
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("tenant events: read job", zap.String("job_id", id), zap.Error(err))
				continue
			case !httpapi.Owns(ctx, j.TenantID):
				continue
			}
			now := shownOf(j)
			if last, ok := shown[id]; ok && last == now {
				continue
			}
			if len(shown) >= maxShown {
				clear(shown)
			}
			shown[id] = now
			v, err := s.jobView(j)
			if err != nil {
				s.log.Error("render job event", zap.String("job_id", id), zap.Error(err))
				continue
			}
			if !event("job", v) {
				return
			}
		}
	}
}
