package fakes

import (
	"errors"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/failure"
)

// WantPermanent fails tb unless err is a permanent failure (not retried)
// with code.
func WantPermanent(tb testing.TB, err error, code string) {
	tb.Helper()
	if !errors.Is(err, asynq.SkipRetry) {
		tb.Fatalf("error %v: want permanent (asynq.SkipRetry)", err)
	}
	var fe *failure.Error
	if !errors.As(err, &fe) || fe.Code != code {
		tb.Fatalf("error %v: want code %q", err, code)
	}
}

// WantRetryable fails tb unless err is cause (or wraps it) and is retried:
// neither permanent nor carrying a failure code.
func WantRetryable(tb testing.TB, err, cause error) {
	tb.Helper()
	if err == nil {
		tb.Fatal("no error, want one")
	}
	if !errors.Is(err, cause) {
		tb.Fatalf("error %v: want it to be %v", err, cause)
	}
	if errors.Is(err, asynq.SkipRetry) {
		tb.Fatalf("error %v: permanent, want retryable", err)
	}
	var fe *failure.Error
	if errors.As(err, &fe) {
		tb.Fatalf("error %v: carries failure code %q, want none", err, fe.Code)
	}
}

// WantCanceled fails tb unless err is the permanent canceled error.
func WantCanceled(tb testing.TB, err error) {
	tb.Helper()
	WantPermanent(tb, err, failure.Canceled)
	if !errors.Is(err, failure.ErrCanceled) {
		tb.Fatalf("error %v: want it to wrap failure.ErrCanceled", err)
	}
}

// CheckCanceled reports an error on tb (and goes on, unlike WantCanceled)
// unless err is the permanent canceled error; what names the call that
// returned err.
func CheckCanceled(tb testing.TB, err error, what string) {
	tb.Helper()
	var te *failure.Error
	if !errors.Is(err, failure.ErrCanceled) || !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &te) || te.Code != "canceled" {
		tb.Errorf("%s = %v, want a permanent ErrCanceled with code canceled", what, err)
	}
}
