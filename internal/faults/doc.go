// Package faults is kiln's fault suite: scenarios that run kiln as separate
// processes (one `kiln ingest`, two `kiln worker`, one `kiln catalog`)
// against Redis, NATS JetStream and MinIO processes of their own, inject a
// fault — a worker or the catalog killed with -9, MinIO, Redis or NATS
// restarted, a bucket event delivered twice, everything killed at once — and
// check that no job is lost: every good job ends ready and plays, the bad
// input fails with a code, no output is duplicated or orphaned and no ffmpeg
// is left behind.
//
// The tests skip by design unless KILN_FAULTS=1 (`go tool task faults`,
// which runs every scenario); under `go tool task test`
// (KILN_TEST_REQUIRE_SERVICES=1) the short scenarios worker_kill and
// duplicate_event run too. Each scenario keeps the logs of every process in
// its temp folder and prints their tails when it fails; the table of what
// was measured is logged at the end and written to $KILN_FAULTS_REPORT when
// set.
package faults
