package catalog

import (
	"github.com/kilnvideo/kiln/catalog/eventtest"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

var t0 = eventtest.T0

// The catalog's own tests apply the store suite's events (eventtest).
var (
	testJob     = eventtest.Job
	event       = eventtest.Event
	testMedia   = eventtest.Media
	testPlan    = eventtest.Plan
	testOutputs = eventtest.Outputs
	testSource  = eventtest.Source
)

const (
	queued      = kilnv1.JobState_JOB_STATE_QUEUED
	probing     = kilnv1.JobState_JOB_STATE_PROBING
	transcoding = kilnv1.JobState_JOB_STATE_TRANSCODING
	packaging   = kilnv1.JobState_JOB_STATE_PACKAGING
	ready       = kilnv1.JobState_JOB_STATE_READY
	failed      = kilnv1.JobState_JOB_STATE_FAILED
)
