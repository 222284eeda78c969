package catalog

import "sync"

// hub is the in-process broadcaster behind GET /v1/jobs/{id}/events:
// HandleEvent notifies it of every job an event changed, and each
// subscriber of that job gets a wake-up (coalesced: a slow subscriber
// misses no change, it reads the job's latest state once). Notifying never
// blocks the event consumer.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[*subscriber]struct{} // job id -> subscribers
}

type subscriber struct {
	jobID string
	ch    chan struct{} // capacity 1: "the job changed since you last looked"
}

func newHub() *hub { return &hub{subs: make(map[string]map[*subscriber]struct{})} }

func (h *hub) subscribe(jobID string) *subscriber {
	s := &subscriber{jobID: jobID, ch: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[jobID] == nil {
		h.subs[jobID] = make(map[*subscriber]struct{})
	}
	h.subs[jobID][s] = struct{}{}
	return s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[s.jobID], s)
	if len(h.subs[s.jobID]) == 0 {
		delete(h.subs, s.jobID)
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
