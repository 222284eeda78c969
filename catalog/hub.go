package catalog

import "sync"

// hub is the in-process broadcaster behind GET /v1/jobs/{id}/events:
// HandleEvent notifies it of every job an event changed, JobChanged of every
// job another catalog replica changed (Config.Changes), and each
// subscriber of that job gets a wake-up (coalesced: a slow subscriber
// misses no change, it reads the job's latest state once). Notifying never
// blocks the event consumer.
//
// Each API key may hold at most maxPerKey subscriptions at once (open event
// streams), so one key cannot pin an unbounded number of goroutines.
type hub struct {
	mu        sync.Mutex
	subs      map[string]map[*subscriber]struct{} // job id -> subscribers
	perKey    map[string]int                      // API key name -> subscriptions
	maxPerKey int                                 // 0: unbounded
}

type subscriber struct {
	jobID string
	key   string
	ch    chan struct{} // capacity 1: "the job changed since you last looked"
}

func newHub(maxPerKey int) *hub {
	return &hub{subs: make(map[string]map[*subscriber]struct{}), perKey: make(map[string]int), maxPerKey: maxPerKey}
}

// subscribe registers a subscriber of jobID for the API key named key; it
// returns nil when key already holds maxPerKey subscriptions.
func (h *hub) subscribe(jobID, key string) *subscriber {
	s := &subscriber{jobID: jobID, key: key, ch: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.maxPerKey > 0 && h.perKey[key] >= h.maxPerKey {
		return nil
	}
	h.perKey[key]++
	if h.subs[jobID] == nil {
		h.subs[jobID] = make(map[*subscriber]struct{})
	}
	h.subs[jobID][s] = struct{}{}
	return s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s.jobID][s]; !ok {
		return
	}
	delete(h.subs[s.jobID], s)
	if len(h.subs[s.jobID]) == 0 {
		delete(h.subs, s.jobID)
	}
	if h.perKey[s.key]--; h.perKey[s.key] <= 0 {
		delete(h.perKey, s.key)
	}
}

func (h *hub) notify(jobID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[jobID] {
		select {
		case s.ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// count is the number of subscribers (tests).
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}
