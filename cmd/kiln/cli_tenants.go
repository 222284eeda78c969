package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"
)

// tenantInfo and keyInfo are what the client shows of a tenant and a key.
type (
	tenantInfo struct {
		ID        string      `json:"id"`
		Name      string      `json:"name"`
		CreatedAt time.Time   `json:"created_at"`
		Disabled  bool        `json:"disabled"`
		Quotas    quotaLimits `json:"quotas"`
	}
	quotaLimits struct {
		ConcurrentJobs         int64 `json:"concurrent_jobs"`
		StoredBytes            int64 `json:"stored_bytes"`
		EncodedMinutesPerMonth int64 `json:"encoded_minutes_per_month"`
	}
	keyInfo struct {
		ID        string    `json:"id"`
		TenantID  string    `json:"tenant_id"`
		Name      string    `json:"name"`
		Scope     string    `json:"scope"`
		Secret    string    `json:"secret"`
		CreatedAt time.Time `json:"created_at"`
		Revoked   bool      `json:"revoked"`
	}
)

// tenants runs `kiln tenants create NAME | list | delete ID` (an admin key).
func (e *cliEnv) tenants(ctx context.Context, args []string) error {
	sub, rest := "", args
	if len(args) > 0 {
		sub, rest = args[0], args[1:]
	}
	switch sub {
	case "create":
		fs, cf := e.flagSet("tenants create", "NAME")
		pos, err := parseArgs(fs, rest, 1)
		if err != nil {
			return err
		}
		c, err := e.client(cf)
		if err != nil {
			return err
		}
		var t tenantInfo
		if err := c.postJSON(ctx, "/v1/tenants", nil, map[string]string{"name": pos[0]}, &t); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, t.ID)
		return nil
	case "list":
		fs, cf := e.flagSet("tenants list", "")
		if _, err := parseArgs(fs, rest, 0); err != nil {
			return err
		}
		c, err := e.client(cf)
		if err != nil {
			return err
		}
		var page struct {
			Tenants []tenantInfo `json:"tenants"`
		}
		if err := c.getJSON(ctx, "/v1/tenants", nil, &page); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tCREATED\tSTATE")
		for _, t := range page.Tenants {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, stamp(t.CreatedAt), activeOr(t.Disabled, "deleted"))
		}
		return tw.Flush()
	case "delete":
		fs, cf := e.flagSet("tenants delete", "TENANT_ID")
		pos, err := parseArgs(fs, rest, 1)
		if err != nil {
			return err
		}
		if err := e.deleteRequest(ctx, cf, "/v1/tenants/"+url.PathEscape(pos[0])); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "deleted tenant", pos[0], "(its keys are revoked)")
		return nil
	case "quotas":
		fs, cf := e.flagSet("tenants quotas", "TENANT_ID [--concurrent-jobs N] [--stored-bytes N] [--encoded-minutes N]")
		var l quotaLimits
		fs.Int64Var(&l.ConcurrentJobs, "concurrent-jobs", 0, "jobs running at once, uploads becoming one included (0: no limit)")
		fs.Int64Var(&l.StoredBytes, "stored-bytes", 0, "bytes of sources kept (0: no limit)")
		fs.Int64Var(&l.EncodedMinutesPerMonth, "encoded-minutes", 0, "minutes of video made ready per calendar month, UTC (0: no limit)")
		pos, err := parseArgs(fs, rest, 1)
		if err != nil {
			return err
		}
		c, err := e.client(cf)
		if err != nil {
			return err
		}
		var t tenantInfo
		if err := c.sendJSON(ctx, http.MethodPut, "/v1/tenants/"+url.PathEscape(pos[0])+"/quotas", nil, l, &t); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "quotas of %s: concurrent jobs %s, stored bytes %s, encoded minutes per month %s\n", t.ID,
			limitText(t.Quotas.ConcurrentJobs), limitText(t.Quotas.StoredBytes), limitText(t.Quotas.EncodedMinutesPerMonth))
		return nil
	}
	return usageErr("kiln tenants: want create NAME, list, delete TENANT_ID or quotas TENANT_ID")
}

// keys runs `kiln keys create TENANT_ID --name N [--scope read|write] |
// list TENANT_ID | revoke KEY_ID` (an admin key). create prints the new
// secret alone on stdout (it is shown once), its id on stderr.
func (e *cliEnv) keys(ctx context.Context, args []string) error {
	sub, rest := "", args
	if len(args) > 0 {
		sub, rest = args[0], args[1:]
	}
	switch sub {
	case "create":
		fs, cf := e.flagSet("keys create", "TENANT_ID --name N [--scope read|write]")
		name := fs.String("name", "", "the key's name, shown in logs (letters, digits, '.', '_', '-')")
		scope := fs.String("scope", "write", "read (GET and HEAD only) or write")
		pos, err := parseArgs(fs, rest, 1)
		if err != nil {
			return err
		}
		if *name == "" {
			return usageErr("kiln keys create: --name is required")
		}
		c, err := e.client(cf)
		if err != nil {
			return err
		}
		var k keyInfo
		if err := c.postJSON(ctx, "/v1/tenants/"+url.PathEscape(pos[0])+"/keys", nil,
			map[string]string{"name": *name, "scope": *scope}, &k); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "created key %s (%s, %s scope) of tenant %s; its secret is shown this once:\n", k.ID, k.Name, k.Scope, k.TenantID)
		fmt.Fprintln(e.stdout, k.Secret)
		return nil
	case "list":
		fs, cf := e.flagSet("keys list", "TENANT_ID")
		pos, err := parseArgs(fs, rest, 1)
		if err != nil {
			return err
		}
		c, err := e.client(cf)
		if err != nil {
			return err
		}
		var page struct {
			Keys []keyInfo `json:"keys"`
		}
		if err := c.getJSON(ctx, "/v1/tenants/"+url.PathEscape(pos[0])+"/keys", nil, &page); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tSTATE")
		for _, k := range page.Keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Scope, stamp(k.CreatedAt), activeOr(k.Revoked, "revoked"))
		}
		return tw.Flush()
	case "revoke":
		fs, cf := e.flagSet("keys revoke", "KEY_ID")
		pos, err := parseArgs(fs, rest, 1)
		if err != nil {
			return err
		}
		if err := e.deleteRequest(ctx, cf, "/v1/keys/"+url.PathEscape(pos[0])); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "revoked key", pos[0], "(every role refuses it within 5 s)")
		return nil
	}
	return usageErr("kiln keys: want create TENANT_ID --name N [--scope read|write], list TENANT_ID or revoke KEY_ID")
}

// usage runs `kiln usage [--tenant TENANT_ID]`: the key's tenant's usage
// (GET /v1/usage), or with an admin key another tenant's.
func (e *cliEnv) usage(ctx context.Context, args []string) error {
	fs, cf := e.flagSet("usage", "[--tenant TENANT_ID]")
	of := fs.String("tenant", "", "the tenant (an admin key); default the key's own")
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	c, err := e.client(cf)
	if err != nil {
		return err
	}
	path := "/v1/usage"
	if *of != "" {
		path = "/v1/tenants/" + url.PathEscape(*of) + "/usage"
	}
	type figures struct {
		Used  float64 `json:"used"`
		Limit *int64  `json:"limit"`
	}
	var u struct {
		TenantID       string    `json:"tenant_id"`
		PeriodStart    time.Time `json:"period_start"`
		PeriodEnd      time.Time `json:"period_end"`
		ConcurrentJobs figures   `json:"concurrent_jobs"`
		StoredBytes    figures   `json:"stored_bytes"`
		EncodedMinutes figures   `json:"encoded_minutes"`
	}
	if err := c.getJSON(ctx, path, nil, &u); err != nil {
		return err
	}
	limit := func(f figures) string {
		if f.Limit == nil {
			return "no limit"
		}
		return strconv.FormatInt(*f.Limit, 10)
	}
	fmt.Fprintf(e.stdout, "tenant %s, %s to %s\n", u.TenantID, u.PeriodStart.Format(time.DateOnly), u.PeriodEnd.Format(time.DateOnly))
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUOTA\tUSED\tLIMIT")
	fmt.Fprintf(tw, "concurrent jobs\t%.0f\t%s\n", u.ConcurrentJobs.Used, limit(u.ConcurrentJobs))
	fmt.Fprintf(tw, "stored bytes\t%.0f\t%s\n", u.StoredBytes.Used, limit(u.StoredBytes))
	fmt.Fprintf(tw, "encoded minutes this month\t%.2f\t%s\n", u.EncodedMinutes.Used, limit(u.EncodedMinutes))
	return tw.Flush()
}

func limitText(n int64) string {
	if n <= 0 {
		return "no limit"
	}
	return strconv.FormatInt(n, 10)
}

// deleteRequest sends DELETE path and discards the answer.
func (e *cliEnv) deleteRequest(ctx context.Context, cf *clientFlags, path string) error {
	c, err := e.client(cf)
	if err != nil {
		return err
	}
	req, err := c.request(ctx, http.MethodDelete, path, nil, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.Body.Close()
}

func activeOr(off bool, word string) string {
	if off {
		return word
	}
	return "active"
}
