package catalog

import "sync"

// hub is the in-process broadcaster behind GET /v1/jobs/{id}/events:
// HandleEvent notifies it of every job an event changed, JobChanged of every
// job another catalog replica changed (Config.Changes), and each
// subscriber of that job gets a wake-up (coalesced: a slow subscriber
// misses no change, it reads the job's latest state once). Notifying never
// blocks the event consumer.
//
// A subscriber of every job (subscribeAll, GET /v1/events) is woken by
// every change and told which jobs changed (take): the stream filters them
// by tenant itself.
//
// Each API key may hold at most maxPerKey subscriptions at once (open event
// streams), so one key cannot pin an unbounded number of goroutines.
type hub struct {
	mu        sync.Mutex
	subs      map[string]map[*subscriber]struct{} // job id -> subscribers
	all       map[*subscriber]struct{}            // subscribers of every job
	perKey    map[string]int                      // API key name -> subscriptions
	maxPerKey int                                 // 0: unbounded
}

type subscriber struct {
	jobID string // "" for a subscriber of every job
	key   string
	ch    chan struct{} // capacity 1: "the job changed since you last looked"
	// changed holds the jobs changed since the last take (a subscriber
	// of every job), at most maxPending; overflow: more were.
	changed  map[string]struct{}
	overflow bool
}

// maxPending bounds the changed jobs a subscriber of every job holds
// between two takes; past it, the stream asks its client to read the
// listing again (overflow).
const maxPending = 1000

func newHub(maxPerKey int) *hub {
	return &hub{subs: make(map[string]map[*subscriber]struct{}), all: make(map[*subscriber]struct{}),
		perKey: make(map[string]int), maxPerKey: maxPerKey}
}

// subscribeAll registers a subscriber of every job for the API key named
// key; nil when key holds maxPerKey subscriptions already.
func (h *hub) subscribeAll(key string) *subscriber {
	s := &subscriber{key: key, ch: make(chan struct{}, 1), changed: make(map[string]struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.maxPerKey > 0 && h.perKey[key] >= h.maxPerKey {
		return nil
	}
	h.perKey[key]++
	h.all[s] = struct{}{}
	return s
}

// take returns (and forgets) the jobs changed since the last take of a
// subscriber of every job, and whether some were not kept (overflow).
func (h *hub) take(s *subscriber) (ids []string, overflow bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range s.changed {
		ids = append(ids, id)
	}
	clear(s.changed)
	overflow, s.overflow = s.overflow, false
	return ids, overflow
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
	if s.changed != nil {
		if _, ok := h.all[s]; !ok {
			return
		}
		delete(h.all, s)
	} else {
		if _, ok := h.subs[s.jobID][s]; !ok {
			return
		}
		delete(h.subs[s.jobID], s)
		if len(h.subs[s.jobID]) == 0 {
			delete(h.subs, s.jobID)
		}
	}
	if h.perKey[s.key]--; h.perKey[s.key] <= 0 {
		delete(h.perKey, s.key)
	}
}

func (h *hub) notify(jobID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	wake := func(s *subscriber) {
		select {
		case s.ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	for s := range h.subs[jobID] {
		wake(s)
	}
	for s := range h.all {
		if len(s.changed) < maxPending {
			s.changed[jobID] = struct{}{}
		} else if _, ok := s.changed[jobID]; !ok {
			s.overflow = true
		}
		wake(s)
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
	return n + len(h.all)
}
