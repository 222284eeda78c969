package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	mathrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kilnvideo/kiln/ingest"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// landedRecorder stands in for the bus: it records the "object landed"
// facts ingest publishes (the e2e test runs the real one).
type landedRecorder struct {
	mu     sync.Mutex
	landed []*kilnv1.ObjectLanded
}

func (r *landedRecorder) PublishObjectLanded(_ context.Context, ev *kilnv1.ObjectLanded) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.landed = append(r.landed, ev)
	return nil
}

func (r *landedRecorder) PublishJobEvent(context.Context, *kilnv1.JobEvent) error { return nil }

// partPUTs counts the part PUTs that reach the storage and can stop the
// run after a number of them succeeded.
type partPUTs struct {
	next http.RoundTripper
	mu   sync.Mutex
	sent []int // part numbers stored, in order
	// after this many stored parts, stop is called
	stopAfter int
	stop      func()
}

func (p *partPUTs) RoundTrip(req *http.Request) (*http.Response, error) {
	part := req.URL.Query().Get("partNumber")
	resp, err := p.next.RoundTrip(req)
	if req.Method != http.MethodPut || part == "" || err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	n, _ := strconv.Atoi(part)
	p.mu.Lock()
	p.sent = append(p.sent, n)
	if p.stop != nil && len(p.sent) == p.stopAfter {
		p.stop()
	}
	p.mu.Unlock()
	return resp, err
}

func (p *partPUTs) parts() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(slices.Values(p.sent))
}

// mpStack is the real ingest upload API on the test stack's MinIO, in a
// bucket of its own.
type mpStack struct {
	srv    *httptest.Server
	store  *objstore.Client
	bucket string
	events *landedRecorder
}

func newMPStack(t *testing.T) *mpStack {
	t.Helper()
	env := testenv.S3(t)
	store, err := objstore.New(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	bucket := "kiln-cli-mp-" + hex.EncodeToString(b)
	if err := store.EnsureBuckets(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mc, err := minio.New(env.Config.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(env.Config.AccessKey, env.Config.SecretKey, "")})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
			defer cancel()
			err = mc.RemoveBucketWithOptions(ctx, bucket, minio.RemoveBucketOptions{ForceDelete: true})
		}
		if err != nil {
			t.Errorf("cleanup: bucket %s: %v", bucket, err)
		}
	})
	s := &mpStack{store: store, bucket: bucket, events: &landedRecorder{}}
	var svc *ingest.Service
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { svc.Handler().ServeHTTP(w, r) }))
	t.Cleanup(s.srv.Close)
	svc = ingest.New(ingest.Config{Objects: store, Events: s.events, SourcesBucket: bucket, PublicURL: s.srv.URL,
		Presigner: store, Multipart: store, UploadIDKey: ingest.UploadIDKey("cli-test")})
	// The upload state lives in the user's cache folder: the test's own.
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	return s
}

// inProgress lists the multipart uploads in the bucket and their parts.
func (s *mpStack) inProgress(t *testing.T) map[string][]int {
	t.Helper()
	ups, err := s.store.ListMultipartUploads(t.Context(), s.bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int{}
	for _, u := range ups {
		parts, err := s.store.ListParts(t.Context(), s.bucket, u.Key, u.UploadID)
		if err != nil {
			t.Fatal(err)
		}
		out[u.Key] = []int{}
		for _, p := range parts {
			out[u.Key] = append(out[u.Key], p.Number)
		}
	}
	return out
}

func stateFiles(t *testing.T) []string {
	t.Helper()
	dir, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "kiln", "uploads", "*.json"))
	return files
}

// randomFile writes n random bytes to a file named name.
func randomFile(t *testing.T, name string, n int, seed byte) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	_, _ = mathrand.NewChaCha8([32]byte{seed}).Read(data)
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// TestUploadMultipartResume is the interrupted upload: `kiln upload`
// sends a file in parts, is stopped after two of them, and the second run
// of the same command sends only the parts the storage does not have; the
// object is the file, the job is announced, the state file is gone.
func TestUploadMultipartResume(t *testing.T) {
	s := newMPStack(t)
	path, data := randomFile(t, "long take.mp4", 3*objstore.MinPartSize+1234, 1)
	args := []string{path, "--multipart-threshold", "1MiB", "--part-size", "5MiB", "--preset", "default"}

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	first := &partPUTs{next: http.DefaultTransport, stopAfter: 2, stop: stop}
	e, stdout, stderr := testEnv(t, s.srv)
	e.http = &http.Client{Transport: first}
	err := e.run(ctx, "upload", append(args, "--parallel", "1"))
	if exitCode(err) != exitGeneric || !strings.Contains(err.Error(), "interrupted") || stdout.Len() != 0 {
		t.Fatalf("interrupted run: %v (exit %d), stdout %q", err, exitCode(err), stdout)
	}
	if !strings.Contains(stderr.String(), "run the same command again to resume") {
		t.Errorf("interrupted run: stderr %q", stderr)
	}
	if files := stateFiles(t); len(files) != 1 {
		t.Fatalf("state files after the interruption: %v", files)
	}
	progress := s.inProgress(t)
	if len(progress) != 1 {
		t.Fatalf("uploads in progress: %v", progress)
	}
	var stored []int
	for _, parts := range progress {
		stored = parts
	}
	if len(stored) < 2 || len(stored) >= 4 || !slices.Equal(stored, first.parts()) {
		t.Fatalf("stored after the interruption: %v (sent %v), want 2 or 3 of 4", stored, first.parts())
	}

	second := &partPUTs{next: http.DefaultTransport}
	e, stdout, stderr = testEnv(t, s.srv)
	e.http = &http.Client{Transport: second}
	if err := e.run(t.Context(), "upload", append(args, "--parallel", "2")); err != nil {
		t.Fatalf("second run: %v\n%s", err, stderr)
	}
	// Only the missing parts went out, and together they are the file.
	resent := second.parts()
	for _, n := range resent {
		if slices.Contains(stored, n) {
			t.Errorf("part %d was stored before and sent again (stored %v, second run %v)", n, stored, resent)
		}
	}
	t.Logf("parts stored before the interruption %v, sent by the resumed run %v", stored, resent)
	if all := slices.Sorted(slices.Values(append(slices.Clone(stored), resent...))); !slices.Equal(all, []int{1, 2, 3, 4}) {
		t.Fatalf("parts stored %v + sent %v, want 1 to 4 once each", stored, resent)
	}
	if !strings.Contains(stderr.String(), "resuming the upload") || !strings.Contains(stderr.String(), "stored before") {
		t.Errorf("second run: stderr %q", stderr)
	}
	s.events.mu.Lock()
	landed := slices.Clone(s.events.landed)
	s.events.mu.Unlock()
	if len(landed) != 1 {
		t.Fatalf("%d facts, want 1", len(landed))
	}
	o := landed[0].GetObject()
	jobID, _ := jobid.FromObject(s.bucket, o.GetKey(), o.GetEtag())
	if stdout.String() != jobID+"\n" || !strings.HasSuffix(o.GetEtag(), "-4") || landed[0].GetPreset() != "default" {
		t.Fatalf("stdout %q, landed %v; want job %s", stdout, landed[0], jobID)
	}
	got, err := s.store.Get(t.Context(), s.bucket, o.GetKey(), int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the object is not the file: %d of %d bytes, %v", len(got), len(data), err)
	}
	if files := stateFiles(t); len(files) != 0 {
		t.Fatalf("state files after completion: %v", files)
	}
	if left := s.inProgress(t); len(left) != 0 {
		t.Fatalf("uploads in progress after completion: %v", left)
	}
}

// TestUploadMultipartGone: when the interrupted upload was aborted
// meanwhile (the sweep, or a client), the next run starts a new one.
func TestUploadMultipartGone(t *testing.T) {
	s := newMPStack(t)
	path, data := randomFile(t, "clip.mp4", objstore.MinPartSize+10, 2)
	args := []string{path, "--multipart-threshold", "1MiB", "--part-size", "5MiB", "--parallel", "1"}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	e, _, _ := testEnv(t, s.srv)
	e.http = &http.Client{Transport: &partPUTs{next: http.DefaultTransport, stopAfter: 1, stop: stop}}
	if err := e.run(ctx, "upload", args); exitCode(err) != exitGeneric {
		t.Fatalf("interrupted run: %v", err)
	}
	ups, err := s.store.ListMultipartUploads(t.Context(), s.bucket, "")
	if err != nil || len(ups) != 1 {
		t.Fatalf("uploads: %v %v", ups, err)
	}
	if err := s.store.AbortMultipartUpload(t.Context(), s.bucket, ups[0].Key, ups[0].UploadID); err != nil {
		t.Fatal(err)
	}

	again := &partPUTs{next: http.DefaultTransport}
	e, stdout, stderr := testEnv(t, s.srv)
	e.http = &http.Client{Transport: again}
	if err := e.run(t.Context(), "upload", args); err != nil {
		t.Fatalf("run after the abort: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "the interrupted upload is gone (upload_not_found); starting again") ||
		!slices.Equal(again.parts(), []int{1, 2}) || !strings.HasPrefix(stdout.String(), "job_") {
		t.Fatalf("run after the abort: parts %v, stdout %q, stderr %q", again.parts(), stdout, stderr)
	}
	s.events.mu.Lock()
	key := s.events.landed[0].GetObject().GetKey()
	s.events.mu.Unlock()
	if key == ups[0].Key {
		t.Fatal("the new upload has the aborted one's key")
	}
	if got, err := s.store.Get(t.Context(), s.bucket, key, int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object: %v", err)
	}
	if files := stateFiles(t); len(files) != 0 {
		t.Fatalf("state files: %v", files)
	}
}

func TestByteSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "64MiB": 64 << 20, "5 MiB": 5 << 20, "2GiB": 2 << 30, "3KiB": 3 << 10, "7B": 7} {
		var b byteSize
		if err := b.Set(in); err != nil || b.n != want {
			t.Errorf("%q: %d %v, want %d", in, b.n, err, want)
		}
	}
	for _, in := range []string{"-1", "x", "1.5MiB", "1TiB", "99999999999GiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("%q accepted as %d", in, b.n)
		}
	}
	if s := (&byteSize{n: 64 << 20}).String(); s != "64MiB" {
		t.Errorf("String %q", s)
	}
}
