package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kilnvideo/kiln/internal/tasks"
)

// redrawEvery bounds terminal redraws of a progress bar (10 per second).
const redrawEvery = 100 * time.Millisecond

func (e *cliEnv) upload(ctx context.Context, args []string) error {
	fs, cf := e.flagSet("upload", "FILE [--preset P] [--playback-policy public|signed] [--priority high|normal|low] [--webhook-url URL] [--wait]")
	preset := fs.String("preset", "", "encoding preset (server default: default)")
	policy := fs.String("playback-policy", "", "public or signed (server default: public)")
	priority := fs.String("priority", "", "high, normal or low: the order of this upload's transcode among your waiting ones (server default: normal)")
	webhook := fs.String("webhook-url", "", "URL notified of this job's events")
	wait := fs.Bool("wait", false, "follow the job until it ends and print the HLS playback URL")
	mp := multipartFlags(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *policy != "" && *policy != "public" && *policy != "signed" {
		return usageErr("--playback-policy %q: want public or signed", *policy)
	}
	if *priority != "" && !tasks.ValidPriority(*priority) {
		return usageErr("--priority %q: want high, normal or low", *priority)
	}
	c, err := e.client(cf)
	if err != nil {
		return err
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return withCode(exitGeneric, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return withCode(exitGeneric, err)
	}
	if !fi.Mode().IsRegular() {
		return usageErr("%s: not a regular file", pos[0])
	}
	if mp.parallel < 1 {
		return usageErr("--parallel %d: want at least 1", mp.parallel)
	}
	q := url.Values{"filename": {filepath.Base(pos[0])}}
	if *preset != "" {
		q.Set("preset", *preset)
	}
	if *policy != "" {
		q.Set("playback_policy", *policy)
	}
	if *priority != "" {
		q.Set("priority", *priority)
	}
	if *webhook != "" {
		q.Set("webhook_url", *webhook)
	}

	var up uploadAnswer
	if fi.Size() > 0 && fi.Size() > mp.threshold.n {
		up, err = e.uploadMultipart(ctx, c, f, fi, pos[0], q, mp)
	} else {
		up, err = e.uploadStream(ctx, c, f, fi, pos[0], q)
	}
	if err != nil {
		return err
	}
	if up.WebhookSecret != "" {
		// Shown once, by the server too: keep it to verify the webhooks.
		fmt.Fprintf(e.stderr, "webhook secret (shown once; verifies this upload's webhooks): %s\n", up.WebhookSecret)
	}
	fmt.Fprintln(e.stdout, up.JobID)
	if !*wait {
		return nil
	}
	assetOf := func(j jobInfo) string {
		if j.AssetID != "" {
			return j.AssetID
		}
		return up.AssetID
	}
	// The playback URL is printed once: as soon as the job is playable
	// (its segments play while it still encodes), else when it is ready.
	printed := false
	job, err := e.wait(ctx, c, up.JobID, func(j jobInfo) {
		hls, err := e.hlsURL(ctx, c, assetOf(j))
		if err != nil { // it is tried again when the job is ready
			fmt.Fprintf(e.stderr, "job %s is playable, but its playback URL is not available yet: %v\n", j.ID, err)
			return
		}
		fmt.Fprintln(e.stdout, hls)
		fmt.Fprintf(e.stderr, "playable while encoding: %s (waiting for ready)\n", hls)
		printed = true
	})
	if err != nil {
		return err
	}
	switch job.State {
	case "ready":
	case "failed":
		msg := "no reason given"
		if job.Error != nil {
			msg = job.Error.Code + ": " + job.Error.Message
		}
		return withCode(exitFailed, fmt.Errorf("job %s failed: %s", job.ID, msg))
	default: // canceled
		return withCode(exitCanceled, fmt.Errorf("job %s was canceled", job.ID))
	}
	if printed {
		return nil
	}
	hls, err := e.hlsURL(ctx, c, assetOf(job))
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, hls)
	return nil
}

// uploadAnswer is the part of an upload's answer the client uses.
type uploadAnswer struct {
	JobID         string `json:"job_id"`
	AssetID       string `json:"asset_id"`
	WebhookSecret string `json:"webhook_secret"`
}

// uploadStream sends the file as the body of POST /v1/uploads.
func (e *cliEnv) uploadStream(ctx context.Context, c *client, f *os.File, fi os.FileInfo, path string, q url.Values) (uploadAnswer, error) {
	bar := newTransferBar(e.stderr, e.tty, e.now, fi.Size())
	var body io.Reader = &countingReader{r: f, onRead: bar.add}
	if fi.Size() == 0 {
		body = http.NoBody // the server answers empty_upload
	}
	req, err := c.request(ctx, http.MethodPost, "/v1/uploads", q, body)
	if err != nil {
		return uploadAnswer{}, err
	}
	req.ContentLength = fi.Size()
	ctype := mime.TypeByExtension(strings.ToLower(filepath.Ext(path)))
	if ctype == "" || strings.HasPrefix(ctype, "multipart/") {
		ctype = "application/octet-stream"
	}
	req.Header.Set("Content-Type", ctype)
	// Let the server refuse (bad key, bad preset, too large) before the
	// bytes are sent.
	req.Header.Set("Expect", "100-continue")
	resp, err := c.do(req)
	if err != nil {
		bar.stop()
		return uploadAnswer{}, err
	}
	defer resp.Body.Close()
	var up uploadAnswer
	if err := json.NewDecoder(resp.Body).Decode(&up); err != nil || up.JobID == "" {
		bar.stop()
		return uploadAnswer{}, withCode(exitServer, fmt.Errorf("upload: unreadable answer (status %d): %v", resp.StatusCode, err))
	}
	bar.done()
	return up, nil
}

// hlsURL is the HLS playback URL of a playable or ready asset.
func (e *cliEnv) hlsURL(ctx context.Context, c *client, assetID string) (string, error) {
	var asset struct {
		Playback *struct {
			HLS string `json:"hls"`
		} `json:"playback"`
	}
	if err := c.getJSON(ctx, "/v1/assets/"+url.PathEscape(assetID), nil, &asset); err != nil {
		return "", err
	}
	if asset.Playback == nil || asset.Playback.HLS == "" {
		return "", withCode(exitServer, fmt.Errorf("asset %s has no HLS playback URL", assetID))
	}
	return asset.Playback.HLS, nil
}

// countingReader reports every read to onRead.
type countingReader struct {
	r      io.Reader
	onRead func(n int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.onRead(int64(n))
	}
	return n, err
}

// liner writes progress lines: on a terminal it redraws one line in place
// (\r, at most every redrawEvery unless forced); elsewhere it prints whole
// lines and leaves the pacing to its caller.
type liner struct {
	w      io.Writer
	tty    bool
	now    func() time.Time
	last   time.Time
	onLine bool // a terminal line is drawn and not ended
}

// draw shows line; force skips the terminal rate bound.
func (l *liner) draw(line string, force bool) {
	if !l.tty {
		fmt.Fprintln(l.w, line)
		return
	}
	now := l.now()
	if !force && l.onLine && now.Sub(l.last) < redrawEvery {
		return
	}
	l.last = now
	fmt.Fprint(l.w, "\r"+line+"\x1b[K")
	l.onLine = true
}

// end finishes the terminal line, if any.
func (l *liner) end() {
	if l.tty && l.onLine {
		fmt.Fprintln(l.w)
		l.onLine = false
	}
}

// transferBar shows bytes sent of total, the rate and the time left. The
// transport reads the body on its own goroutine, hence the mutex.
type transferBar struct {
	mu      sync.Mutex
	l       liner
	total   int64
	sent    int64
	resumed int64 // of sent, stored before this run (not counted in the rate)
	start   time.Time
	decile  int // last tenth printed when not on a terminal
	stopped bool
}

func newTransferBar(w io.Writer, tty bool, now func() time.Time, total int64) *transferBar {
	return &transferBar{l: liner{w: w, tty: tty, now: now}, total: total, start: now()}
}

// resume counts n bytes as sent by an earlier run.
func (b *transferBar) resume(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent += n
	b.resumed += n
}

// add counts n bytes sent (n < 0 takes back bytes of a failed part).
func (b *transferBar) add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	b.sent += n
	if b.l.tty {
		b.l.draw(b.render(), false)
		return
	}
	if b.total > 0 {
		if d := int(b.sent * 10 / b.total); d > b.decile && d < 10 {
			b.decile = d
			b.l.draw(b.render(), true)
		}
	}
}

// done prints the final line.
func (b *transferBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	b.stopped = true
	if b.l.tty {
		b.l.draw(b.render(), true)
		b.l.end()
	}
	elapsed := b.l.now().Sub(b.start)
	resumed := ""
	if b.resumed > 0 {
		resumed = fmt.Sprintf(", %s of it stored before", humanBytes(float64(b.resumed)))
	}
	fmt.Fprintf(b.l.w, "uploaded %s in %s (%s/s%s)\n", humanBytes(float64(b.sent)), roundDuration(elapsed),
		humanBytes(rate(b.sent-b.resumed, elapsed)), resumed)
}

// stop ends the bar without a summary (the upload failed).
func (b *transferBar) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	b.l.end()
}

func (b *transferBar) render() string {
	elapsed := b.l.now().Sub(b.start)
	r := rate(b.sent-b.resumed, elapsed)
	frac := 1.0
	if b.total > 0 {
		frac = float64(b.sent) / float64(b.total)
	}
	eta := "--"
	if r > 0 && b.sent < b.total {
		eta = roundDuration(time.Duration(float64(b.total-b.sent) / r * float64(time.Second))).String()
	} else if b.sent >= b.total {
		eta = "0s"
	}
	return fmt.Sprintf("upload %s %4s  %s / %s  %s/s  ETA %s",
		barGlyphs(frac, 24), percent(frac), humanBytes(float64(b.sent)), humanBytes(float64(b.total)), humanBytes(r), eta)
}

func rate(n int64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return float64(n) / elapsed.Seconds()
}

// barGlyphs draws [=====>    ] for a fraction in [0, 1].
func barGlyphs(frac float64, width int) string {
	frac = min(max(frac, 0), 1)
	full := int(frac * float64(width))
	var sb strings.Builder
	sb.WriteByte('[')
	sb.WriteString(strings.Repeat("=", full))
	if full < width {
		sb.WriteByte('>')
		sb.WriteString(strings.Repeat(" ", width-full-1))
	}
	sb.WriteByte(']')
	return sb.String()
}

// humanBytes formats n bytes with binary units.
func humanBytes(n float64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", int64(n))
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := -1
	for n >= unit && i < len(units)-1 {
		n /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

// roundDuration rounds to 0.1 s under 10 s, to the second above.
func roundDuration(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
