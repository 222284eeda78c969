package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// errNoEvents means the events stream is not available: poll instead.
// errJobUnknown (which wraps it) means the stream exists but the catalog has
// not recorded the job yet.
var (
	errNoEvents   = errors.New("job events stream unavailable")
	errJobUnknown = fmt.Errorf("%w: job not recorded yet", errNoEvents)
)

// terminal reports whether a job in state s will not change any more.
func terminal(s string) bool {
	switch s {
	case "ready", "failed", "canceled", "cancelled":
		return true
	}
	return false
}

// wait follows the job until it ends, showing its progress on stderr: from
// the events stream (SSE) when the server has one, by polling otherwise.
// onPlayable, when not nil, is called once, the first time the job is seen
// playable (playable_at) before it ends, with the progress line finished.
func (e *cliEnv) wait(ctx context.Context, c *client, jobID string, onPlayable func(jobInfo)) (jobInfo, error) {
	bar := &jobBar{l: liner{w: e.stderr, tty: e.tty, now: e.now}, id: jobID}
	defer bar.l.end()
	announced := false
	update := func(j jobInfo) {
		bar.update(j)
		if onPlayable != nil && !announced && j.PlayableAt != nil && !terminal(j.State) {
			announced = true
			bar.l.end()
			onPlayable(j)
		}
	}
	job, err := e.follow(ctx, c, jobID, update)
	if errors.Is(err, errJobUnknown) {
		// Right after an upload the catalog may not know the job yet:
		// poll until it does, then stream.
		job, err = e.poll(ctx, c, jobID, update, true)
		if err == nil && !terminal(job.State) {
			job, err = e.follow(ctx, c, jobID, update)
		}
	}
	if errors.Is(err, errNoEvents) {
		job, err = e.poll(ctx, c, jobID, update, false)
	}
	if err != nil {
		return job, err
	}
	bar.final(job)
	return job, nil
}

// follow reads GET /v1/jobs/{id}/events until the job ends. It returns
// errNoEvents when the stream is missing (a plain 404 and the like) or
// breaks before the end, so that the caller polls instead, and
// errJobUnknown when the API answers not_found for the job.
func (e *cliEnv) follow(ctx context.Context, c *client, jobID string, update func(jobInfo)) (jobInfo, error) {
	var last jobInfo
	req, err := c.request(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(jobID)+"/events", nil, nil)
	if err != nil {
		return last, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := c.do(req)
	var ae *apiError
	if errors.As(err, &ae) {
		switch {
		case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
			return last, err
		case ae.Status == http.StatusNotFound && ae.Code == "not_found":
			return last, errJobUnknown
		}
		return last, errNoEvents
	}
	if err != nil {
		if ctx.Err() != nil {
			return last, err
		}
		return last, errNoEvents
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return last, errNoEvents
	}
	sr := newSSEReader(resp.Body)
	for {
		ev, err := sr.next()
		if err != nil {
			if ctx.Err() != nil {
				return last, withCode(exitGeneric, ctx.Err())
			}
			return last, errNoEvents // stream ended early: poll for the rest
		}
		j, ok := parseJobEvent(ev)
		if !ok {
			continue
		}
		last = j
		update(j)
		if terminal(j.State) {
			return j, nil
		}
	}
}

// parseJobEvent reads a job from an event's data: the job object itself or
// {"job": {...}}. Heartbeats and other events give ok=false.
func parseJobEvent(ev sseEvent) (jobInfo, bool) {
	switch ev.Type {
	case "ping", "heartbeat", "keepalive":
		return jobInfo{}, false
	}
	data := bytes.TrimSpace([]byte(ev.Data))
	if len(data) == 0 || data[0] != '{' {
		return jobInfo{}, false
	}
	var j struct {
		jobInfo
		Job *jobInfo `json:"job"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		return jobInfo{}, false
	}
	if j.State == "" && j.Job != nil {
		return *j.Job, j.Job.State != ""
	}
	return j.jobInfo, j.State != ""
}

// poll GETs the job every pollEvery until it ends, or only until the
// catalog knows it with untilKnown. A job unknown to the catalog is fine for
// notFoundGrace (its first event may not be recorded yet); 429s wait out
// Retry-After; a few transient server or network errors in a row are
// tolerated.
func (e *cliEnv) poll(ctx context.Context, c *client, jobID string, update func(jobInfo), untilKnown bool) (jobInfo, error) {
	var last jobInfo
	start := e.now()
	failures := 0
	for {
		var j jobInfo
		err := c.getJSON(ctx, "/v1/jobs/"+url.PathEscape(jobID), nil, &j)
		wait := e.pollEvery
		var ae *apiError
		switch {
		case err == nil:
			failures = 0
			last = j
			update(j)
			if untilKnown || terminal(j.State) {
				return j, nil
			}
		case ctx.Err() != nil:
			return last, withCode(exitGeneric, ctx.Err())
		case isStatus(err, http.StatusNotFound) && e.now().Sub(start) < e.notFoundGrace:
		case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests:
			wait = max(wait, ae.RetryAfter)
		case exitCode(err) == exitServer && failures < 5:
			failures++
			wait = max(wait, time.Duration(failures)*time.Second)
		default:
			return last, err
		}
		if err := sleep(ctx, wait); err != nil {
			return last, withCode(exitGeneric, err)
		}
	}
}

// jobBar shows a job's state and progress.
type jobBar struct {
	l      liner
	id     string
	state  string
	decile int
}

func (b *jobBar) update(j jobInfo) {
	changed := j.State != b.state
	b.state = j.State
	if terminal(j.State) {
		return // final draws the end
	}
	if b.l.tty {
		b.l.draw(b.render(j), changed)
		return
	}
	d := int(min(max(j.Progress, 0), 1) * 10)
	if changed || d > b.decile {
		b.decile = d
		b.l.draw(b.render(j), true)
	}
}

func (b *jobBar) final(j jobInfo) {
	line := b.render(j)
	if j.State == "failed" && j.Error != nil {
		line += "  " + j.Error.Code + ": " + j.Error.Message
	}
	b.l.draw(line, true)
	b.l.end()
}

func (b *jobBar) render(j jobInfo) string {
	p := j.Progress
	if j.State == "ready" {
		p = 1
	}
	return fmt.Sprintf("%s %-11s %s %4s", b.id, j.State, barGlyphs(p, 24), percent(p)) + j.chunks()
}

// sseEvent is one server-sent event.
type sseEvent struct {
	Type string // "event:" field; "" means "message"
	Data string // "data:" lines joined with \n
	ID   string
}

// sseReader parses a text/event-stream (the WHATWG "server-sent events"
// format): lines end with \n, \r\n or \r; lines starting with ':' are
// comments (heartbeats); an empty line dispatches the event; events without
// data are dropped; "retry:" is ignored.
type sseReader struct {
	r      *bufio.Reader
	skipLF bool // the previous line ended with \r: drop a following \n
}

// maxSSELine bounds one line of the stream.
const maxSSELine = 1 << 20

func newSSEReader(r io.Reader) *sseReader { return &sseReader{r: bufio.NewReader(r)} }

// next returns the next event with data; io.EOF (or the read error) at the
// end — a half-received event at the end is dropped.
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data strings.Builder
	hasData := false
	for {
		line, err := s.line()
		if err != nil {
			return sseEvent{}, err
		}
		if line == "" {
			if hasData {
				ev.Data = data.String()
				return ev, nil
			}
			ev = sseEvent{}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Type = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			ev.ID = value
		}
	}
}

// line reads one line without its terminator.
func (s *sseReader) line() (string, error) {
	var sb strings.Builder
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return "", err
		}
		if s.skipLF {
			s.skipLF = false
			if c == '\n' {
				continue
			}
		}
		switch c {
		case '\n':
			return sb.String(), nil
		case '\r':
			s.skipLF = true
			return sb.String(), nil
		}
		if sb.Len() >= maxSSELine {
			return "", fmt.Errorf("event stream line longer than %d bytes", maxSSELine)
		}
		sb.WriteByte(c)
	}
}
