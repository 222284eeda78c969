package storetest

import kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"

// Job states of events, short.
const (
	queued      = kilnv1.JobState_JOB_STATE_QUEUED
	probing     = kilnv1.JobState_JOB_STATE_PROBING
	transcoding = kilnv1.JobState_JOB_STATE_TRANSCODING
	packaging   = kilnv1.JobState_JOB_STATE_PACKAGING
	ready       = kilnv1.JobState_JOB_STATE_READY
	failed      = kilnv1.JobState_JOB_STATE_FAILED
	canceled    = kilnv1.JobState_JOB_STATE_CANCELED
)
