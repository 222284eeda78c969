package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/kedacore/keda/v2/pkg/scalers/scalersconfig"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/kilnvideo/kiln/internal/admission"
	"github.com/kilnvideo/kiln/internal/app"
	"github.com/kilnvideo/kiln/internal/tasks"
)

// The manifests of deploy/k8s: the workloads, and the two ways KEDA scales
// the workers (apply kiln.yaml and one of them).
const (
	k8sDir         = "k8s"
	kilnManifest   = "k8s/kiln.yaml"
	kedaRedis      = "k8s/keda-redis.yaml"
	kedaPrometheus = "k8s/keda-prometheus.yaml"
	secretExample  = "k8s/example/kiln-secrets.yaml"
)

// k8sFiles are every manifest under deploy/k8s.
func k8sFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(k8sDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{kilnManifest, kedaRedis, kedaPrometheus, secretExample} {
		if !slices.Contains(files, f) {
			t.Fatalf("%s is missing (found %v)", f, files)
		}
	}
	return files
}

// kinds are the Go types of every kind of object the manifests may hold:
// Kubernetes' own (k8s.io/api) and KEDA's (its v1alpha1 API).
var kinds = map[schema.GroupVersionKind]func() metav1.Object{
	appsv1.SchemeGroupVersion.WithKind("Deployment"):                  func() metav1.Object { return &appsv1.Deployment{} },
	appsv1.SchemeGroupVersion.WithKind("StatefulSet"):                 func() metav1.Object { return &appsv1.StatefulSet{} },
	corev1.SchemeGroupVersion.WithKind("ConfigMap"):                   func() metav1.Object { return &corev1.ConfigMap{} },
	corev1.SchemeGroupVersion.WithKind("Secret"):                      func() metav1.Object { return &corev1.Secret{} },
	corev1.SchemeGroupVersion.WithKind("Service"):                     func() metav1.Object { return &corev1.Service{} },
	networkingv1.SchemeGroupVersion.WithKind("Ingress"):               func() metav1.Object { return &networkingv1.Ingress{} },
	kedav1alpha1.SchemeGroupVersion.WithKind("ScaledObject"):          func() metav1.Object { return &kedav1alpha1.ScaledObject{} },
	kedav1alpha1.SchemeGroupVersion.WithKind("TriggerAuthentication"): func() metav1.Object { return &kedav1alpha1.TriggerAuthentication{} },
}

// decodeStrict decodes one YAML document into the Go type of its
// apiVersion and kind the way the API server's strict field validation
// does: YAML to JSON refusing duplicate keys, then sigs.k8s.io/json, which
// matches field names case-sensitively (encoding/json would take
// "coolDownPeriod" for cooldownPeriod) and reports every unknown or
// duplicate field. An unknown kind and a value of the wrong type are
// errors too.
func decodeStrict(doc []byte) (metav1.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	mk, ok := kinds[gvk]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q of %q", tm.Kind, tm.APIVersion)
	}
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	obj := mk()
	strict, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	return obj, nil
}

// objects decodes every document of a manifest strictly; each must be a
// named object in the namespace kiln.
func objects(t *testing.T, path string) []metav1.Object {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var out []metav1.Object
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if j, err := yaml.YAMLToJSON(doc); err != nil || string(j) == "null" {
			continue // only comments
		}
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Errorf("%s, document %d: %v", path, i, err)
			continue
		}
		if obj.GetName() == "" || obj.GetNamespace() != "kiln" {
			t.Errorf("%s, document %d: %T named %q in namespace %q, want a name in kiln", path, i, obj, obj.GetName(), obj.GetNamespace())
		}
		out = append(out, obj)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no object", path)
	}
	return out
}

// of returns the objects of type T.
func of[T metav1.Object](objs []metav1.Object) []T {
	var out []T
	for _, o := range objs {
		if x, ok := o.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// byName returns the object of type T named name.
func byName[T metav1.Object](objs []metav1.Object, name string) (T, bool) {
	for _, o := range of[T](objs) {
		if o.GetName() == name {
			return o, true
		}
	}
	var zero T
	return zero, false
}

// TestStrictDecodingRejects: the decoding the manifests pass is strict —
// a misspelt field, a field in the wrong place, a wrong type, a duplicate
// key or an unknown kind is an error, for Kubernetes' kinds and KEDA's.
func TestStrictDecodingRejects(t *testing.T) {
	good := map[string]string{
		"deployment":    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w, namespace: kiln}\nspec:\n  selector: {matchLabels: {app: w}}\n  template:\n    metadata: {labels: {app: w}}\n    spec:\n      terminationGracePeriodSeconds: 60\n      containers: [{name: w, image: kiln:latest}]\n",
		"scaled object": "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: w, namespace: kiln}\nspec:\n  scaleTargetRef: {name: w}\n  cooldownPeriod: 300\n  triggers: [{type: redis, metadata: {listName: x}}]\n",
	}
	for name, doc := range good {
		if _, err := decodeStrict([]byte(doc)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	bad := map[string]string{
		"misspelt field":      strings.Replace(good["deployment"], "terminationGracePeriodSeconds", "terminationGracePeriod", 1),
		"misplaced field":     strings.Replace(good["deployment"], "  selector:", "  terminationGracePeriodSeconds: 60\n  selector:", 1),
		"wrong type":          strings.Replace(good["deployment"], "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 60s", 1),
		"duplicate key":       strings.Replace(good["deployment"], "      terminationGracePeriodSeconds: 60\n", "      terminationGracePeriodSeconds: 60\n      terminationGracePeriodSeconds: 90\n", 1),
		"keda misspelt field": strings.Replace(good["scaled object"], "cooldownPeriod", "coolDownPeriod", 1),
		"keda wrong type":     strings.Replace(good["scaled object"], "cooldownPeriod: 300", "cooldownPeriod: 5m", 1),
		"keda misplaced":      strings.Replace(good["scaled object"], "  cooldownPeriod: 300\n", "  triggerAuthentication: {name: x}\n", 1),
		"unknown kind":        strings.Replace(good["scaled object"], "kind: ScaledObject", "kind: ScaledThing", 1),
		"unknown version":     strings.Replace(good["deployment"], "apps/v1", "apps/v1beta1", 1),
	}
	for name, doc := range bad {
		if _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error:\n%s", name, doc)
		}
	}
}

// TestManifestsStrict decodes every object of deploy/k8s into its
// Kubernetes or KEDA Go type (no unknown field anywhere), runs KEDA's own
// checks of each ScaledObject (those of its admission webhook that need no
// cluster: triggers, replica bounds, fallback) and parses each trigger's
// metadata the way its scaler does.
func TestManifestsStrict(t *testing.T) {
	for _, f := range k8sFiles(t) {
		objs := objects(t, f)
		auths := map[string]map[string]string{}
		for _, ta := range of[*kedav1alpha1.TriggerAuthentication](objs) {
			params := map[string]string{}
			for _, r := range ta.Spec.SecretTargetRef {
				params[r.Parameter] = "from-secret-" + r.Key
			}
			auths[ta.Name] = params
		}
		for _, so := range of[*kedav1alpha1.ScaledObject](objs) {
			for _, check := range []func(*kedav1alpha1.ScaledObject) error{
				func(so *kedav1alpha1.ScaledObject) error { return kedav1alpha1.ValidateTriggers(so.Spec.Triggers) },
				kedav1alpha1.CheckReplicaCountBoundsAreValid,
				kedav1alpha1.CheckFallbackValid,
			} {
				if err := check(so); err != nil {
					t.Errorf("%s: ScaledObject %s: %v", f, so.Name, err)
				}
			}
			for _, tr := range so.Spec.Triggers {
				var authParams map[string]string
				if tr.AuthenticationRef != nil {
					authParams = auths[tr.AuthenticationRef.Name]
				}
				if _, err := scalerMetadata(tr, authParams); err != nil {
					t.Errorf("%s: ScaledObject %s: trigger %s: %v", f, so.Name, tr.Name, err)
				}
			}
		}
	}
}

// redisListMetadata is the part of the metadata of KEDA's redis (list)
// scaler that kiln's triggers use, with the field tags KEDA v2.21.0 parses
// it by (pkg/scalers/redis_scaler.go, redisMetadata; the type is
// unexported there, so it is repeated here).
type redisListMetadata struct {
	TriggerIndex         int
	Addresses            []string `keda:"name=address;addresses, order=triggerMetadata;authParams;resolvedEnv"`
	Password             string   `keda:"name=password,          order=triggerMetadata;resolvedEnv;authParams"`
	ListLength           int64    `keda:"name=listLength,           order=triggerMetadata, default=5"`
	ActivationListLength int64    `keda:"name=activationListLength, order=triggerMetadata, optional"`
	ListName             string   `keda:"name=listName,             order=triggerMetadata"`
}

// prometheusMetadata is the same for KEDA's prometheus scaler
// (pkg/scalers/prometheus_scaler.go, prometheusMetadata).
type prometheusMetadata struct {
	TriggerIndex        int
	ServerAddress       string  `keda:"name=serverAddress,       order=triggerMetadata"`
	Query               string  `keda:"name=query,               order=triggerMetadata"`
	Threshold           float64 `keda:"name=threshold,           order=triggerMetadata"`
	ActivationThreshold float64 `keda:"name=activationThreshold, order=triggerMetadata, optional"`
	IgnoreNullValues    bool    `keda:"name=ignoreNullValues,    order=triggerMetadata, default=true"`
}

// scalerMetadata parses a trigger's metadata with KEDA's own parser
// (scalersconfig.TypedConfig) into its scaler's metadata type; a key that
// type does not name is an error (KEDA would only log it, and a misspelt
// listName would fall back to the default of nothing).
func scalerMetadata(tr kedav1alpha1.ScaleTriggers, authParams map[string]string) (any, error) {
	var m any
	switch tr.Type {
	case "redis":
		m = &redisListMetadata{}
	case "prometheus":
		m = &prometheusMetadata{}
	default:
		return nil, fmt.Errorf("trigger type %q: kiln scales on redis or prometheus", tr.Type)
	}
	allowed := metadataKeys(m)
	for k := range tr.Metadata {
		if !slices.Contains(allowed, k) {
			return nil, fmt.Errorf("metadata %q is not a %s scaler parameter (%v)", k, tr.Type, allowed)
		}
	}
	sc := scalersconfig.ScalerConfig{TriggerType: tr.Type, TriggerName: tr.Name, TriggerMetadata: tr.Metadata, AuthParams: authParams}
	if err := sc.TypedConfig(m); err != nil {
		return nil, err
	}
	return m, nil
}

// metadataKeys are the trigger metadata names of a scaler metadata type's
// keda tags.
func metadataKeys(m any) []string {
	var keys []string
	t := reflect.TypeOf(m).Elem()
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("keda")
		var names []string
		metadata := false
		for part := range strings.SplitSeq(tag, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch k {
			case "name":
				names = strings.Split(v, ";")
			case "order":
				metadata = slices.Contains(strings.Split(v, ";"), "triggerMetadata")
			}
		}
		if metadata {
			keys = append(keys, names...)
		}
	}
	return keys
}

// container returns the kiln container of a pod template (there is one).
func container(t *testing.T, name string, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", name, len(spec.Containers))
	}
	return spec.Containers[0]
}

// envValue returns the literal value of variable name in c.
func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	return "", false
}

// worker is a worker Deployment of kiln.yaml and what the tests read off it.
type worker struct {
	dep         *appsv1.Deployment
	queues      []string // KILN_WORKER_QUEUES
	concurrency int      // KILN_CONCURRENCY
	shutdown    time.Duration
}

// workers are kiln.yaml's worker Deployments by queue; each runs exactly
// one queue, and every queue has one.
func workers(t *testing.T, objs []metav1.Object) map[string]worker {
	t.Helper()
	out := map[string]worker{}
	for _, d := range of[*appsv1.Deployment](objs) {
		c := container(t, d.Name, d.Spec.Template.Spec)
		if len(c.Args) == 0 || c.Args[0] != "worker" {
			continue
		}
		w := worker{dep: d, concurrency: app.Defaults().Concurrency, shutdown: app.Defaults().ShutdownTimeout}
		v, _ := envValue(c, "KILN_WORKER_QUEUES")
		for q := range strings.SplitSeq(v, ",") {
			if q = strings.TrimSpace(q); q != "" {
				w.queues = append(w.queues, q)
			}
		}
		if _, err := app.WorkerQueueWeights(w.queues); err != nil || len(w.queues) != 1 {
			t.Errorf("Deployment %s: KILN_WORKER_QUEUES %q, want exactly one queue (%v)", d.Name, v, err)
			continue
		}
		if v, ok := envValue(c, "KILN_CONCURRENCY"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Errorf("Deployment %s: KILN_CONCURRENCY %q: %v", d.Name, v, err)
			}
			w.concurrency = n
		}
		if v, ok := envValue(c, "KILN_SHUTDOWN_TIMEOUT"); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Errorf("Deployment %s: KILN_SHUTDOWN_TIMEOUT %q: %v", w.dep.Name, v, err)
			}
			w.shutdown = d
		}
		if prev, dup := out[w.queues[0]]; dup {
			t.Errorf("Deployments %s and %s both run the queue %s", prev.dep.Name, d.Name, w.queues[0])
		}
		out[w.queues[0]] = w
	}
	for q := range tasks.QueueWeights() {
		if _, ok := out[q]; !ok {
			t.Errorf("%s: no worker Deployment runs the queue %s", kilnManifest, q)
		}
	}
	return out
}

// asynqKey is the Redis key in which asynq keeps a queue's tasks of one
// state: asynq:{<queue>}:<state> (a list for pending and active, a sorted
// set for retry and scheduled). asynq's own key functions are internal
// (asynq/internal/base); TestScalerKeysInRedis proves these against a real
// asynq.
func asynqKey(queue, state string) string { return "asynq:{" + queue + "}:" + state }

// drainMargin is what a worker needs after KILN_SHUTDOWN_TIMEOUT: asynq
// hands the unfinished tasks back, their ffmpegs stop, their leases are
// released (at most 5 s), and the process exits.
const drainMargin = 10 * time.Second

// TestWorkersDrainBeforeKill: every kiln workload's grace period exceeds
// its KILN_SHUTDOWN_TIMEOUT (the default when unset) by drainMargin, so
// Kubernetes never kills a worker that is still finishing or handing back
// its tasks.
func TestWorkersDrainBeforeKill(t *testing.T) {
	objs := objects(t, kilnManifest)
	ws := workers(t, objs)
	if len(ws) == 0 {
		t.Fatal("no worker Deployment")
	}
	for q, w := range ws {
		g := w.dep.Spec.Template.Spec.TerminationGracePeriodSeconds
		if g == nil {
			t.Errorf("Deployment %s (%s): no terminationGracePeriodSeconds (Kubernetes' default is 30 s)", w.dep.Name, q)
			continue
		}
		if grace := time.Duration(*g) * time.Second; grace < w.shutdown+drainMargin {
			t.Errorf("Deployment %s (%s): terminationGracePeriodSeconds %v, want at least KILN_SHUTDOWN_TIMEOUT %v + %v",
				w.dep.Name, q, grace, w.shutdown, drainMargin)
		}
		if w.dep.Spec.Replicas != nil {
			t.Errorf("Deployment %s: replicas %d: KEDA sets them", w.dep.Name, *w.dep.Spec.Replicas)
		}
	}
}

// TestScaledObjects cross-checks both ways KEDA scales the workers with
// kiln.yaml, the Secret and the code: one ScaledObject per queue, on that
// queue's worker Deployment, down to zero with a cooldown and a fallback;
// the Redis triggers read exactly asynq's pending, active, retry and
// scheduled keys of that queue at the ConfigMap's Redis with the Secret's
// password; the Prometheus query reads the gauges kiln serves for that
// queue. Every reference (scale target, authentication, Secret key,
// ConfigMap) names an object of the manifests.
func TestScaledObjects(t *testing.T) {
	base := objects(t, kilnManifest)
	secretObjs := objects(t, secretExample)
	secret, ok := byName[*corev1.Secret](secretObjs, "kiln-secrets")
	if !ok {
		t.Fatalf("%s: no Secret kiln-secrets", secretExample)
	}
	for k, v := range secret.StringData {
		if v != "" {
			t.Errorf("%s: %s has a value: the example holds no credential", secretExample, k)
		}
	}
	hasSecretKey := func(name, key string) bool {
		_, inData := secret.Data[key]
		_, inString := secret.StringData[key]
		return name == secret.Name && (inData || inString)
	}
	// Every workload's Secret and ConfigMap references.
	var pods []struct {
		name string
		spec corev1.PodSpec
	}
	for _, d := range of[*appsv1.Deployment](base) {
		pods = append(pods, struct {
			name string
			spec corev1.PodSpec
		}{"Deployment " + d.Name, d.Spec.Template.Spec})
	}
	for _, s := range of[*appsv1.StatefulSet](base) {
		pods = append(pods, struct {
			name string
			spec corev1.PodSpec
		}{"StatefulSet " + s.Name, s.Spec.Template.Spec})
	}
	for _, p := range pods {
		for _, c := range p.spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					if r := e.ValueFrom.SecretKeyRef; !hasSecretKey(r.Name, r.Key) {
						t.Errorf("%s: %s from Secret %s key %s, which %s does not have", p.name, e.Name, r.Name, r.Key, secretExample)
					}
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					if _, ok := byName[*corev1.ConfigMap](base, ef.ConfigMapRef.Name); !ok {
						t.Errorf("%s: envFrom ConfigMap %s is not in %s", p.name, ef.ConfigMapRef.Name, kilnManifest)
					}
				}
				if ef.SecretRef != nil {
					t.Errorf("%s: envFrom Secret %s: take each credential by key", p.name, ef.SecretRef.Name)
				}
			}
		}
	}
	cm, ok := byName[*corev1.ConfigMap](base, "kiln-config")
	if !ok {
		t.Fatalf("%s: no ConfigMap kiln-config", kilnManifest)
	}
	ws := workers(t, base)
	metricsSource := goSource(t, "../internal/metrics") // where the queue gauges are named

	for _, file := range []string{kedaRedis, kedaPrometheus} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			objs := objects(t, file)
			auths := map[string]map[string]string{}
			for _, ta := range of[*kedav1alpha1.TriggerAuthentication](objs) {
				auths[ta.Name] = map[string]string{}
				for _, r := range ta.Spec.SecretTargetRef {
					if !hasSecretKey(r.Name, r.Key) {
						t.Errorf("TriggerAuthentication %s: parameter %s from Secret %s key %s, which %s does not have", ta.Name, r.Parameter, r.Name, r.Key, secretExample)
					}
					auths[ta.Name][r.Parameter] = "from-secret-" + r.Key
				}
			}
			scaled := map[string]bool{}
			for _, so := range of[*kedav1alpha1.ScaledObject](objs) {
				ref := so.Spec.ScaleTargetRef
				if ref == nil || (ref.Kind != "" && ref.Kind != "Deployment") || (ref.APIVersion != "" && ref.APIVersion != "apps/v1") {
					t.Errorf("ScaledObject %s: scaleTargetRef %+v, want a Deployment", so.Name, ref)
					continue
				}
				if _, ok := byName[*appsv1.Deployment](base, ref.Name); !ok {
					t.Errorf("ScaledObject %s: scales Deployment %s, which %s does not have", so.Name, ref.Name, kilnManifest)
					continue
				}
				var w worker
				for _, x := range ws {
					if x.dep.Name == ref.Name {
						w = x
					}
				}
				if w.dep == nil {
					t.Errorf("ScaledObject %s: Deployment %s is no worker of one queue", so.Name, ref.Name)
					continue
				}
				q := w.queues[0]
				if scaled[q] {
					t.Errorf("ScaledObject %s: a second one for the queue %s", so.Name, q)
				}
				scaled[q] = true
				if so.Name != w.dep.Name {
					t.Errorf("ScaledObject %s: named unlike its Deployment %s (both files must name it alike, so one replaces the other)", so.Name, w.dep.Name)
				}
				if p := so.Spec.MinReplicaCount; p == nil || *p != 0 {
					t.Errorf("ScaledObject %s: minReplicaCount %s, want 0 (scale to zero)", so.Name, show(p))
				}
				if p := so.Spec.CooldownPeriod; p == nil || *p < 60 {
					t.Errorf("ScaledObject %s: cooldownPeriod %s, want at least 60 s", so.Name, show(p))
				}
				if so.Spec.Fallback == nil || so.Spec.Fallback.Replicas < 1 {
					t.Errorf("ScaledObject %s: fallback %+v, want at least one worker when the metrics cannot be read", so.Name, so.Spec.Fallback)
				}
				switch file {
				case kedaRedis:
					checkRedisTriggers(t, so, q, w, cm.Data["KILN_REDIS_ADDR"], auths)
				case kedaPrometheus:
					checkPrometheusTriggers(t, so, q, w, metricsSource)
				}
			}
			for q := range tasks.QueueWeights() {
				if !scaled[q] {
					t.Errorf("no ScaledObject scales the worker of the queue %s", q)
				}
			}
		})
	}
}

// checkRedisTriggers: exactly the triggers pending, active (listLength
// the worker's concurrency), retry and scheduled, on asynq's keys of
// queue q, at addr, authenticated with the Secret's Redis password.
func checkRedisTriggers(t *testing.T, so *kedav1alpha1.ScaledObject, q string, w worker, addr string, auths map[string]map[string]string) {
	t.Helper()
	var names []string
	for _, tr := range so.Spec.Triggers {
		names = append(names, tr.Name)
		if tr.AuthenticationRef == nil || (tr.AuthenticationRef.Kind != "" && tr.AuthenticationRef.Kind != "TriggerAuthentication") || auths[tr.AuthenticationRef.Name] == nil {
			t.Errorf("ScaledObject %s: trigger %s: authenticationRef %+v names no TriggerAuthentication of the file", so.Name, tr.Name, tr.AuthenticationRef)
			continue
		}
		if auths[tr.AuthenticationRef.Name]["password"] != "from-secret-redis-password" {
			t.Errorf("ScaledObject %s: trigger %s: TriggerAuthentication %s gives no password from the Secret's redis-password", so.Name, tr.Name, tr.AuthenticationRef.Name)
		}
		m, err := scalerMetadata(tr, auths[tr.AuthenticationRef.Name])
		if err != nil {
			t.Errorf("ScaledObject %s: trigger %s: %v", so.Name, tr.Name, err)
			continue
		}
		md := m.(*redisListMetadata)
		if tr.Name == "backlog" {
			if md.ListName != admission.BacklogKey || md.ListLength != int64(w.concurrency) {
				t.Errorf("ScaledObject %s: trigger backlog reads %q (listLength %d), want %q (%d: the worker's KILN_CONCURRENCY)",
					so.Name, md.ListName, md.ListLength, admission.BacklogKey, w.concurrency)
			}
		} else if want := asynqKey(q, tr.Name); md.ListName != want {
			t.Errorf("ScaledObject %s: trigger %s reads %q, want asynq's %q", so.Name, tr.Name, md.ListName, want)
		}
		if !slices.Equal(md.Addresses, []string{addr}) {
			t.Errorf("ScaledObject %s: trigger %s: Redis at %v, the workers use %q", so.Name, tr.Name, md.Addresses, addr)
		}
		switch tr.Name {
		case "pending", "active":
			if md.ListLength != int64(w.concurrency) {
				t.Errorf("ScaledObject %s: trigger %s: listLength %d, want the worker's KILN_CONCURRENCY %d (tasks per replica)", so.Name, tr.Name, md.ListLength, w.concurrency)
			}
		case "retry", "scheduled":
			if md.ListLength < 100 {
				t.Errorf("ScaledObject %s: trigger %s: listLength %d: waiting tasks keep one worker, they need no more", so.Name, tr.Name, md.ListLength)
			}
		}
	}
	want := []string{"pending", "active", "retry", "scheduled"}
	if q == tasks.QueueTranscode { // and the work waiting for admission to it
		want = append(want, "backlog")
	}
	if !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(want))) {
		t.Errorf("ScaledObject %s: triggers %v, want exactly %v", so.Name, names, want)
	}
}

// checkPrometheusTriggers: one query on the gauges kiln serves for queue
// q, tasks per replica the worker's concurrency, no answer an error.
func checkPrometheusTriggers(t *testing.T, so *kedav1alpha1.ScaledObject, q string, w worker, metricsSource string) {
	t.Helper()
	if len(so.Spec.Triggers) != 1 {
		t.Errorf("ScaledObject %s: %d triggers, want one query", so.Name, len(so.Spec.Triggers))
		return
	}
	m, err := scalerMetadata(so.Spec.Triggers[0], nil)
	if err != nil {
		t.Errorf("ScaledObject %s: %v", so.Name, err)
		return
	}
	md := m.(*prometheusMetadata)
	if q == tasks.QueueTranscode && !strings.Contains(md.Query, "kiln_admission_waiting_tasks") {
		t.Errorf("ScaledObject %s: query %q does not count the work waiting for admission (kiln_admission_waiting_tasks)", so.Name, md.Query)
	}
	for _, g := range []string{"kiln_queue_pending_tasks", "kiln_queue_active_tasks", "kiln_queue_retry_tasks", "kiln_queue_scheduled_tasks"} {
		if !strings.Contains(metricsSource, `"`+g+`"`) {
			t.Errorf("kiln serves no gauge %s (internal/metrics)", g)
		}
		sel := g + `{queue="` + q + `"}`
		if !strings.Contains(md.Query, sel) {
			t.Errorf("ScaledObject %s: query %q does not read %s", so.Name, md.Query, sel)
		}
	}
	if strings.Count(md.Query, `queue="`) != strings.Count(md.Query, `queue="`+q+`"`) {
		t.Errorf("ScaledObject %s: query %q reads another queue than %s", so.Name, md.Query, q)
	}
	if md.Threshold != float64(w.concurrency) {
		t.Errorf("ScaledObject %s: threshold %v, want the worker's KILN_CONCURRENCY %d", so.Name, md.Threshold, w.concurrency)
	}
	if md.IgnoreNullValues {
		t.Errorf("ScaledObject %s: ignoreNullValues: no answer would read as an empty queue and scale to zero", so.Name)
	}
}

// show is *p, or "unset".
func show(p *int32) string {
	if p == nil {
		return "unset"
	}
	return strconv.Itoa(int(*p))
}
