package admission

import (
	"context"
	"encoding/json"

	"github.com/hibiken/asynq"
)

// AdmitOnly admits one task as an admitter does and stops there, as if it
// died before enqueueing it.
func AdmitOnly(ctx context.Context, q *Queue, slots int) error {
	return admit.Run(ctx, q.cfg.Redis, nil, slots, q.cfg.MaxPerTenant, q.weights).Err()
}

// SubmitOnly keeps a task waiting as EnqueueContext does, without
// admitting anything.
func SubmitOnly(ctx context.Context, q *Queue, task *asynq.Task, opts ...asynq.Option) error {
	c, _, err := commandOf(task, opts)
	if err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return submit.Run(ctx, q.cfg.Redis, nil, c.ID, c.Tenant, c.Priority, "0", data).Err()
}
