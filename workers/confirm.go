package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
)

// ffmpeg blames the input for some failures of the network that it cannot
// tell apart from bad input: a server that closes the connection before
// answering prints "<url>: End of file", like a truncated Ogg file served
// correctly; a seek the server drops (the mov demuxer reading a moov atom
// at the end of the file) prints "moov atom not found", like an MP4
// without one. Before such a verdict fails a job for good, readSource asks
// twice more: the server itself (checkRead), then ffmpeg once more.

// readSource runs one ffmpeg or ffprobe read of the source at rawURL
// (pinned to etag) and classifies its failure (classify with code and
// message). A verdict of bad input is confirmed before it is returned:
// when a ranged GET of the source's first byte fails at the transport or
// answers 5xx, 401 or 403, the failure is the infrastructure's (retried);
// when the server answers, run goes once more and its own outcome counts.
func (h *Handlers) readSource(ctx context.Context, rawURL, etag, code, message string, run func() error) error {
	err := classify(run(), code, message)
	if !badInputVerdict(err) {
		return err
	}
	if cerr := checkRead(ctx, h.cfg.HTTPClient, rawURL, etag); cerr != nil {
		var ee *ffmpeg.ExitError
		errors.As(err, &ee) // badInputVerdict found it; wrapped alone, without asynq.SkipRetry
		return fmt.Errorf("workers: ffmpeg blamed the source, but a check read of it failed too, so it is retried: %w (ffmpeg: %w)", cerr, ee)
	}
	return classify(run(), code, message)
}

// badInputVerdict reports whether err is classify's permanent failure for
// an ffmpeg run that blamed its input.
func badInputVerdict(err error) bool {
	var ee *ffmpeg.ExitError
	return errors.Is(err, asynq.SkipRetry) && errors.As(err, &ee) && ee.Cause() == ffmpeg.CauseInput &&
		!errors.Is(err, ffmpeg.ErrOutputTooLarge)
}

// checkRead GETs the first byte of rawURL (an http(s) URL; other inputs,
// local files in tests, pass) with the ETag pin, and returns an error when
// the transport fails or the server answers 5xx, 401 or 403. Other answers
// (206, 200, 404, 412…) say the server works: what ffmpeg made of the
// bytes stands.
func checkRead(ctx context.Context, client *http.Client, rawURL, etag string) error {
	if !strings.HasPrefix(rawURL, "http://") && !strings.HasPrefix(rawURL, "https://") {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil // ffmpeg could not have read it either: its verdict stands
	}
	req.Header.Set("Range", "bytes=0-0")
	if etag != "" {
		req.Header.Set("If-Match", `"`+etag+`"`)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("check read: %w", redactURL(err))
	}
	defer resp.Body.Close()
	_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("check read: the source's server answered %s", resp.Status)
	case rerr != nil:
		return fmt.Errorf("check read: %w", redactURL(rerr))
	}
	return nil
}

// redactURL drops the (presigned, secret-bearing) URL from a client error.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
