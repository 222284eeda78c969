package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// cliUsage documents the API client commands and their exit codes; it is
// part of `kiln help`.
const cliUsage = `
API client (talks to a running kiln over HTTP):
  kiln upload FILE [--preset P] [--playback-policy public|signed] [--webhook-url URL] [--wait]
                 stream FILE to the upload API with a progress bar on stderr and print
                 the job id; --wait follows the job (progress on stderr) and then prints
                 the HLS playback URL
                 over --multipart-threshold (64MiB) in parts straight to storage
                 (--parallel, --part-size); run it again after a drop to resume
  kiln jobs [--state S] [--limit N] [--cursor C]
                 list jobs: id, state, progress (and chunks N/M of a chunked transcode),
                 created, source key
  kiln job ID    print a job as JSON
  kiln delete ASSET_ID
                 delete an asset
  kiln dead-letters [--consumer C] [--limit N] [--cursor C]
                 list the bus messages a consumer could never process: seq, consumer,
                 subject, failed, deliveries, reason
  kiln dead-letters replay SEQ
                 republish a dead letter to its original subject (after a fix) and
                 delete it
  kiln tenants create NAME | list | delete TENANT_ID
                 manage tenants (an admin key); create prints the tenant id, delete
                 disables it and revokes its keys
  kiln tenants quotas TENANT_ID [--concurrent-jobs N] [--stored-bytes N] [--encoded-minutes N]
                 set a tenant's quotas (an admin key; 0 or absent: no limit)
  kiln usage [--tenant TENANT_ID]
                 the key's tenant's usage against its quotas (an admin key: --tenant's)
  kiln keys create TENANT_ID --name N [--scope read|write] | list TENANT_ID | revoke KEY_ID
                 manage a tenant's API keys (an admin key); create prints the secret,
                 shown this once, alone on stdout; a revoked key stops within 5 s

  Client flags (anywhere after the command):
    --api-url URL   kiln API base URL ($KILN_API_URL, default http://127.0.0.1:8700)
    --api-key KEY   bearer API key ($KILN_API_KEY; read keys can list and show,
                    uploads, deletes and replays need a write key, tenants and keys
                    an admin key; a key sees its own tenant's jobs only)

Exit codes:
  0  success
  1  generic error (including an interrupt)
  2  bad usage: unknown command or flag, missing argument, no API key
  3  the API refused the request (HTTP 4xx: unauthorized, forbidden, not_found,
     rate_limited, invalid_preset, …); the error code and message go to stderr
  4  server or network error (HTTP 5xx, connection refused, unreadable answer)
  5  the job failed (upload --wait)
  6  the job was canceled (upload --wait)
`

// Exit codes of the client commands.
const (
	exitOK       = 0
	exitGeneric  = 1
	exitUsage    = 2
	exitAPI      = 3
	exitServer   = 4
	exitFailed   = 5
	exitCanceled = 6
)

// exitError carries the process exit code of an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErr(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

// exitCode is the exit status for err: its exitError code, 3 or 4 for API
// errors, 1 otherwise.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.exitCode()
	}
	if err == nil {
		return exitOK
	}
	return exitGeneric
}

// apiError is a non-2xx answer of the API.
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *apiError) Error() string {
	if e.Code != "" {
		return e.Code + ": " + e.Message
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

func (e *apiError) exitCode() int {
	if e.Status >= 400 && e.Status < 500 {
		return exitAPI
	}
	return exitServer
}

// isStatus reports whether err is an API answer with this status.
func isStatus(err error, status int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == status
}

// cliEnv is what the client commands run with; tests replace its parts.
type cliEnv struct {
	stdout, stderr io.Writer
	// tty redraws progress bars in place (stderr is a terminal).
	tty  bool
	http *http.Client
	now  func() time.Time
	// pollEvery is the job polling interval when the events stream is
	// unavailable.
	pollEvery time.Duration
	// notFoundGrace is how long a job may be unknown to the catalog after
	// its upload (its first event is still on the way).
	notFoundGrace time.Duration
	// retryWait is the least wait before retrying a 429 answer.
	retryWait time.Duration
	getenv    func(string) string
}

// runCLI runs a client command from main.
func runCLI(cmd string, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ExpectContinueTimeout = 2 * time.Second
	tr.ResponseHeaderTimeout = 2 * time.Minute
	e := &cliEnv{
		stdout: stdout, stderr: stderr, tty: isTerminal(stderr),
		http: &http.Client{Transport: tr}, now: time.Now,
		pollEvery: time.Second, notFoundGrace: 2 * time.Minute, retryWait: time.Second, getenv: os.Getenv,
	}
	return e.run(ctx, cmd, args)
}

// isTerminal reports whether w is a character device (and TERM is not dumb).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (e *cliEnv) run(ctx context.Context, cmd string, args []string) error {
	var err error
	switch cmd {
	case "upload":
		err = e.upload(ctx, args)
	case "jobs":
		err = e.jobs(ctx, args)
	case "job":
		err = e.job(ctx, args)
	case "delete":
		err = e.deleteAsset(ctx, args)
	case "dead-letters":
		err = e.deadLetters(ctx, args)
	case "tenants":
		err = e.tenants(ctx, args)
	case "keys":
		err = e.keys(ctx, args)
	case "usage":
		err = e.usage(ctx, args)
	default:
		return usageErr("unknown command %q", cmd)
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, flag.ErrHelp) {
		return withCode(exitGeneric, fmt.Errorf("interrupted: %w", err))
	}
	return err
}

// clientFlags are the flags every client command takes.
type clientFlags struct {
	apiURL, apiKey string
	getenv         func(string) string
}

func (e *cliEnv) flagSet(cmd, synopsis string) (*flag.FlagSet, *clientFlags) {
	fs := flag.NewFlagSet("kiln "+cmd, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cf := &clientFlags{}
	def := e.getenv("KILN_API_URL")
	if def == "" {
		def = "http://127.0.0.1:8700"
	}
	fs.StringVar(&cf.apiURL, "api-url", def, "kiln API base URL ($KILN_API_URL)")
	// The key's default stays empty so that -h never prints it.
	fs.StringVar(&cf.apiKey, "api-key", "", "bearer API key ($KILN_API_KEY)")
	cf.getenv = e.getenv
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: kiln %s %s\n\nFlags (anywhere after the command):\n", cmd, synopsis)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nExit codes: 0 ok, 1 error, 2 usage, 3 API 4xx, 4 server/network, 5 job failed, 6 job canceled.\n")
	}
	return fs, cf
}

// parseArgs parses flags placed anywhere among the arguments ("--" ends the
// flags) and checks the number of positional arguments.
func parseArgs(fs *flag.FlagSet, args []string, wantArgs int) ([]string, error) {
	var rest []string
	if i := indexOf(args, "--"); i >= 0 {
		args, rest = args[:i], args[i+1:]
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, withCode(exitUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	pos = append(pos, rest...)
	if len(pos) != wantArgs {
		fs.Usage()
		if len(pos) < wantArgs {
			return nil, usageErr("missing argument")
		}
		return nil, usageErr("unexpected arguments: %s", strings.Join(pos[wantArgs:], " "))
	}
	return pos, nil
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

// client calls the kiln API.
type client struct {
	base string
	key  string
	http *http.Client
	// retryWait is the least wait before retrying a 429.
	retryWait time.Duration
}

func (e *cliEnv) client(cf *clientFlags) (*client, error) {
	base := strings.TrimRight(strings.TrimSpace(cf.apiURL), "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageErr("--api-url %q: want http(s)://host[:port]", cf.apiURL)
	}
	key := strings.TrimSpace(cf.apiKey)
	if key == "" {
		key = strings.TrimSpace(cf.getenv("KILN_API_KEY"))
	}
	if key == "" {
		return nil, usageErr("no API key: set --api-key or KILN_API_KEY")
	}
	return &client{base: base, key: key, http: e.http, retryWait: e.retryWait}, nil
}

func (c *client) request(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, withCode(exitGeneric, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("User-Agent", "kiln-cli/"+version())
	return req, nil
}

// do sends req. A non-2xx answer is an *apiError (its body read and closed);
// a transport failure has exit code 4.
func (c *client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, withCode(exitGeneric, req.Context().Err())
		}
		return nil, withCode(exitServer, fmt.Errorf("%s %s: %w", req.Method, redactURL(req.URL), unwrapURLError(err)))
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readAPIError(resp)
}

// redactURL drops the query (it may carry a webhook URL with secrets).
func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	return c.String()
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// readAPIError turns an error answer into an *apiError, using the JSON
// envelope {"error":{"code","message"}} when there is one.
func readAPIError(resp *http.Response) *apiError {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	ae := &apiError{Status: resp.StatusCode}
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &env) == nil && env.Error.Code != "" {
		ae.Code, ae.Message = env.Error.Code, env.Error.Message
	} else {
		msg := strings.TrimSpace(string(data))
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		ae.Message = msg
	}
	if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s >= 0 {
		ae.RetryAfter = time.Duration(s) * time.Second
	}
	return ae
}

// getJSON GETs path into v, waiting out a few 429 answers (Retry-After).
func (c *client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	return c.sendJSON(ctx, http.MethodGet, path, q, nil, v)
}

// sendJSON sends body (nil: none) as JSON and decodes the answer into v (a
// *json.RawMessage takes it as is), sending again after a 429 answer, at
// most 3 times, once its Retry-After has passed.
func (c *client) sendJSON(ctx context.Context, method, path string, q url.Values, body, v any) error {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return withCode(exitGeneric, err)
		}
	}
	for attempt := 0; ; attempt++ {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(data)
		}
		req, err := c.request(ctx, method, path, q, r)
		if err != nil {
			return err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.do(req)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests && attempt < 3 {
			if err := sleep(ctx, max(ae.RetryAfter, c.retryWait)); err != nil {
				return withCode(exitGeneric, err)
			}
			continue
		}
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err != nil {
			return withCode(exitServer, fmt.Errorf("%s %s: reading the answer: %w", method, path, err))
		}
		if raw, ok := v.(*json.RawMessage); ok {
			*raw = answer
			return nil
		}
		if err := json.Unmarshal(answer, v); err != nil {
			return withCode(exitServer, fmt.Errorf("%s %s: unreadable answer: %w", method, path, err))
		}
		return nil
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// jobInfo is the part of a job the client uses.
type jobInfo struct {
	ID       string  `json:"id"`
	AssetID  string  `json:"asset_id"`
	State    string  `json:"state"`
	Progress float64 `json:"progress"`
	// PlayableAt is set once the job's outputs play, before it is ready.
	PlayableAt *time.Time `json:"playable_at,omitempty"`
	// Chunks is a chunked transcode's progress; nil when not chunked.
	Chunks *struct {
		Done  int32 `json:"done"`
		Total int32 `json:"total"`
	} `json:"chunks,omitempty"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
	Source struct {
		Bucket string `json:"bucket"`
		Key    string `json:"key"`
	} `json:"source"`
	CreatedAt time.Time `json:"created_at"`
}

// chunks is " chunks N/M" for a chunked transcode, else "".
func (j jobInfo) chunks() string {
	if j.Chunks == nil || j.Chunks.Total <= 0 {
		return ""
	}
	return fmt.Sprintf(" chunks %d/%d", j.Chunks.Done, j.Chunks.Total)
}

func (e *cliEnv) jobs(ctx context.Context, args []string) error {
	fs, cf := e.flagSet("jobs", "[--state S] [--limit N] [--cursor C]")
	state := fs.String("state", "", "only jobs in this state (queued, probing, transcoding, packaging, ready, failed, canceled)")
	pf := addPageFlags(fs, "jobs")
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	q, err := pf.query()
	if err != nil {
		return err
	}
	c, err := e.client(cf)
	if err != nil {
		return err
	}
	if *state != "" {
		q.Set("state", *state)
	}
	var page struct {
		Jobs       []jobInfo `json:"jobs"`
		NextCursor string    `json:"next_cursor"`
	}
	if err := c.getJSON(ctx, "/v1/jobs", q, &page); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPROGRESS\tCREATED\tSOURCE")
	for _, j := range page.Jobs {
		created := stamp(j.CreatedAt)
		src := j.Source.Key
		if src == "" {
			src = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", j.ID, j.State, percent(j.Progress)+j.chunks(), created, src)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(e.stderr, "more jobs: kiln jobs --cursor %s\n", page.NextCursor)
	}
	return nil
}

// pageFlags are the --limit and --cursor of a listing command.
type pageFlags struct {
	limit  *int
	cursor *string
}

func addPageFlags(fs *flag.FlagSet, what string) pageFlags {
	return pageFlags{
		limit:  fs.Int("limit", 0, "at most N "+what+" (0: the server's default page)"),
		cursor: fs.String("cursor", "", "continue a listing from this next_cursor"),
	}
}

// query is the page's query string, or a usage error for a bad --limit.
func (p pageFlags) query() (url.Values, error) {
	if *p.limit < 0 {
		return nil, usageErr("--limit %d: want ≥ 0", *p.limit)
	}
	q := url.Values{}
	if *p.limit > 0 {
		q.Set("limit", strconv.Itoa(*p.limit))
	}
	if *p.cursor != "" {
		q.Set("cursor", *p.cursor)
	}
	return q, nil
}

// stamp is a listing's local time, "-" when unknown.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func percent(p float64) string {
	p = min(max(p, 0), 1)
	return strconv.Itoa(int(p*100)) + "%"
}

func (e *cliEnv) job(ctx context.Context, args []string) error {
	fs, cf := e.flagSet("job", "ID")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	c, err := e.client(cf)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.getJSON(ctx, "/v1/jobs/"+url.PathEscape(pos[0]), nil, &raw); err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, bytes.TrimSpace(raw), "", "  "); err != nil {
		return withCode(exitServer, fmt.Errorf("unreadable answer: %w", err))
	}
	out.WriteByte('\n')
	_, err = e.stdout.Write(out.Bytes())
	return err
}

func (e *cliEnv) deleteAsset(ctx context.Context, args []string) error {
	fs, cf := e.flagSet("delete", "ASSET_ID")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	c, err := e.client(cf)
	if err != nil {
		return err
	}
	req, err := c.request(ctx, http.MethodDelete, "/v1/assets/"+url.PathEscape(pos[0]), nil, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	fmt.Fprintln(e.stdout, "deleted", pos[0])
	return nil
}
