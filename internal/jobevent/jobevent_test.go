package jobevent_test

import (
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/jobevent"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func TestEvent(t *testing.T) {
	tests := []struct {
		attempt     int32
		wantID      string
		wantAttempt int32
	}{
		{0, "job1.failed", 1},
		{1, "job1.failed", 1},
		{2, "job1.a2.failed", 2},
		{7, "job1.a7.failed", 7},
	}
	for _, tt := range tests {
		before := time.Now()
		ev := jobevent.New("job1", "asset1", tt.attempt, kilnv1.JobState_JOB_STATE_FAILED, "failed")
		if ev.GetEventId() != tt.wantID || ev.GetAttempt() != tt.wantAttempt {
			t.Errorf("Event(attempt %d): id %q attempt %d, want %q, %d", tt.attempt, ev.GetEventId(), ev.GetAttempt(), tt.wantID, tt.wantAttempt)
		}
		if ev.GetJobId() != "job1" || ev.GetAssetId() != "asset1" || ev.GetState() != kilnv1.JobState_JOB_STATE_FAILED {
			t.Errorf("Event(attempt %d) = %v", tt.attempt, ev)
		}
		if ts := ev.GetTime().AsTime(); ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("Event time %s, want now", ts)
		}
	}
	// Same job, fact and attempt: same id (JetStream dedupes redeliveries);
	// another fact or attempt: another id.
	a1 := jobevent.New("j", "a", 1, kilnv1.JobState_JOB_STATE_READY, "ready").GetEventId()
	if again := jobevent.New("j", "a", 1, kilnv1.JobState_JOB_STATE_READY, "ready").GetEventId(); again != a1 {
		t.Errorf("event id not deterministic: %q then %q", a1, again)
	}
	a2 := jobevent.New("j", "a", 2, kilnv1.JobState_JOB_STATE_READY, "ready").GetEventId()
	other := jobevent.New("j", "a", 1, kilnv1.JobState_JOB_STATE_FAILED, "failed").GetEventId()
	if a1 == a2 || a1 == other || a2 == other {
		t.Errorf("event ids not distinct: attempt 1 %q, attempt 2 %q, other fact %q", a1, a2, other)
	}
}
