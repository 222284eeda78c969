package admission

import "context"

// AdmitOnly admits one task as an admitter does and stops there, as if it
// died before enqueueing it.
func AdmitOnly(ctx context.Context, q *Queue, slots int) error {
	return admit.Run(ctx, q.cfg.Redis, nil, slots, q.cfg.MaxPerTenant, q.weights).Err()
}
