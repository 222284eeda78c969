package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/catalog/webhooks"
	"github.com/kilnvideo/kiln/internal/app"
	"github.com/kilnvideo/kiln/internal/httpapi"
)

var allRoles = []string{"serve", "ingest", "worker", "catalog"}

// cleanEnv blanks every KILN_* variable of the test process (empty means
// unset) and then sets env.
func cleanEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "KILN_") {
			t.Setenv(name, "")
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func mustKeys(t *testing.T, s string) []httpapi.APIKey {
	t.Helper()
	keys, err := httpapi.ParseKeys(s)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// defaultsFor is what parseFlags returns given only one API key.
func defaultsFor(t *testing.T) app.Config {
	t.Helper()
	want := app.Defaults()
	want.PublicURL = "http://" + want.HTTPAddr
	want.APIKeys = mustKeys(t, "kiln_k0123456789abcdef0123")
	return want
}

func TestConfigDefaults(t *testing.T) {
	for _, role := range allRoles {
		t.Run(role, func(t *testing.T) {
			cleanEnv(t, nil)
			got, err := parseFlags(role, []string{"-api-keys", "kiln_k0123456789abcdef0123"}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if want := defaultsFor(t); !reflect.DeepEqual(got, want) {
				t.Errorf("parseFlags(%s) =\n%+v\nwant app.Defaults():\n%+v", role, got, want)
			}
		})
	}
}

func TestConfigApplied(t *testing.T) {
	keysAB, keysFlag := mustKeys(t, "kiln_a0123456789abcdef0123,ro=kiln_b0123456789abcdef0123:read"), mustKeys(t, "kiln_fromflag0123456789abc")
	tests := []struct {
		name string
		role string // default "serve"
		env  map[string]string
		args []string
		want func(c *app.Config) // applied to defaultsFor
	}{
		{
			name: "ints", env: map[string]string{"KILN_CONCURRENCY": "5", "KILN_MAX_WIDTH": "1920", "KILN_REDIS_DB": "3"},
			want: func(c *app.Config) { c.Concurrency, c.Limits.MaxWidth, c.RedisDB = 5, 1920, 3 },
		},
		{
			name: "int64", env: map[string]string{"KILN_MAX_UPLOAD_BYTES": "1000", "KILN_MAX_SOURCE_BYTES": "2000"},
			want: func(c *app.Config) { c.MaxUploadBytes, c.Limits.MaxBytes = 1000, 2000 },
		},
		{
			name: "float", env: map[string]string{"KILN_API_RATE_LIMIT": "2.5"},
			want: func(c *app.Config) { c.APIRateLimit = 2.5 },
		},
		{
			name: "rate limit off", env: map[string]string{"KILN_API_RATE_LIMIT": "0"},
			want: func(c *app.Config) { c.APIRateLimit = 0 },
		},
		{
			name: "bools", env: map[string]string{"KILN_S3_SECURE": "true", "KILN_WEBHOOK_ALLOW_LOOPBACK": "1"},
			want: func(c *app.Config) { c.S3.Secure, c.WebhookAllowLoopback = true, true },
		},
		{
			name: "durations", env: map[string]string{"KILN_PLAYBACK_TOKEN_TTL": "1h", "KILN_SHUTDOWN_TIMEOUT": "0s", "KILN_MAX_DURATION": "90m", "KILN_TASK_CHECK_INTERVAL": "20ms", "KILN_CHUNK_THRESHOLD": "0s", "KILN_CHUNK_LENGTH": "30s"},
			want: func(c *app.Config) {
				c.PlaybackTokenTTL, c.ShutdownTimeout, c.Limits.MaxDuration, c.TaskCheckInterval = time.Hour, 0, 90*time.Minute, 20*time.Millisecond
				c.Chunks.Threshold, c.Chunks.Length = 0, 30*time.Second
			},
		},
		{
			name: "upload abort after", env: map[string]string{"KILN_UPLOAD_ABORT_AFTER": "36h"},
			want: func(c *app.Config) { c.UploadAbortAfter = 36 * time.Hour },
		},
		{
			name: "reconciler", env: map[string]string{"KILN_RECONCILE_INTERVAL": "30s", "KILN_RECONCILE_GRACE": "5m"},
			want: func(c *app.Config) { c.ReconcileInterval, c.ReconcileGrace = 30*time.Second, 5*time.Minute },
		},
		{
			name: "reconciler off", env: map[string]string{"KILN_RECONCILE_INTERVAL": "0"},
			want: func(c *app.Config) { c.ReconcileInterval = 0 },
		},
		{
			name: "token ttl bounds", env: map[string]string{"KILN_PLAYBACK_TOKEN_TTL": "720h"},
			want: func(c *app.Config) { c.PlaybackTokenTTL = 30 * 24 * time.Hour },
		},
		{
			name: "strings", env: map[string]string{"KILN_HTTP_ADDR": "0.0.0.0:9000", "KILN_S3_ENDPOINT": "s3:443", "KILN_DATABASE": "/var/kiln.db"},
			want: func(c *app.Config) {
				c.HTTPAddr, c.PublicURL, c.S3.Endpoint, c.Database = "0.0.0.0:9000", "http://0.0.0.0:9000", "s3:443", "/var/kiln.db"
			},
		},
		{
			name: "cdn url", env: map[string]string{"KILN_CDN_URL": "https://cdn.example.com/kiln-outputs/", "KILN_PLAYBACK_DELIVERY": "redirect"},
			want: func(c *app.Config) {
				c.CDNURL, c.PlaybackDelivery = "https://cdn.example.com/kiln-outputs/", "redirect"
			},
		},
		{
			name: "public url", env: map[string]string{"KILN_PUBLIC_URL": "https://video.example.com/"},
			want: func(c *app.Config) { c.PublicURL = "https://video.example.com" },
		},
		{
			name: "enums",
			env: map[string]string{"KILN_PLAYBACK_DELIVERY": "proxy", "KILN_LOG_LEVEL": "debug", "KILN_LOG_FORMAT": "console",
				"KILN_X264_PRESET": "medium"},
			want: func(c *app.Config) {
				c.PlaybackDelivery, c.LogLevel, c.LogFormat, c.X264Preset = "proxy", "debug", "console", "medium"
			},
		},
		{
			name: "secrets and lists",
			env: map[string]string{"KILN_API_KEYS": "kiln_a0123456789abcdef0123,ro=kiln_b0123456789abcdef0123:read", "KILN_WEBHOOK_RETRY_SCHEDULE": "1s, 2m",
				"KILN_PLAYBACK_SIGNING_KEY": " 0123456789abcdef ", "KILN_WEBHOOK_SECRET": " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw "},
			args: []string{},
			want: func(c *app.Config) {
				c.APIKeys = keysAB
				c.WebhookRetrySchedule = []time.Duration{time.Second, 2 * time.Minute}
				c.PlaybackSigningKey = []byte("0123456789abcdef")
				c.WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
			},
		},
		{
			name: "server hardening",
			env: map[string]string{"KILN_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1", "KILN_AUTH_FAILURES": "0",
				"KILN_PLAYBACK_RATE_LIMIT": "5.5", "KILN_PLAYBACK_RATE_BURST": "9", "KILN_HTTP_READ_TIMEOUT": "45s",
				"KILN_HTTP_IDLE_TIMEOUT": "5m", "KILN_UPLOAD_PROGRESS_TIMEOUT": "2m", "KILN_SSE_MAX_STREAMS_PER_KEY": "3"},
			want: func(c *app.Config) {
				c.TrustedProxies, _ = httpapi.ParseProxies("10.0.0.0/8,127.0.0.1")
				c.AuthFailures, c.PlaybackRateLimit, c.PlaybackRateBurst = 0, 5.5, 9
				c.HTTPReadTimeout, c.HTTPIdleTimeout, c.UploadProgressTimeout, c.SSEMaxStreamsPerKey = 45*time.Second, 5*time.Minute, 2*time.Minute, 3
			},
		},
		{
			name: "empty means unset", env: map[string]string{"KILN_CONCURRENCY": "", "KILN_HTTP_ADDR": "", "KILN_MAX_DURATION": ""},
			want: func(c *app.Config) {},
		},
		{
			name: "spaces around numbers", env: map[string]string{"KILN_CONCURRENCY": " 3 ", "KILN_S3_SECURE": "true\n"},
			want: func(c *app.Config) { c.Concurrency, c.S3.Secure = 3, true },
		},
		{
			name: "flags override env",
			env: map[string]string{"KILN_CONCURRENCY": "5", "KILN_S3_SECURE": "true", "KILN_HTTP_ADDR": "a:1",
				"KILN_PLAYBACK_TOKEN_TTL": "1h", "KILN_API_RATE_LIMIT": "1", "KILN_MAX_UPLOAD_BYTES": "10"},
			args: []string{"-concurrency", "7", "-s3-secure=false", "-http-addr", "b:2", "-playback-token-ttl", "2h",
				"-api-rate-limit", "3", "-max-upload-bytes", "20"},
			want: func(c *app.Config) {
				c.Concurrency, c.S3.Secure, c.HTTPAddr, c.PublicURL = 7, false, "b:2", "http://b:2"
				c.PlaybackTokenTTL, c.APIRateLimit, c.MaxUploadBytes = 2*time.Hour, 3, 20
			},
		},
		{
			name: "a flag wins over a bad variable",
			env:  map[string]string{"KILN_CONCURRENCY": "two", "KILN_LOG_LEVEL": "verbose"},
			args: []string{"-concurrency", "3", "-log-level", "warn"},
			want: func(c *app.Config) { c.Concurrency, c.LogLevel = 3, "warn" },
		},
		{
			name: "api keys flag over env", env: map[string]string{"KILN_API_KEYS": "kiln_fromenv0123456789abcd"},
			args: []string{"-api-keys", "kiln_fromflag0123456789abc"},
			want: func(c *app.Config) { c.APIKeys = keysFlag },
		},
		{
			name: "serve without workers", env: map[string]string{"KILN_CONCURRENCY": "0"},
			want: func(c *app.Config) { c.Concurrency = 0 },
		},
		{
			name: "worker needs no API key or database", role: "worker",
			args: []string{"-database="},
			want: func(c *app.Config) { c.APIKeys, c.Database = nil, "" },
		},
		{
			name: "serve needs no NATS URL", args: []string{"-nats-url="},
			want: func(c *app.Config) { c.NATSURL = "" },
		},
		{
			name: "empty schedule flag is the default", args: []string{"-webhook-retry-schedule="},
			want: func(c *app.Config) {},
		},
		{
			name: "nats and redis credentials", role: "worker",
			env: map[string]string{"KILN_NATS_USER": "worker", "KILN_NATS_PASSWORD": "pw", "KILN_NATS_CA": "/ca.pem",
				"KILN_NATS_CERT": "/c.pem", "KILN_NATS_KEY": "/k.pem", "KILN_REDIS_USERNAME": "kiln", "KILN_REDIS_PASSWORD": "rpw",
				"KILN_REDIS_TLS": "true", "KILN_REDIS_CA": "/rca.pem"},
			want: func(c *app.Config) {
				c.APIKeys = nil
				c.NATSUser, c.NATSPassword, c.NATSCAFile, c.NATSCertFile, c.NATSKeyFile = "worker", "pw", "/ca.pem", "/c.pem", "/k.pem"
				c.RedisUsername, c.RedisPassword, c.RedisTLS, c.RedisCAFile = "kiln", "rpw", true, "/rca.pem"
			},
		},
		{
			name: "worker queues", role: "worker", env: map[string]string{"KILN_WORKER_QUEUES": " transcode, ,package "},
			want: func(c *app.Config) { c.APIKeys, c.WorkerQueues = nil, []string{"transcode", "package"} },
		},
		{
			name: "tenant shares", role: "worker", env: map[string]string{"KILN_TENANT_WEIGHTS": "ten_a=3, default=2", "KILN_TENANT_MAX_RUNNING": "4"},
			want: func(c *app.Config) {
				c.APIKeys, c.TenantWeights, c.TenantMaxRunning = nil, map[string]int{"ten_a": 3, "default": 2}, 4
			},
		},
		{
			name: "worker queues flag over env", role: "worker", env: map[string]string{"KILN_WORKER_QUEUES": "probe"},
			args: []string{"-worker-queues", "webhook"},
			want: func(c *app.Config) { c.APIKeys, c.WorkerQueues = nil, []string{"webhook"} },
		},
		{
			name: "pyroscope", role: "worker",
			env: map[string]string{"KILN_PYROSCOPE_URL": "https://pyroscope.example.com:4040", "KILN_PYROSCOPE_USER": "1234", "KILN_PYROSCOPE_PASSWORD": "glc_pw"},
			want: func(c *app.Config) {
				c.APIKeys = nil
				c.PyroscopeURL, c.PyroscopeUser, c.PyroscopePassword = "https://pyroscope.example.com:4040", "1234", "glc_pw"
			},
		},
		{
			name: "embedded nats users", env: map[string]string{"KILN_NATS_NOTIFY_PASSWORD": "notify-password-0123456789",
				"KILN_NATS_WORKER_PASSWORD": "worker-password-0123456789"},
			want: func(c *app.Config) {
				c.NATSUserPasswords = app.NATSUserPasswords{Notify: "notify-password-0123456789", Worker: "worker-password-0123456789"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role := cmpOr(tt.role, "serve")
			env := map[string]string{"KILN_API_KEYS": "kiln_k0123456789abcdef0123"}
			if role == "worker" {
				env["KILN_API_KEYS"] = ""
			}
			for k, v := range tt.env {
				env[k] = v
			}
			cleanEnv(t, env)
			got, err := parseFlags(role, tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			want := defaultsFor(t)
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		role string // default "serve"
		env  map[string]string
		args []string
		// want are all in the error; notWant none of them.
		want, notWant []string
	}{
		{name: "int", env: map[string]string{"KILN_CONCURRENCY": "two"}, want: []string{`KILN_CONCURRENCY="two": not an integer`}},
		{name: "int float", env: map[string]string{"KILN_MAX_WIDTH": "1.5"}, want: []string{`KILN_MAX_WIDTH="1.5": not an integer`}},
		{name: "int64", env: map[string]string{"KILN_MAX_SOURCE_BYTES": "20GB"}, want: []string{`KILN_MAX_SOURCE_BYTES="20GB": not an integer`}},
		{name: "int64 overflow", env: map[string]string{"KILN_MAX_UPLOAD_BYTES": "99999999999999999999"}, want: []string{"KILN_MAX_UPLOAD_BYTES", "out of range"}},
		{name: "float", env: map[string]string{"KILN_API_RATE_LIMIT": "fast"}, want: []string{`KILN_API_RATE_LIMIT="fast": not a number`}},
		{name: "float NaN", env: map[string]string{"KILN_API_RATE_LIMIT": "NaN"}, want: []string{`KILN_API_RATE_LIMIT="NaN": not a finite number`}},
		{name: "bool", env: map[string]string{"KILN_S3_SECURE": "yes"}, want: []string{`KILN_S3_SECURE="yes": not a boolean`}},
		{name: "bool loopback", env: map[string]string{"KILN_WEBHOOK_ALLOW_LOOPBACK": "on"}, want: []string{`KILN_WEBHOOK_ALLOW_LOOPBACK="on"`}},
		{name: "duration", env: map[string]string{"KILN_SHUTDOWN_TIMEOUT": "25"}, want: []string{`KILN_SHUTDOWN_TIMEOUT="25": not a duration`}},
		{name: "upload abort after too short", env: map[string]string{"KILN_UPLOAD_ABORT_AFTER": "10m"}, want: []string{"KILN_UPLOAD_ABORT_AFTER=10m: must be from 1h to 720h"}},
		{name: "duration days", env: map[string]string{"KILN_PLAYBACK_TOKEN_TTL": "7d"}, want: []string{`KILN_PLAYBACK_TOKEN_TTL="7d": not a duration`}},
		{name: "enum delivery", env: map[string]string{"KILN_PLAYBACK_DELIVERY": "cdn"}, want: []string{`KILN_PLAYBACK_DELIVERY="cdn": want direct, redirect or proxy`}},
		{name: "cdn url", env: map[string]string{"KILN_CDN_URL": "cdn.example.com/outputs"}, want: []string{`KILN_CDN_URL="cdn.example.com/outputs"`, "absolute http(s) URL"}},
		{name: "cdn url with query", env: map[string]string{"KILN_CDN_URL": "https://cdn.example.com/?sig=1"}, want: []string{`KILN_CDN_URL="https://cdn.example.com/?sig=1"`}},
		{name: "enum log level", env: map[string]string{"KILN_LOG_LEVEL": "verbose"}, want: []string{`KILN_LOG_LEVEL="verbose"`}},
		{name: "enum log format", env: map[string]string{"KILN_LOG_FORMAT": "text"}, want: []string{`KILN_LOG_FORMAT="text": want json or console`}},
		{name: "enum x264 preset", env: map[string]string{"KILN_X264_PRESET": "quick"}, want: []string{`KILN_X264_PRESET="quick"`}},
		{name: "range width", env: map[string]string{"KILN_MAX_WIDTH": "-5"}, want: []string{"KILN_MAX_WIDTH=-5: must be at least 1"}},
		{name: "range height", env: map[string]string{"KILN_MAX_HEIGHT": "0"}, want: []string{"KILN_MAX_HEIGHT=0: must be at least 1"}},
		{name: "range source bytes", env: map[string]string{"KILN_MAX_SOURCE_BYTES": "0"}, want: []string{"KILN_MAX_SOURCE_BYTES=0: must be at least 1"}},
		{name: "range upload bytes", env: map[string]string{"KILN_MAX_UPLOAD_BYTES": "-1"}, want: []string{"KILN_MAX_UPLOAD_BYTES=-1: must be at least 1"}},
		{name: "range max duration", env: map[string]string{"KILN_MAX_DURATION": "0s"}, want: []string{"KILN_MAX_DURATION=0s: must be more than 0s"}},
		{name: "range token ttl low", env: map[string]string{"KILN_PLAYBACK_TOKEN_TTL": "500ms"}, want: []string{"KILN_PLAYBACK_TOKEN_TTL=500ms: must be from 1s to 720h"}},
		{name: "range token ttl high", env: map[string]string{"KILN_PLAYBACK_TOKEN_TTL": "744h"}, want: []string{"KILN_PLAYBACK_TOKEN_TTL=744h: must be from 1s to 720h"}},
		{name: "range reconcile interval", env: map[string]string{"KILN_RECONCILE_INTERVAL": "500ms"}, want: []string{"KILN_RECONCILE_INTERVAL=500ms: must be 0s (off) or from 1s to 24h"}},
		{name: "range reconcile interval negative", env: map[string]string{"KILN_RECONCILE_INTERVAL": "-1m"}, want: []string{"KILN_RECONCILE_INTERVAL=-1m: must be 0s (off) or from 1s to 24h"}},
		{name: "range reconcile grace", env: map[string]string{"KILN_RECONCILE_GRACE": "1s"}, want: []string{"KILN_RECONCILE_GRACE=1s: must be from 10s to 24h"}},
		{name: "duration reconcile grace", env: map[string]string{"KILN_RECONCILE_GRACE": "soon"}, want: []string{`KILN_RECONCILE_GRACE="soon": not a duration`}},
		{name: "range shutdown", env: map[string]string{"KILN_SHUTDOWN_TIMEOUT": "-1s"}, want: []string{"KILN_SHUTDOWN_TIMEOUT=-1s: must be at least 0s"}},
		{name: "range rate limit", env: map[string]string{"KILN_API_RATE_LIMIT": "-1"}, want: []string{"KILN_API_RATE_LIMIT=-1: must be at least 0"}},
		{name: "range burst", env: map[string]string{"KILN_API_RATE_BURST": "0"}, want: []string{"KILN_API_RATE_BURST=0: must be at least 1"}},
		{name: "range concurrency", env: map[string]string{"KILN_CONCURRENCY": "-1"}, want: []string{"KILN_CONCURRENCY=-1: must be at least 0"}},
		{name: "range stream replicas", env: map[string]string{"KILN_NATS_STREAM_REPLICAS": "7"}, want: []string{"KILN_NATS_STREAM_REPLICAS=7: must be 1 to 5"}},
		{name: "range redis db", env: map[string]string{"KILN_REDIS_DB": "-1"}, want: []string{"KILN_REDIS_DB=-1"}},
		{name: "range ffmpeg threads", env: map[string]string{"KILN_FFMPEG_THREADS": "-2"}, want: []string{"KILN_FFMPEG_THREADS=-2"}},
		{name: "public url", env: map[string]string{"KILN_PUBLIC_URL": "video.example.com"}, want: []string{`KILN_PUBLIC_URL="video.example.com"`}},
		{name: "retry schedule", env: map[string]string{"KILN_WEBHOOK_RETRY_SCHEDULE": "5s,soon"}, want: []string{`KILN_WEBHOOK_RETRY_SCHEDULE="5s,soon"`}},
		{
			name: "worker concurrency 0 from env", role: "worker", env: map[string]string{"KILN_CONCURRENCY": "0"},
			want: []string{"KILN_CONCURRENCY=0: a worker needs at least 1"},
		},
		{
			name: "worker concurrency 0 from flag", role: "worker", args: []string{"-concurrency", "0"},
			want: []string{"-concurrency=0: a worker needs at least 1"},
		},
		{name: "flag range", args: []string{"-max-width=-5"}, want: []string{"-max-width=-5: must be at least 1"}},
		{name: "flag int", args: []string{"-concurrency", "two"}, want: []string{`invalid value "two" for flag -concurrency`}},
		{name: "flag duration", args: []string{"-shutdown-timeout", "25"}, want: []string{`invalid value "25" for flag -shutdown-timeout`}},
		{name: "flag enum", args: []string{"-playback-delivery", "cdn"}, want: []string{`-playback-delivery="cdn": want direct, redirect or proxy`}},
		{name: "flag empty address", args: []string{"-http-addr="}, want: []string{`-http-addr="": must not be empty`}},
		{name: "flag empty nats url", role: "worker", args: []string{"-nats-url", ""}, want: []string{`-nats-url="": must not be empty`}},
		{name: "flag empty nats listen", args: []string{"-nats-listen="}, want: []string{`-nats-listen="": must not be empty`}},
		{name: "flag empty database", role: "catalog", args: []string{"-database="}, want: []string{`-database="": must not be empty`}},
		{name: "flag empty bucket", role: "ingest", args: []string{"-sources-bucket="}, want: []string{`-sources-bucket="": must not be empty`}},
		{name: "nats user without password", role: "ingest", env: map[string]string{"KILN_NATS_USER": "ingest"}, want: []string{"KILN_NATS_USER and KILN_NATS_PASSWORD go together"}},
		{name: "nats two kinds of credentials", role: "ingest", env: map[string]string{"KILN_NATS_TOKEN": "t", "KILN_NATS_CREDS": "/x.creds"}, want: []string{"set one of"}},
		{name: "nats cert without key", role: "catalog", env: map[string]string{"KILN_NATS_CERT": "/c.pem"}, want: []string{"KILN_NATS_CERT and KILN_NATS_KEY go together"}},
		{name: "redis ca without tls", role: "worker", env: map[string]string{"KILN_REDIS_CA": "/ca.pem"}, want: []string{"KILN_REDIS_CA needs KILN_REDIS_TLS=true"}},
		{name: "one bucket for both", role: "ingest", env: map[string]string{"KILN_OUTPUTS_BUCKET": "kiln-sources"}, want: []string{"sources and outputs buckets must differ"}},
		{
			name: "short embedded nats password, not shown", env: map[string]string{"KILN_NATS_NOTIFY_PASSWORD": "short-secret"},
			want: []string{"KILN_NATS_NOTIFY_PASSWORD: must be at least 16 characters"}, notWant: []string{"short-secret"},
		},
		{
			name: "nats password is not shown", role: "ingest", env: map[string]string{"KILN_NATS_PASSWORD": "topsecretpw"},
			want: []string{"go together"}, notWant: []string{"topsecretpw"},
		},
		{
			name: "every bad value at once", env: map[string]string{"KILN_CONCURRENCY": "two", "KILN_MAX_WIDTH": "-5"},
			want: []string{"KILN_CONCURRENCY", "KILN_MAX_WIDTH"},
		},
		{
			name: "short api key", env: map[string]string{"KILN_API_KEYS": "ci=topsecret:write"},
			want: []string{"KILN_API_KEYS: ", "(ci): the key has 9 characters, want at least 24"}, notWant: []string{"topsecret"},
		},
		{name: "bad trusted proxy", env: map[string]string{"KILN_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"}, want: []string{`KILN_TRUSTED_PROXIES="10.0.0.0/8,proxy.local": trusted proxy "proxy.local"`}},
		{name: "read timeout range", env: map[string]string{"KILN_HTTP_READ_TIMEOUT": "0s"}, want: []string{"KILN_HTTP_READ_TIMEOUT=0s: must be from 1s to 1h"}},
		{name: "negative auth failures", args: []string{"-auth-failures=-1"}, want: []string{"-auth-failures=-1: must be at least 0"}},
		{
			name: "api keys are not shown", env: map[string]string{"KILN_API_KEYS": "topsecretkey:admin"},
			want: []string{"KILN_API_KEYS: ", "bad API key entry"}, notWant: []string{"topsecretkey"},
		},
		{
			name: "api keys flag is not shown", args: []string{"-api-keys", "topsecretkey:admin"},
			want: []string{"-api-keys: "}, notWant: []string{"topsecretkey"},
		},
		{
			name: "webhook secret is not shown", env: map[string]string{"KILN_WEBHOOK_SECRET": "whsec_topsecret!!"},
			want: []string{"KILN_WEBHOOK_SECRET: "}, notWant: []string{"topsecret"},
		},
		{
			name: "unknown worker queue", role: "worker", env: map[string]string{"KILN_WORKER_QUEUES": "probe,encode"},
			want: []string{`KILN_WORKER_QUEUES="probe,encode": worker queue "encode": unknown (want one of package, probe, transcode, webhook)`},
		},
		{
			name: "tenant weight", role: "worker", env: map[string]string{"KILN_TENANT_WEIGHTS": "ten_a=0"},
			want: []string{`KILN_TENANT_WEIGHTS="ten_a=0": entry "ten_a=0": want tenant=weight, a weight from 1 to 1000`},
		},
		{
			name: "tenant named twice", role: "worker", args: []string{"-tenant-weights=ten_a=1,ten_a=2"},
			want: []string{`-tenant-weights="ten_a=1,ten_a=2": tenant "ten_a": named twice`},
		},
		{
			name: "worker queue twice", role: "worker", args: []string{"-worker-queues=probe,probe"},
			want: []string{`-worker-queues="probe,probe": worker queue "probe": named twice`},
		},
		{name: "pyroscope url", role: "worker", env: map[string]string{"KILN_PYROSCOPE_URL": "pyroscope:4040"}, want: []string{`KILN_PYROSCOPE_URL="pyroscope:4040": want an absolute http(s) URL`}},
		{
			name: "pyroscope password without user, not shown", role: "worker", env: map[string]string{"KILN_PYROSCOPE_PASSWORD": "glc_topsecret"},
			want: []string{"KILN_PYROSCOPE_USER and KILN_PYROSCOPE_PASSWORD go together"}, notWant: []string{"glc_topsecret"},
		},
		{name: "no api key", env: map[string]string{"KILN_API_KEYS": ""}, want: []string{"no API key configured"}},
		{name: "stray argument", args: []string{"extra"}, want: []string{"unexpected arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"KILN_API_KEYS": "kiln_k0123456789abcdef0123"}
			for k, v := range tt.env {
				env[k] = v
			}
			cleanEnv(t, env)
			_, err := parseFlags(cmpOr(tt.role, "serve"), tt.args, io.Discard)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q contains %q", err, w)
				}
			}
		})
	}
}

// TestHelpShowsAppDefaults: the default -help shows for every flag is
// app.Defaults()' field, so a default cannot be declared in two places.
func TestHelpShowsAppDefaults(t *testing.T) {
	cleanEnv(t, map[string]string{"KILN_CONCURRENCY": "9", "KILN_API_KEYS": "kiln_secret-key0123456789a"}) // not shown by -help
	d := app.Defaults()
	want := map[string]any{
		"http-addr":               d.HTTPAddr,
		"public-url":              d.PublicURL,
		"api-keys":                "",
		"api-rate-limit":          d.APIRateLimit,
		"api-rate-burst":          d.APIRateBurst,
		"nats-url":                d.NATSURL,
		"nats-listen":             d.NATSListen,
		"nats-store-dir":          d.NATSStoreDir,
		"redis-addr":              d.RedisAddr,
		"redis-password":          d.RedisPassword,
		"redis-db":                d.RedisDB,
		"s3-endpoint":             d.S3.Endpoint,
		"s3-access-key":           d.S3.AccessKey,
		"s3-secret-key":           d.S3.SecretKey,
		"s3-region":               d.S3.Region,
		"s3-secure":               d.S3.Secure,
		"sources-bucket":          d.SourcesBucket,
		"outputs-bucket":          d.OutputsBucket,
		"s3-notify-arn":           d.NotifyARN,
		"database":                d.Database,
		"playback-signing-key":    string(d.PlaybackSigningKey),
		"playback-token-ttl":      d.PlaybackTokenTTL,
		"playback-delivery":       d.PlaybackDelivery,
		"webhook-secret":          d.WebhookSecret,
		"webhook-retry-schedule":  d.WebhookRetrySchedule,
		"webhook-allow-loopback":  d.WebhookAllowLoopback,
		"reconcile-interval":      d.ReconcileInterval,
		"reconcile-grace":         d.ReconcileGrace,
		"work-dir":                d.WorkDir,
		"presets-file":            d.PresetsFile,
		"max-source-bytes":        d.Limits.MaxBytes,
		"max-duration":            d.Limits.MaxDuration,
		"max-width":               d.Limits.MaxWidth,
		"max-height":              d.Limits.MaxHeight,
		"concurrency":             d.Concurrency,
		"task-lease":              d.TaskLease,
		"ffmpeg":                  d.FFmpegPath,
		"ffprobe":                 d.FFprobePath,
		"ffmpeg-threads":          d.FFmpegThreads,
		"ffmpeg-max-memory":       d.FFmpegMaxMemory,
		"direct-upload-ttl":       d.DirectUploadTTL,
		"upload-abort-after":      d.UploadAbortAfter,
		"x264-preset":             d.X264Preset,
		"max-upload-bytes":        d.MaxUploadBytes,
		"shutdown-timeout":        d.ShutdownTimeout,
		"task-check-interval":     d.TaskCheckInterval,
		"chunk-threshold":         d.Chunks.Threshold,
		"chunk-length":            d.Chunks.Length,
		"chunk-share":             d.Chunks.Share,
		"tenant-weights":          "",
		"tenant-max-running":      d.TenantMaxRunning,
		"log-level":               d.LogLevel,
		"log-format":              d.LogFormat,
		"pyroscope-url":           d.PyroscopeURL,
		"pyroscope-user":          d.PyroscopeUser,
		"pyroscope-password":      d.PyroscopePassword,
		"worker-queues":           strings.Join(d.WorkerQueues, ","),
		"auth-failures":           d.AuthFailures,
		"trusted-proxies":         "",
		"playback-rate-limit":     d.PlaybackRateLimit,
		"playback-rate-burst":     d.PlaybackRateBurst,
		"http-read-timeout":       d.HTTPReadTimeout,
		"http-idle-timeout":       d.HTTPIdleTimeout,
		"upload-progress-timeout": d.UploadProgressTimeout,
		"sse-max-streams-per-key": d.SSEMaxStreamsPerKey,
		"nats-user":               d.NATSUser,
		"nats-password":           d.NATSPassword,
		"nats-token":              d.NATSToken,
		"nats-creds":              d.NATSCredsFile,
		"nats-stream-replicas":    d.NATSStreamReplicas,
		"nats-ca":                 d.NATSCAFile,
		"nats-cert":               d.NATSCertFile,
		"nats-key":                d.NATSKeyFile,
		"nats-notify-password":    d.NATSUserPasswords.Notify,
		"nats-ingest-password":    d.NATSUserPasswords.Ingest,
		"nats-worker-password":    d.NATSUserPasswords.Worker,
		"nats-catalog-password":   d.NATSUserPasswords.Catalog,
		"redis-username":          d.RedisUsername,
		"redis-tls":               d.RedisTLS,
		"redis-ca":                d.RedisCAFile,
		"cdn-url":                 d.CDNURL,
	}
	for _, role := range allRoles {
		t.Run(role, func(t *testing.T) {
			var out bytes.Buffer
			if _, err := parseFlags(role, []string{"-help"}, &out); !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("-help: %v", err)
			}
			help := helpBlocks(out.String())
			seen := map[string]bool{}
			newRoleFlags(role, io.Discard).fs.VisitAll(func(f *flag.Flag) {
				seen[f.Name] = true
				w, ok := want[f.Name]
				if !ok {
					t.Errorf("-%s: no default in this test; add app.Defaults()' field", f.Name)
					return
				}
				block, ok := help[f.Name]
				if !ok {
					t.Errorf("-%s is not in -help:\n%s", f.Name, out.String())
					return
				}
				var shown string
				switch w := w.(type) {
				case string:
					if f.DefValue != w {
						t.Errorf("-%s default %q, want %q", f.Name, f.DefValue, w)
					}
					shown = fmt.Sprintf("(default %q)", w)
				case []time.Duration: // a comma-separated list
					got, err := webhooks.ParseSchedule(f.DefValue)
					if err != nil || !slices.Equal(got, w) {
						t.Errorf("-%s default %q is %v, want %v (%v)", f.Name, f.DefValue, got, w, err)
					}
					shown = fmt.Sprintf("(default %q)", f.DefValue)
				default:
					if f.DefValue != fmt.Sprint(w) {
						t.Errorf("-%s default %q, want %v", f.Name, f.DefValue, w)
					}
					shown = fmt.Sprintf("(default %v)", w)
				}
				// flag.PrintDefaults shows no default for a zero value.
				if !reflect.ValueOf(w).IsZero() && !strings.Contains(block, shown) {
					t.Errorf("-%s help %q does not show %s", f.Name, block, shown)
				}
			})
			for name := range want {
				if !seen[name] {
					t.Errorf("no flag -%s", name)
				}
			}
		})
	}
}

// helpBlocks splits flag.PrintDefaults output into each flag's text.
func helpBlocks(help string) map[string]string {
	blocks := map[string]string{}
	var name string
	for line := range strings.SplitSeq(help, "\n") {
		if rest, ok := strings.CutPrefix(line, "  -"); ok {
			name, _, _ = strings.Cut(rest, " ")
		}
		if name != "" {
			blocks[name] += line + "\n"
		}
	}
	return blocks
}
