// Package fakes holds the test doubles the stage handlers' unit tests share
// (workers, packager): object storage (Objects), the job-event bus (Events),
// the task queue (Queue), the cancel state (Jobs), the errors
// *ffmpeg.Runner reports (ExitError, SignaledError, …), assertions on
// the errors a handler returns (WantPermanent, WantRetryable,
// WantCanceled, CheckCanceled), and stage tasks to feed them (ProbeTask,
// EnqueueStage). Only tests import it; what differs between the stages (the
// fake ffmpeg, which writes each stage's outputs) stays in their tests.
//
// Every fake is safe for concurrent use; its zero value works (records
// everything, fails nothing).
package fakes

// Input is the argument of -i in an ffmpeg command line, or "".
func Input(args []string) string {
	for i, a := range args {
		if a == "-i" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
