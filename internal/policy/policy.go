// Package policy declares the playback policies an upload chooses: who may
// play the asset. Ingest validates the choice, events carry it, the catalog
// enforces it.
package policy

// Playback policies.
const (
	// Public: playback URLs work for anyone who has them.
	Public = "public"
	// Signed: every playback URL needs an unexpired token.
	Signed = "signed"
)

// Valid reports whether p names a policy; "" is not one (callers default it
// to Public first).
func Valid(p string) bool { return p == Public || p == Signed }

// OfEvent normalises the policy a QUEUED event or object metadata carries:
// Signed is signed, anything else — including the empty policy of
// producers that predate policies — is public, as ingest decides.
func OfEvent(p string) string {
	if p == Signed {
		return Signed
	}
	return Public
}

// FailClosed reads a stored policy: anything but Public — in particular the
// empty policy of a job whose QUEUED event has not been recorded yet — is
// Signed.
func FailClosed(p string) string {
	if p == Public {
		return Public
	}
	return Signed
}
