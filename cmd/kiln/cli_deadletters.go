package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// deadLetterInfo is the part of a dead letter the client shows.
type deadLetterInfo struct {
	Seq        uint64    `json:"seq"`
	Consumer   string    `json:"consumer"`
	Subject    string    `json:"subject"`
	Reason     string    `json:"reason"`
	FailedAt   time.Time `json:"failed_at"`
	Deliveries uint64    `json:"deliveries"`
	Size       int       `json:"size"`
}

// deadLetters runs `kiln dead-letters [--consumer C] [--limit N] [--cursor C]`
// and `kiln dead-letters replay SEQ`.
func (e *cliEnv) deadLetters(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "replay" {
		return e.replayDeadLetter(ctx, args[1:])
	}
	fs, cf := e.flagSet("dead-letters", "[--consumer C] [--limit N] [--cursor C] | replay SEQ")
	consumer := fs.String("consumer", "", "only this consumer's dead letters (ingest, catalog)")
	pf := addPageFlags(fs, "dead letters")
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
	if *consumer != "" {
		q.Set("consumer", *consumer)
	}
	var page struct {
		DeadLetters []deadLetterInfo `json:"dead_letters"`
		NextCursor  string           `json:"next_cursor"`
	}
	if err := c.getJSON(ctx, "/v1/dead-letters", q, &page); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tCONSUMER\tSUBJECT\tFAILED\tDELIVERIES\tREASON")
	for _, d := range page.DeadLetters {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", d.Seq, d.Consumer, d.Subject, stamp(d.FailedAt), d.Deliveries, oneLine(d.Reason, 120))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(e.stderr, "more dead letters: kiln dead-letters --cursor %s\n", page.NextCursor)
	}
	return nil
}

func (e *cliEnv) replayDeadLetter(ctx context.Context, args []string) error {
	fs, cf := e.flagSet("dead-letters replay", "SEQ")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(pos[0], 10, 64); err != nil || n == 0 {
		return usageErr("dead letter %q: want its SEQ, a positive integer (kiln dead-letters lists them)", pos[0])
	}
	c, err := e.client(cf)
	if err != nil {
		return err
	}
	req, err := c.request(ctx, http.MethodPost, "/v1/dead-letters/"+url.PathEscape(pos[0])+"/replay", nil, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var d deadLetterInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&d); err != nil {
		return withCode(exitServer, fmt.Errorf("unreadable answer: %w", err))
	}
	fmt.Fprintf(e.stdout, "replayed dead letter %d to %s (consumer %s)\n", d.Seq, d.Subject, d.Consumer)
	return nil
}

// oneLine shortens s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	if s == "" {
		return "-"
	}
	return s
}
