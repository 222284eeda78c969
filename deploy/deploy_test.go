// Package deploy holds the deployment files (compose, Kubernetes + KEDA,
// the container image) and the test that keeps them honest: no engine runs
// here, so they are parsed and cross-checked against the code instead.
package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/kilnvideo/kiln/internal/bus"
)

var roles = []string{"serve", "ingest", "worker", "catalog"}

// docs parses every YAML document of a file into generic maps.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			out = append(out, d)
		}
	}
}

// k8sDocs parses every YAML document of every manifest in deploy/k8s
// (strictly typed checks: k8s_test.go).
func k8sDocs(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range k8sFiles(t) {
		out = append(out, docs(t, f)...)
	}
	return out
}

// walk calls fn for every map in v, recursively.
func walk(v any, fn func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(x)
		for _, c := range x {
			walk(c, fn)
		}
	case []any:
		for _, c := range x {
			walk(c, fn)
		}
	}
}

var kilnVar = regexp.MustCompile(`^KILN_[A-Z0-9_]+$`)

// knownVars are the KILN_* variables the binary reads (cmd/kiln) and the
// README documents.
func knownVars(t *testing.T) (code, readme string) {
	t.Helper()
	r, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return goSource(t, "../cmd/kiln"), string(r)
}

// goSource is the Go source of the package in dir, its tests left out; a
// package without any fails the test.
func goSource(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	if b.Len() == 0 {
		t.Fatalf("no Go source in %s", dir)
	}
	return b.String()
}

func checkVar(t *testing.T, where, name, code, readme string) {
	t.Helper()
	if !kilnVar.MatchString(name) {
		return
	}
	if !strings.Contains(code, `"`+name+`"`) {
		t.Errorf("%s: %s is not read by cmd/kiln", where, name)
	}
	if !strings.Contains(readme, "`"+name+"`") {
		t.Errorf("%s: %s is not documented in the README", where, name)
	}
}

func TestCompose(t *testing.T) {
	code, readme := knownVars(t)
	d := docs(t, "compose/compose.yaml")
	if len(d) != 1 {
		t.Fatalf("compose: %d documents", len(d))
	}
	services, _ := d[0]["services"].(map[string]any)
	for _, need := range []string{"nats", "redis", "minio", "ingest", "worker", "catalog"} {
		if services[need] == nil {
			t.Errorf("compose: no service %q", need)
		}
	}
	for name, sv := range services {
		s, _ := sv.(map[string]any)
		if img, _ := s["image"].(string); img == "kiln:latest" {
			cmd, _ := s["command"].([]any)
			if len(cmd) == 0 || !slices.Contains(roles, cmd[0].(string)) {
				t.Errorf("compose %s: command %v is not a kiln role", name, cmd)
			}
		}
		env, _ := s["environment"].(map[string]any)
		for k := range env {
			checkVar(t, "compose "+name, k, code, readme)
		}
		deps, _ := s["depends_on"].(map[string]any)
		for dep := range deps {
			if services[dep] == nil {
				t.Errorf("compose %s: depends on unknown service %q", name, dep)
			}
		}
	}
	// The anchor's variables count too.
	walk(d[0], func(m map[string]any) {
		for k := range m {
			checkVar(t, "compose", k, code, readme)
		}
	})
	minio := services["minio"].(map[string]any)["environment"].(map[string]any)
	if minio["MINIO_NOTIFY_NATS_SUBJECT_KILN"] != "kiln.s3.events" {
		t.Errorf("compose: MinIO publishes to %v, kiln listens on kiln.s3.events", minio["MINIO_NOTIFY_NATS_SUBJECT_KILN"])
	}
}

func TestKubernetes(t *testing.T) {
	code, readme := knownVars(t)
	objs := k8sDocs(t)
	labels := map[string]map[string]any{} // workload name → pod labels
	services := map[string]map[string]any{}
	for _, o := range objs {
		kind, _ := o["kind"].(string)
		meta, _ := o["metadata"].(map[string]any)
		name, _ := meta["name"].(string)
		if kind == "" || name == "" || meta["namespace"] != "kiln" {
			t.Errorf("object without kind, name or namespace kiln: %v", meta)
		}
		spec, _ := o["spec"].(map[string]any)
		switch kind {
		case "Deployment", "StatefulSet":
			sel := spec["selector"].(map[string]any)["matchLabels"].(map[string]any)
			tmpl := spec["template"].(map[string]any)
			podLabels := tmpl["metadata"].(map[string]any)["labels"].(map[string]any)
			for k, v := range sel {
				if podLabels[k] != v {
					t.Errorf("%s %s: selector %s=%v does not match the pod labels", kind, name, k, v)
				}
			}
			labels[name] = podLabels
			for _, c := range tmpl["spec"].(map[string]any)["containers"].([]any) {
				ct := c.(map[string]any)
				args, _ := ct["args"].([]any)
				if len(args) == 0 || !slices.Contains(roles, args[0].(string)) {
					t.Errorf("%s %s: args %v is not a kiln role", kind, name, args)
				}
				env, _ := ct["env"].([]any)
				for _, e := range env {
					checkVar(t, kind+" "+name, e.(map[string]any)["name"].(string), code, readme)
				}
			}
		case "ConfigMap":
			for k := range o["data"].(map[string]any) {
				checkVar(t, "ConfigMap "+name, k, code, readme)
			}
		case "Service":
			services[name] = spec
		}
	}
	for name, spec := range services {
		sel := spec["selector"].(map[string]any)
		found := false
		for _, l := range labels {
			match := true
			for k, v := range sel {
				match = match && l[k] == v
			}
			found = found || match
		}
		if !found {
			t.Errorf("Service %s selects no workload", name)
		}
	}
	for _, o := range objs {
		if o["kind"] != "Ingress" {
			continue
		}
		walk(o, func(m map[string]any) {
			if svc, ok := m["service"].(map[string]any); ok {
				if services[svc["name"].(string)] == nil {
					t.Errorf("Ingress routes to unknown Service %v", svc["name"])
				}
			}
		})
	}
}

func TestContainerfile(t *testing.T) {
	data, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "./cmd/kiln") {
		t.Error("Containerfile does not build ./cmd/kiln")
	}
	if _, err := os.Stat("../cmd/kiln/main.go"); err != nil {
		t.Errorf("Containerfile builds a missing package: %v", err)
	}
	for _, pkg := range []string{"ffmpeg", "ca-certificates"} {
		if !strings.Contains(string(data), pkg) {
			t.Errorf("the image does not install %s", pkg)
		}
	}
}

// TestREADMEDocumentsEveryVariable keeps the README's configuration table
// true: every KILN_* variable the binary reads is in it.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	code, readme := knownVars(t)
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(KILN_[A-Z0-9_]+)"`).FindAllStringSubmatch(code, -1) {
		name := m[1]
		if seen[name] {
			continue
		}
		seen[name] = true
		if !strings.Contains(readme, "`"+name+"`") {
			t.Errorf("%s is read by cmd/kiln but not documented in the README", name)
		}
	}
	if len(seen) < 20 {
		t.Fatalf("found only %d variables in cmd/kiln: the scan is broken", len(seen))
	}
}

// kilnRoles are the roles of the compose services and Kubernetes
// workloads, each with its NATS user (bus.Users).
var kilnRoles = map[string]string{"ingest": bus.UserIngest, "worker": bus.UserWorker, "catalog": bus.UserCatalog}

// credentialVar reports whether a variable holds a credential kiln or its
// services cannot run without: a password, the S3 secret key, the API keys.
func credentialVar(name string) bool {
	return strings.Contains(name, "PASSWORD") || strings.HasSuffix(name, "S3_SECRET_KEY") || name == "KILN_API_KEYS"
}

// required is the compose interpolation that refuses to start without
// the variable: ${NAME:?…}.
func required(name string) *regexp.Regexp {
	return regexp.MustCompile(`^\$\{` + regexp.QuoteMeta(name) + `:\?[^}]*\}$`)
}

// TestNATSServerConfig: the sample NATS configuration has exactly kiln's
// users, each with exactly its bus.Permissions and its password from its
// variable, no anonymous access, and refuses to load without the passwords.
func TestNATSServerConfig(t *testing.T) {
	const file = "nats/nats-server.conf"
	vars := map[string]string{}
	for _, u := range []string{bus.UserIngest, bus.UserWorker, bus.UserCatalog, bus.UserNotify} {
		vars[u] = "KILN_NATS_" + strings.ToUpper(u) + "_PASSWORD"
	}
	for _, v := range vars {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	if _, err := server.ProcessConfigFile(file); err == nil {
		t.Fatalf("%s loads without the passwords' variables", file)
	}
	for u, v := range vars {
		t.Setenv(v, "password-of-"+u+"-0123456789")
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !opts.JetStream || opts.NoAuthUser != "" || opts.Authorization != "" || opts.Username != "" || len(opts.Nkeys) > 0 {
		t.Errorf("%s: jetstream %v, no_auth_user %q, token %v, single user %q, nkeys %d: want JetStream and users only",
			file, opts.JetStream, opts.NoAuthUser, opts.Authorization != "", opts.Username, len(opts.Nkeys))
	}
	if opts.HTTPHost != "127.0.0.1" {
		t.Errorf("%s: monitoring on %q, want loopback", file, opts.HTTPHost)
	}
	seen := map[string]bool{}
	for _, u := range opts.Users {
		seen[u.Username] = true
		want, ok := bus.Permissions(u.Username)
		if !ok || u.Username == bus.UserServe {
			t.Errorf("%s: unknown user %q", file, u.Username)
			continue
		}
		if u.Password != "password-of-"+u.Username+"-0123456789" {
			t.Errorf("%s: user %s: the password is not $%s", file, u.Username, vars[u.Username])
		}
		p := u.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil || len(p.Publish.Deny)+len(p.Subscribe.Deny) > 0 || p.Response != nil {
			t.Errorf("%s: user %s: permissions %+v, want allow lists only", file, u.Username, p)
			continue
		}
		if !sameSet(p.Publish.Allow, want.Publish) || !sameSet(p.Subscribe.Allow, want.Subscribe) {
			t.Errorf("%s: user %s:\npublish %v\nsubscribe %v\nwant bus.Permissions:\npublish %v\nsubscribe %v",
				file, u.Username, p.Publish.Allow, p.Subscribe.Allow, want.Publish, want.Subscribe)
		}
	}
	for u := range vars {
		if !seen[u] {
			t.Errorf("%s: no user %s", file, u)
		}
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestComposeStartsNothingWithoutCredentials: Redis requires a password,
// NATS runs the sample configuration (users only), MinIO publishes as the
// user notify, every kiln role connects as its own NATS user and with the
// Redis password, and every credential is a required variable (compose
// refuses to start when it is unset; no default, no literal).
func TestComposeStartsNothingWithoutCredentials(t *testing.T) {
	services := docs(t, "compose/compose.yaml")[0]["services"].(map[string]any)
	env := func(name string) map[string]any {
		e, _ := services[name].(map[string]any)["environment"].(map[string]any)
		return e
	}
	cmd := func(name string) string {
		var parts []string
		c, _ := services[name].(map[string]any)["command"].([]any)
		for _, p := range c {
			parts = append(parts, fmt.Sprint(p))
		}
		return strings.Join(parts, " ")
	}
	for name := range services {
		walk(services[name], func(m map[string]any) {
			for k, v := range m {
				if s, ok := v.(string); ok && credentialVar(k) && !regexp.MustCompile(`^\$\{[A-Z0-9_]+:\?[^}]*\}$`).MatchString(s) {
					t.Errorf("compose %s: %s = %q: a credential must be a required variable, ${VAR:?…}", name, k, s)
				}
			}
		})
	}
	if c := cmd("redis"); !strings.Contains(c, `--requirepass "$$REDIS_PASSWORD"`) || !required("KILN_REDIS_PASSWORD").MatchString(fmt.Sprint(env("redis")["REDIS_PASSWORD"])) {
		t.Errorf("compose redis: %q with REDIS_PASSWORD %v: want --requirepass from ${KILN_REDIS_PASSWORD:?…}", c, env("redis")["REDIS_PASSWORD"])
	}
	if c := cmd("nats"); c != "--config /etc/nats/nats-server.conf" {
		t.Errorf("compose nats: command %q, want the sample configuration", c)
	}
	vols, _ := services["nats"].(map[string]any)["volumes"].([]any)
	if !slices.Contains(vols, any("../nats/nats-server.conf:/etc/nats/nats-server.conf:ro")) {
		t.Errorf("compose nats: volumes %v do not mount deploy/nats/nats-server.conf", vols)
	}
	for _, u := range []string{bus.UserIngest, bus.UserWorker, bus.UserCatalog, bus.UserNotify} {
		v := "KILN_NATS_" + strings.ToUpper(u) + "_PASSWORD"
		if !required(v).MatchString(fmt.Sprint(env("nats")[v])) {
			t.Errorf("compose nats: %s = %v, want ${%s:?…}", v, env("nats")[v], v)
		}
	}
	if m := env("minio"); m["MINIO_NOTIFY_NATS_USERNAME_KILN"] != bus.UserNotify || !required("KILN_NATS_NOTIFY_PASSWORD").MatchString(fmt.Sprint(m["MINIO_NOTIFY_NATS_PASSWORD_KILN"])) {
		t.Errorf("compose minio: NATS user %v password %v, want notify and ${KILN_NATS_NOTIFY_PASSWORD:?…}",
			m["MINIO_NOTIFY_NATS_USERNAME_KILN"], m["MINIO_NOTIFY_NATS_PASSWORD_KILN"])
	}
	for role, user := range kilnRoles {
		e := env(role)
		pw := "KILN_NATS_" + strings.ToUpper(user) + "_PASSWORD"
		if e["KILN_NATS_USER"] != user || !required(pw).MatchString(fmt.Sprint(e["KILN_NATS_PASSWORD"])) {
			t.Errorf("compose %s: NATS user %v password %v, want %s and ${%s:?…}", role, e["KILN_NATS_USER"], e["KILN_NATS_PASSWORD"], user, pw)
		}
		if e["KILN_REDIS_PASSWORD"] == nil {
			t.Errorf("compose %s: no KILN_REDIS_PASSWORD", role) // the anchor's, merged in
		}
	}
	anchor := docs(t, "compose/compose.yaml")[0]["x-kiln-env"].(map[string]any)
	if !required("KILN_REDIS_PASSWORD").MatchString(fmt.Sprint(anchor["KILN_REDIS_PASSWORD"])) {
		t.Errorf("compose x-kiln-env: KILN_REDIS_PASSWORD = %v", anchor["KILN_REDIS_PASSWORD"])
	}
}

// TestKubernetesStartsNothingWithoutCredentials: every kiln container
// connects to NATS as its role's user and to Redis with the password, both
// from the Secret (as every credential), and KEDA reads Redis with it too.
func TestKubernetesStartsNothingWithoutCredentials(t *testing.T) {
	objs := k8sDocs(t)
	triggerAuth := map[string]bool{}
	for _, o := range objs {
		if o["kind"] != "TriggerAuthentication" {
			continue
		}
		name := o["metadata"].(map[string]any)["name"].(string)
		for _, r := range o["spec"].(map[string]any)["secretTargetRef"].([]any) {
			if r.(map[string]any)["parameter"] == "password" && r.(map[string]any)["key"] == "redis-password" {
				triggerAuth[name] = true
			}
		}
	}
	for _, o := range objs {
		kind, _ := o["kind"].(string)
		name := o["metadata"].(map[string]any)["name"].(string)
		spec, _ := o["spec"].(map[string]any)
		switch kind {
		case "ConfigMap":
			for k := range o["data"].(map[string]any) {
				if credentialVar(k) {
					t.Errorf("ConfigMap %s: credential %s belongs in the Secret", name, k)
				}
			}
		case "Deployment", "StatefulSet":
			for _, c := range spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any) {
				ct := c.(map[string]any)
				role := ct["args"].([]any)[0].(string)
				env := map[string]map[string]any{}
				for _, e := range ct["env"].([]any) {
					em := e.(map[string]any)
					env[em["name"].(string)] = em
				}
				for k, e := range env {
					if credentialVar(k) && (e["value"] != nil || e["valueFrom"].(map[string]any)["secretKeyRef"] == nil) {
						t.Errorf("%s %s: %s is not from a Secret", kind, name, k)
					}
				}
				user := kilnRoles[role]
				if env["KILN_NATS_USER"]["value"] != user {
					t.Errorf("%s %s: KILN_NATS_USER %v, want %s", kind, name, env["KILN_NATS_USER"]["value"], user)
				}
				for v, key := range map[string]string{"KILN_NATS_PASSWORD": "nats-" + user + "-password", "KILN_REDIS_PASSWORD": "redis-password"} {
					ref, _ := env[v]["valueFrom"].(map[string]any)
					if ref == nil || ref["secretKeyRef"].(map[string]any)["key"] != key {
						t.Errorf("%s %s: %s is not the Secret's %s", kind, name, v, key)
					}
				}
			}
		case "ScaledObject":
			for _, tr := range spec["triggers"].([]any) {
				if tr.(map[string]any)["type"] != "redis" {
					continue // the Prometheus alternative reads kiln's /metrics
				}
				ref, _ := tr.(map[string]any)["authenticationRef"].(map[string]any)
				if ref == nil || !triggerAuth[fmt.Sprint(ref["name"])] {
					t.Errorf("ScaledObject %s: a trigger reads Redis without the password (authenticationRef %v)", name, ref)
				}
			}
		}
	}
}
