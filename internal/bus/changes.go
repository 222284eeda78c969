package bus

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// jobChangesPrefix is the prefix of the subjects on which catalog replicas
// tell each other which job they changed (kiln_changes.<job_id>). They are
// plain NATS subjects outside the stream KILN (kiln.>): a change notice is a
// wake-up for the event streams of the replicas (GET /v1/jobs/{id}/events),
// worth nothing once delivered, so it is not stored.
const jobChangesPrefix = "kiln_changes."

// jobChanges is the wildcard of every job's change notices.
const jobChanges = jobChangesPrefix + "*"

// AnnounceJobChange tells every catalog replica that job jobID changed.
// The notice carries nothing but the id: each replica reads the job from
// the shared store.
func (b *Bus) AnnounceJobChange(jobID string) error {
	if jobID == "" || strings.ContainsAny(jobID, ".*> \t\r\n") {
		return fmt.Errorf("bus: job change: invalid job id %q", jobID)
	}
	if err := b.nc.Publish(jobChangesPrefix+jobID, nil); err != nil {
		return fmt.Errorf("bus: job change %s: %w", jobID, err)
	}
	return nil
}

// JobChanges calls fn with the id of every job a catalog replica (this one
// included) announces changed, until ctx ends. fn runs on the connection's
// delivery goroutine and must not block. Notices sent while the connection
// is down are lost: subscribers that must not miss a change look again now
// and then (the event stream does at every heartbeat).
func (b *Bus) JobChanges(ctx context.Context, fn func(jobID string)) error {
	sub, err := b.nc.Subscribe(jobChanges, func(m *nats.Msg) {
		fn(strings.TrimPrefix(m.Subject, jobChangesPrefix))
	})
	if err != nil {
		return fmt.Errorf("bus: job changes: %w", err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}
