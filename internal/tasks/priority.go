package tasks

// Priorities of an upload's work (the upload's `priority`): each tenant's
// waiting transcodes are admitted to the fleet from three queues weighted
// 4:2:1 (internal/admission), so high runs first and low is never starved.
const (
	PriorityHigh   = "high"
	PriorityNormal = "normal"
	PriorityLow    = "low"
)

// Priorities lists them from the highest.
func Priorities() []string { return []string{PriorityHigh, PriorityNormal, PriorityLow} }

// ValidPriority reports whether p is a priority ("" is not: callers default
// it to PriorityNormal first).
func ValidPriority(p string) bool {
	return p == PriorityHigh || p == PriorityNormal || p == PriorityLow
}

// NormPriority maps "" (producers that predate priorities) to PriorityNormal.
func NormPriority(p string) string {
	if p == "" {
		return PriorityNormal
	}
	return p
}
