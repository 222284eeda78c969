// Package jobevent builds kiln's job events: the facts every stage publishes
// about a job (kilnv1.JobEvent on NATS, subject kiln.jobs.<job_id>), with
// event ids that are stable per job, attempt and fact, so a repeated publish
// is deduplicated by JetStream and ignored by the catalog.
package jobevent

import (
	"strconv"

	"google.golang.org/protobuf/types/known/timestamppb"

	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// New builds the event of fact (e.g. "probing", "ready",
// "transcoding.42") of one attempt of a job: the event carries the attempt,
// and its id is distinct per attempt (attempt 1 keeps the ids of producers
// that predate attempts).
func New(jobID, assetID string, attempt int32, state kilnv1.JobState, fact string) *kilnv1.JobEvent {
	a := max(attempt, 1)
	id := jobID + "." + fact
	if a > 1 {
		id = jobID + ".a" + strconv.Itoa(int(a)) + "." + fact
	}
	return &kilnv1.JobEvent{
		EventId: id,
		JobId:   jobID,
		AssetId: assetID,
		State:   state,
		Time:    timestamppb.Now(),
		Attempt: a,
	}
}

// Failed builds the FAILED (or, for the canceled code, CANCELED) event of
// one attempt with its reason.
func Failed(jobID, assetID string, attempt int32, code, message string) *kilnv1.JobEvent {
	ev := New(jobID, assetID, attempt, kilnv1.JobState_JOB_STATE_FAILED, "failed")
	ev.Error = &kilnv1.JobError{Code: code, Message: message}
	return ev
}
