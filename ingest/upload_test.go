package ingest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/policy"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/tenant"
)

// multipartBody writes parts (a file part when filename is set) and returns
// the body and its Content-Type.
func multipartBody(t *testing.T, parts ...mpPart) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		disp := `form-data; name="` + p.field + `"`
		if p.filename != "" {
			disp += `; filename="` + p.filename + `"`
		}
		h.Set("Content-Disposition", disp)
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, p.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

type mpPart struct{ field, filename, contentType, data string }

// unsized hides a reader's length, as a chunked request body does.
type unsized struct{ io.Reader }

func TestUpload(t *testing.T) {
	const publicURL = "https://kiln.example.com"
	video := "\x00\x00\x00\x18ftypisom fake video bytes"
	mpOK, mpOKType := multipartBody(t,
		mpPart{field: "title", data: "My holiday"},
		mpPart{field: "file", filename: "../holiday clip.mov", contentType: "video/quicktime", data: video},
		mpPart{field: "after", data: "ignored"},
	)
	mpNoFile, mpNoFileType := multipartBody(t, mpPart{field: "title", data: "no file here"})
	mpEmptyFile, mpEmptyFileType := multipartBody(t, mpPart{field: "file", filename: "e.mp4", data: ""})
	mpBig, mpBigType := multipartBody(t, mpPart{field: "file", filename: "big.mp4", data: strings.Repeat("x", 200)})
	mpBigField, mpBigFieldType := multipartBody(t,
		mpPart{field: "title", data: strings.Repeat("t", 200)},
		mpPart{field: "file", filename: "small.mp4", data: "x"},
	)

	tests := []struct {
		name        string
		target      string
		contentType string
		body        io.Reader
		chunked     bool // hide the length (Transfer-Encoding: chunked)
		maxBytes    int64
		storeErr    error
		publishErr  error

		wantStatus int
		wantCode   string // error code for non-2xx
		// for 202:
		wantKeySuffix   string
		wantData        string
		wantContentType string
		wantSize        int64
		wantPreset      string
		wantPolicy      string // default public
		wantPriority    string // default normal (then not in the metadata)
	}{
		{
			name: "raw body", target: "/v1/uploads?filename=clip.mp4", contentType: "video/mp4", body: strings.NewReader(video),
			wantStatus: http.StatusAccepted, wantKeySuffix: "/clip.mp4", wantData: video, wantContentType: "video/mp4",
			wantSize: int64(len(video)), wantPreset: "default",
		},
		{
			name: "raw body chunked, named preset, no filename", target: "/v1/uploads?preset=hd", body: unsized{strings.NewReader(video)}, chunked: true,
			wantStatus: http.StatusAccepted, wantKeySuffix: "/source", wantData: video, wantContentType: "application/octet-stream",
			wantSize: -1, wantPreset: "hd",
		},
		{
			name: "multipart with a field before the file", target: "/v1/uploads", contentType: mpOKType, body: bytes.NewReader(mpOK.Bytes()),
			wantStatus: http.StatusAccepted, wantKeySuffix: "/holiday_clip.mov", wantData: video, wantContentType: "video/quicktime",
			wantSize: -1, wantPreset: "default",
		},
		{
			name: "multipart filename query wins", target: "/v1/uploads?filename=x.mp4", contentType: mpOKType, body: bytes.NewReader(mpOK.Bytes()),
			wantStatus: http.StatusAccepted, wantKeySuffix: "/x.mp4", wantData: video, wantContentType: "video/quicktime",
			wantSize: -1, wantPreset: "default",
		},
		{
			name: "multipart without file part", target: "/v1/uploads", contentType: mpNoFileType, body: mpNoFile,
			wantStatus: http.StatusBadRequest, wantCode: CodeBadMultipart,
		},
		{
			name: "multipart without boundary", target: "/v1/uploads", contentType: "multipart/form-data", body: strings.NewReader("x"),
			wantStatus: http.StatusBadRequest, wantCode: CodeBadMultipart,
		},
		{
			name: "multipart with empty file", target: "/v1/uploads", contentType: mpEmptyFileType, body: mpEmptyFile,
			wantStatus: http.StatusBadRequest, wantCode: CodeEmptyUpload,
		},
		{
			name: "empty body", target: "/v1/uploads", contentType: "video/mp4", body: strings.NewReader(""),
			wantStatus: http.StatusBadRequest, wantCode: CodeEmptyUpload,
		},
		{
			name: "empty chunked body", target: "/v1/uploads", body: unsized{strings.NewReader("")}, chunked: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeEmptyUpload,
		},
		{
			name: "unknown playback policy", target: "/v1/uploads?playback_policy=private", body: strings.NewReader(video),
			wantStatus: http.StatusBadRequest, wantCode: CodeInvalidPolicy,
		},
		{
			name: "unknown priority", target: "/v1/uploads?priority=urgent", body: strings.NewReader(video),
			wantStatus: http.StatusBadRequest, wantCode: CodeInvalidPriority,
		},
		{
			name: "high priority", target: "/v1/uploads?priority=high&filename=h.mp4", contentType: "video/mp4", body: strings.NewReader(video),
			wantStatus: http.StatusAccepted, wantKeySuffix: "/h.mp4", wantData: video, wantContentType: "video/mp4",
			wantSize: int64(len(video)), wantPreset: "default", wantPriority: tasks.PriorityHigh,
		},
		{
			name: "signed playback policy", target: "/v1/uploads?playback_policy=signed&filename=s.mp4", contentType: "video/mp4", body: strings.NewReader(video),
			wantStatus: http.StatusAccepted, wantKeySuffix: "/s.mp4", wantData: video, wantContentType: "video/mp4",
			wantSize: int64(len(video)), wantPreset: "default", wantPolicy: policy.Signed,
		},
		{
			name: "unknown preset", target: "/v1/uploads?preset=nope", body: strings.NewReader(video),
			wantStatus: http.StatusBadRequest, wantCode: CodeInvalidPreset,
		},
		{
			name: "too large by content length", target: "/v1/uploads", body: strings.NewReader(strings.Repeat("x", 101)), maxBytes: 100,
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: CodeTooLarge,
		},
		{
			name: "too large while streaming", target: "/v1/uploads", body: unsized{strings.NewReader(strings.Repeat("x", 101))}, chunked: true, maxBytes: 100,
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: CodeTooLarge,
		},
		{
			name: "exactly max bytes", target: "/v1/uploads", body: strings.NewReader(strings.Repeat("x", 100)), maxBytes: 100,
			wantStatus: http.StatusAccepted, wantKeySuffix: "/source", wantData: strings.Repeat("x", 100),
			wantContentType: "application/octet-stream", wantSize: 100, wantPreset: "default",
		},
		{
			name: "too large multipart by content length", target: "/v1/uploads", contentType: mpBigType, body: bytes.NewReader(mpBig.Bytes()), maxBytes: 100,
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: CodeTooLarge,
		},
		{
			name: "too large multipart while streaming", target: "/v1/uploads", contentType: mpBigType, body: unsized{bytes.NewReader(mpBig.Bytes())}, chunked: true, maxBytes: 100,
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: CodeTooLarge,
		},
		{
			name: "too large multipart field before the file", target: "/v1/uploads", contentType: mpBigFieldType, body: unsized{bytes.NewReader(mpBigField.Bytes())}, chunked: true, maxBytes: 100,
			wantStatus: http.StatusRequestEntityTooLarge, wantCode: CodeTooLarge,
		},
		{
			name: "object store failure", target: "/v1/uploads", body: strings.NewReader(video), storeErr: errors.New("s3: connection refused"),
			wantStatus: http.StatusBadGateway, wantCode: httpapi.CodeUnavailable,
		},
		{
			// Not recorded durably: no 202 for a job that may never run.
			name: "publish failure is 503", target: "/v1/uploads?filename=clip.mp4", contentType: "video/mp4", body: strings.NewReader(video),
			publishErr: errors.New("nats: timeout"),
			wantStatus: http.StatusServiceUnavailable, wantCode: httpapi.CodeUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objects := &fakeObjects{err: tt.storeErr}
			events := &fakeEvents{landedErr: tt.publishErr}
			s := New(Config{
				Objects: objects, Events: events, Queue: &fakeQueue{},
				SourcesBucket: "kiln-sources", PublicURL: publicURL + "/",
				MaxUploadBytes: tt.maxBytes, Presets: []string{"default", "hd"},
			})
			req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, tt.target, tt.body)
			if tt.chunked {
				req.ContentLength = -1
				req.TransferEncoding = []string{"chunked"}
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus != http.StatusAccepted {
				var body httpapi.ErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatalf("error body %q: %v", rec.Body, err)
				}
				if body.Error.Code != tt.wantCode || body.Error.Message == "" {
					t.Fatalf("error = %+v, want code %q", body.Error, tt.wantCode)
				}
				if tt.publishErr != nil {
					// The object stays: its bucket notification may start the job.
					if len(objects.puts) != 1 || rec.Header().Get("Retry-After") != strconv.Itoa(RetryAfterSeconds) {
						t.Fatalf("stored %d objects, Retry-After %q; want 1 and %d", len(objects.puts), rec.Header().Get("Retry-After"), RetryAfterSeconds)
					}
					return
				}
				if len(objects.puts) != 0 && tt.storeErr == nil {
					t.Fatalf("stored %d objects on a refused upload", len(objects.puts))
				}
				if len(events.landed) != 0 {
					t.Fatalf("published %d object landed events on a refused upload", len(events.landed))
				}
				return
			}

			var resp UploadResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("response %q: %v", rec.Body, err)
			}
			if len(objects.puts) != 1 {
				t.Fatalf("stored %d objects, want 1", len(objects.puts))
			}
			put := objects.puts[0]
			if put.Bucket != "kiln-sources" || !strings.HasPrefix(put.Key, "uploads/") || !strings.HasSuffix(put.Key, tt.wantKeySuffix) {
				t.Errorf("stored at %s/%s, want kiln-sources/uploads/…%s", put.Bucket, put.Key, tt.wantKeySuffix)
			}
			if string(put.Data) != tt.wantData {
				t.Errorf("stored %q, want %q", put.Data, tt.wantData)
			}
			if put.ContentType != tt.wantContentType || put.Size != tt.wantSize {
				t.Errorf("content type/size = %q/%d, want %q/%d", put.ContentType, put.Size, tt.wantContentType, tt.wantSize)
			}
			wantPolicy := cmp.Or(tt.wantPolicy, policy.Public)
			wantMeta := map[string]string{layout.MetaPreset: tt.wantPreset, layout.MetaPolicy: wantPolicy, layout.MetaTenant: tenant.Default}
			if tt.wantPriority != "" {
				wantMeta[layout.MetaPriority] = tt.wantPriority
			}
			if !maps.Equal(put.Meta, wantMeta) {
				t.Errorf("metadata = %v, want %v", put.Meta, wantMeta)
			}

			etag := "etag-" + strconv.Itoa(len(tt.wantData))
			wantJob, wantAsset := jobid.FromObject("kiln-sources", put.Key, etag)
			if resp.JobID != wantJob || resp.AssetID != wantAsset {
				t.Errorf("ids = %s/%s, want %s/%s", resp.JobID, resp.AssetID, wantJob, wantAsset)
			}
			if resp.StatusURL != publicURL+"/v1/jobs/"+wantJob || resp.AssetURL != publicURL+"/v1/assets/"+wantAsset {
				t.Errorf("urls = %s %s", resp.StatusURL, resp.AssetURL)
			}

			if len(events.landed) != 1 {
				t.Fatalf("published %d object landed events, want 1", len(events.landed))
			}
			ev := events.landed[0]
			o := ev.GetObject()
			if o.Bucket != put.Bucket || o.Key != put.Key || o.Etag != etag || o.Size != int64(len(tt.wantData)) || o.ContentType != tt.wantContentType {
				t.Errorf("landed object = %v", o)
			}
			if ev.Origin != "api" || ev.Preset != tt.wantPreset || ev.PlaybackPolicy != wantPolicy || ev.GetTime() == nil ||
				ev.GetPriority() != cmp.Or(tt.wantPriority, tasks.PriorityNormal) {
				t.Errorf("landed = %v", ev)
			}
		})
	}
}

// TestUploadOutlivesTheClient: a client that disconnects right after its
// upload is stored still gets its "object landed" published, under a
// context of its own with a deadline.
func TestUploadOutlivesTheClient(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	objects, events := &fakeObjects{onPut: cancel}, &fakeEvents{}
	s := New(Config{Objects: objects, Events: events, SourcesBucket: "b"})
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/uploads?filename=a.mp4", strings.NewReader("x"))
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted || len(events.landed) != 1 {
		t.Fatalf("status %d, %d published; want 202 and 1", rec.Code, len(events.landed))
	}
	if c := events.landedCtx[0]; c.err != nil || !c.hasDeadline {
		t.Fatalf("published with ctx err %v, deadline %v; want a live context with a deadline", c.err, c.hasDeadline)
	}
}

func TestUploadKeysAreUnique(t *testing.T) {
	objects := &fakeObjects{}
	s := New(Config{Objects: objects, Events: &fakeEvents{}, SourcesBucket: "b"})
	for range 2 {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/v1/uploads?filename=a.mp4", strings.NewReader("x"))
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("status = %d", rec.Code)
		}
	}
	if objects.puts[0].Key == objects.puts[1].Key {
		t.Fatalf("two uploads share the key %q", objects.puts[0].Key)
	}
}

func TestUploadRoutes(t *testing.T) {
	s := New(Config{Objects: &fakeObjects{}, Events: &fakeEvents{}})
	tests := []struct {
		method, target string
		want           int
	}{
		{http.MethodGet, "/v1/uploads", http.StatusMethodNotAllowed},
		{http.MethodPut, "/v1/uploads", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v1/other", http.StatusNotFound},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), tt.method, tt.target, strings.NewReader("x")))
		if rec.Code != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.target, rec.Code, tt.want)
		}
	}
}

// TestUploadProgressDeadline: behind a server whose read timeout is shorter
// than the upload, a body that keeps arriving is accepted, and one that
// stops sending is cut after the progress timeout with 408 upload_stalled.
func TestUploadProgressDeadline(t *testing.T) {
	objects, events := &fakeObjects{}, &fakeEvents{}
	s := New(Config{Objects: objects, Events: events, SourcesBucket: "b", UploadProgressTimeout: 400 * time.Millisecond})
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()

	post := func(send func(w *io.PipeWriter)) (*http.Response, time.Duration) {
		pr, pw := io.Pipe()
		go send(pw)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/uploads?filename=a.mp4", pr)
		start := time.Now()
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, time.Since(start)
	}
	// 12 chunks 100 ms apart: 1.2 s, four times the read timeout.
	resp, took := post(func(w *io.PipeWriter) {
		for range 12 {
			if _, err := w.Write([]byte("chunk")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		w.Close()
	})
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || len(objects.puts) != 1 || len(objects.puts[0].Data) != 60 {
		t.Fatalf("steady upload over %s: %d, %d puts; want 202 and the whole body", took, resp.StatusCode, len(objects.puts))
	}
	// One chunk, then silence.
	stop := make(chan struct{})
	defer close(stop)
	resp, took = post(func(w *io.PipeWriter) {
		_, _ = w.Write([]byte("first"))
		<-stop
		w.Close()
	})
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusRequestTimeout || body.Error.Code != CodeUploadStalled {
		t.Fatalf("stalled upload: %d %+v; want 408 upload_stalled", resp.StatusCode, body)
	}
	if took > 3*time.Second {
		t.Errorf("the stalled upload was cut after %s, want about 400 ms", took)
	}
	if len(events.landed) != 1 {
		t.Errorf("%d landed facts, want only the steady upload's", len(events.landed))
	}
}
