// Package failure declares why a job fails: the machine-readable codes a
// failed job (and its webhook, and its API view) carries, and the error type
// that carries a code from the stage that decided it to the task failure
// handler. Every stage, the catalog and the webhooks take their codes from
// here, so each code is written once. (tasks.Permanent makes an Error that
// asynq does not retry.)
package failure

import (
	"context"
	"errors"
)

// Failure codes of a job (kilnv1.JobError.code).
const (
	// Bad input: the source can never be processed.
	InvalidMedia     = "invalid_media"
	UnsupportedCodec = "unsupported_codec"
	NoStreams        = "no_video_or_audio"
	TooLarge         = "too_large"
	TooLong          = "too_long"
	TooManyStreams   = "too_many_streams"
	InvalidPreset    = "invalid_preset"

	// A stage could not produce its output from a source it accepted.
	TranscodeFailed = "transcode_failed"
	ThumbnailFailed = "thumbnail_failed"
	PackageFailed   = "package_failed"

	// SourceChanged: the source object was replaced (or its ETag no longer
	// matches) after it was probed; the new object is a job of its own.
	SourceChanged = "source_changed"

	// Timeout: a task ran past its time limit, twice (tasks.LimitRetries),
	// or on every attempt.
	Timeout = "timeout"
	// ResourcesExhausted: ffmpeg ran out of memory (its limit,
	// KILN_FFMPEG_MAX_MEMORY, or the OOM killer), twice.
	ResourcesExhausted = "resources_exhausted"
	// Stalled: the job made no progress past the deadline of its state
	// (the catalog's reconciler decided it; see docs/architecture.md).
	Stalled = "stalled"
	// Canceled: the job was canceled (or a retry replaced the attempt).
	Canceled = "canceled"
	// Internal: anything else, after retries.
	Internal = "internal"
)

// Error is a job failure with a machine-readable reason code.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Code + ": " + e.Message
	}
	return e.Code + ": " + e.Message + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrCanceled is wrapped (in a permanent Canceled error) by a stage that
// finds its job canceled or its attempt replaced by a retry.
var ErrCanceled = errors.New("job canceled")

// Messages of the canceled code.
const (
	MessageCanceled = "the job was canceled"
	MessageReplaced = "a retry replaced this attempt"
)

// CodeOf returns the code and message of err: those of its *Error, Timeout
// for a deadline, Internal otherwise.
func CodeOf(err error) (code, message string) {
	var fe *Error
	switch {
	case errors.As(err, &fe):
		return fe.Code, fe.Message
	case errors.Is(err, context.DeadlineExceeded):
		return Timeout, "processing took longer than its time limit"
	}
	return Internal, "processing failed after retries"
}
