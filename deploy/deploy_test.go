// Package deploy holds the deployment files (compose, Kubernetes + KEDA,
// the container image) and the test that keeps them honest: no engine runs
// here, so they are parsed and cross-checked against the code instead.
package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kilnvideo/kiln/internal/tasks"
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
	var b strings.Builder
	files, _ := filepath.Glob("../cmd/kiln/*.go")
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
	r, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), string(r)
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
	objs := docs(t, "k8s/kiln.yaml")
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
		case "ScaledObject":
			weights := tasks.QueueWeights()
			for _, tr := range spec["triggers"].([]any) {
				md := tr.(map[string]any)["metadata"].(map[string]any)
				list, _ := md["listName"].(string)
				q, ok := strings.CutPrefix(list, "asynq:{")
				q, ok2 := strings.CutSuffix(q, "}:pending")
				if !ok || !ok2 || weights[q] == 0 {
					t.Errorf("ScaledObject %s: listName %q is not the pending list of a kiln queue", name, list)
				}
			}
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
