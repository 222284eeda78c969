package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

const jobTimeout = 3 * time.Minute

// TestUploadToPlayback is the walking skeleton as a user sees it: upload a
// clip through the API, wait for ready, play the master playlist with ffmpeg
// through the catalog's URLs, check the ladder, the MP4 and the poster.
func TestUploadToPlayback(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "clip.mp4", 4, "640x360")

	code, up, _ := s.uploadMultipart(t, clip, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: status %d", code)
	}
	if !jobid.ValidJob(up.JobID) || up.StatusURL != s.APIURL+"/v1/jobs/"+up.JobID {
		t.Fatalf("upload answer = %+v", up)
	}
	asset := s.readyAssetOf(t, up)
	if asset.Playback == nil || asset.State != "ready" {
		t.Fatalf("asset not playable: %+v", asset)
	}
	// 640x360 source: no upscaling, three rungs, aspect ratio kept, and
	// the audio once, a rendition of its own.
	var got []string
	audioRenditions := 0
	for _, r := range asset.Renditions {
		if r.Name == "audio" {
			audioRenditions++
			if r.Codecs != "mp4a.40.2" || r.Width != 0 {
				t.Errorf("audio rendition %+v", r)
			}
			continue
		}
		got = append(got, fmt.Sprintf("%dx%d", r.Width, r.Height))
		if !regexp.MustCompile(`^avc1\.64[0-9a-f]{4}$`).MatchString(r.Codecs) {
			t.Errorf("rendition %s codecs %q", r.Name, r.Codecs)
		}
		if r.Bandwidth <= 0 || r.AverageBandwidth <= 0 || r.AverageBandwidth > r.Bandwidth {
			t.Errorf("rendition %s bandwidth %d avg %d", r.Name, r.Bandwidth, r.AverageBandwidth)
		}
	}
	sort.Strings(got)
	if want := []string{"256x144", "426x240", "640x360"}; fmt.Sprint(got) != fmt.Sprint(want) || audioRenditions != 1 {
		t.Fatalf("renditions = %v and %d audio, want %v and the audio", got, audioRenditions, want)
	}

	// ffmpeg reads the master playlist and every variant through the
	// catalog's URLs (segments via presigned redirects) without errors.
	streams := ffprobeStreams(t, asset.Playback.HLS)
	var video []string
	audio := 0
	for _, st := range streams {
		switch st.CodecType {
		case "video":
			if st.CodecName != "h264" {
				t.Errorf("video codec %q", st.CodecName)
			}
			video = append(video, fmt.Sprintf("%dx%d", st.Width, st.Height))
		case "audio":
			if st.CodecName != "aac" {
				t.Errorf("audio codec %q", st.CodecName)
			}
			audio++
		}
	}
	sort.Strings(video)
	if fmt.Sprint(video) != fmt.Sprint(got) || audio == 0 {
		t.Fatalf("HLS streams: video %v audio %d", video, audio)
	}
	decode(t, asset.Playback.HLS, "-map", "0")

	// Every video rendition decodes on its own through its media playlist,
	// and yields duration × fps frames within one GOP (2 s).
	for _, r := range asset.Renditions {
		if r.Name == "audio" {
			continue
		}
		url := strings.TrimSuffix(asset.Playback.HLS, "master.m3u8") + r.Name + "/index.m3u8"
		frames := countFrames(t, url)
		if want := 4 * 30; frames < want-60 || frames > want+60 {
			t.Errorf("rendition %s decoded %d frames, want %d ± 60", r.Name, frames, want)
		}
	}

	// The MP4 download plays, and has its index up front (faststart).
	decode(t, asset.Playback.MP4)
	head := fetch(t, asset.Playback.MP4, 64<<10)
	if m, d := bytes.Index(head, []byte("moov")), bytes.Index(head, []byte("mdat")); m < 0 || (d >= 0 && d < m) {
		t.Errorf("MP4 is not faststart: moov at %d, mdat at %d", m, d)
	}
	if poster := fetch(t, asset.Playback.Poster, 1<<20); !bytes.HasPrefix(poster, []byte{0xff, 0xd8, 0xff}) {
		t.Errorf("poster is not a JPEG (%d bytes)", len(poster))
	}

	// Queue depth, the autoscaling signal, is on /metrics.
	resp, err := http.Get(s.APIURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, q := range []string{"probe", "transcode", "package", "webhook"} {
		if !strings.Contains(string(metricsText), `kiln_queue_pending_tasks{queue="`+q+`"}`) {
			t.Errorf("/metrics has no pending gauge for queue %s", q)
		}
	}

	// The buckets stay private: the objects are not readable anonymously.
	resp, err = http.Get("http://" + s.S3.Endpoint + "/" + s.Outputs + "/assets/" + up.AssetID + "/hls/master.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("anonymous read of the outputs bucket: status %d, want 403", resp.StatusCode)
	}
}

// TestDirectS3Put: an object put straight into the sources bucket by any S3
// client (no API call) becomes a job through the bucket notification.
func TestDirectS3Put(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "direct.mp4", 3, "320x180")
	objects, err := objstore.New(s.S3)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	key := fmt.Sprintf("direct/%d/clip with spaces.mp4", time.Now().UnixNano())
	info, err := objects.Put(t.Context(), s.Sources, key, f, fi.Size(), "video/mp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	jobID, assetID := jobid.FromObject(s.Sources, key, info.ETag)
	job := s.waitJob(t, jobID, jobTimeout)
	if job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}
	if job.Source.Key != key {
		t.Errorf("job source key = %q, want %q", job.Source.Key, key)
	}
	var asset assetView
	s.do(t, http.MethodGet, "/v1/assets/"+assetID, nil, "", &asset)
	if asset.Playback == nil {
		t.Fatalf("asset has no playback: %+v", asset)
	}
	decode(t, asset.Playback.HLS, "-map", "0")
}

// TestDuplicateEvents: the same object announced many times (API fact, the
// bucket notification, raw redeliveries that bypass JetStream's dedupe)
// yields one job and one probe task.
func TestDuplicateEvents(t *testing.T) {
	s := needStack(t)
	if s.NATSURL == "" || s.RedisAddr == "" {
		t.Fatal("KILN_TEST_NATS_URL and KILN_TEST_REDIS_ADDR are required")
	}
	clip := makeClip(t, "dup.mp4", 2, "320x180")
	code, up, _ := s.upload(t, openFile(t, clip), "video/mp4", "?filename=dup.mp4")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d", code)
	}
	first := s.waitJob(t, up.JobID, jobTimeout)

	nc := testenv.NATSConn(t, bus.UserIngest) // what the upload API publishes, as its user
	landed, _ := proto.Marshal(&kilnv1.ObjectLanded{
		Object: &kilnv1.ObjectRef{Bucket: first.Source.Bucket, Key: first.Source.Key, Etag: etagOf(t, s, first)},
		Origin: "api",
	})
	for range 3 { // core NATS publish: no Nats-Msg-Id, so JetStream stores each copy
		if err := nc.Publish(bus.SubjectObjectLanded, landed); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // let the intake consume them

	var again jobView
	s.do(t, http.MethodGet, "/v1/jobs/"+up.JobID, nil, "", &again)
	if again.State != first.State || !again.CreatedAt.Equal(first.CreatedAt) {
		t.Fatalf("job changed after duplicate events: %+v -> %+v", first, again)
	}
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: s.RedisAddr, Password: s.RedisPassword})
	defer insp.Close()
	n := 0
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		insp.ListPendingTasks, insp.ListActiveTasks, insp.ListCompletedTasks, insp.ListRetryTasks, insp.ListArchivedTasks,
	} {
		infos, err := list(tasks.QueueProbe, asynq.PageSize(1000))
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range infos {
			if j, _, _ := tasks.Head(asynq.NewTask(ti.Type, ti.Payload)); j == up.JobID {
				n++
			}
		}
	}
	if n != 1 {
		t.Fatalf("probe tasks for the job = %d, want 1", n)
	}
}

// TestBadUploads: what the API refuses, and a bad file that fails cleanly.
func TestBadUploads(t *testing.T) {
	s := needStack(t)
	req := func(key string) int {
		r, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.APIURL+"/v1/uploads", strings.NewReader("x"))
		if key != "" {
			r.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := req(""); c != http.StatusUnauthorized {
		t.Errorf("no key: %d", c)
	}
	if c := req("kiln_wrong"); c != http.StatusUnauthorized {
		t.Errorf("wrong key: %d", c)
	}
	if c, _, e := s.upload(t, strings.NewReader(""), "video/mp4", ""); c != http.StatusBadRequest || e.Error.Code != "empty_upload" {
		t.Errorf("empty upload: %d %+v", c, e)
	}
	if c, _, e := s.upload(t, strings.NewReader("x"), "video/mp4", "?preset=nope"); c != http.StatusBadRequest || e.Error.Code != "invalid_preset" {
		t.Errorf("unknown preset: %d %+v", c, e)
	}
	if c := s.do(t, http.MethodGet, "/v1/jobs/not-an-id", nil, "", nil); c != http.StatusBadRequest {
		t.Errorf("malformed job id: %d", c)
	}

	// A text file is accepted (we only know after probing), then fails
	// with a reason and is not retried.
	start := time.Now()
	code, up, _ := s.upload(t, strings.NewReader("this is not a video\n"), "text/plain", "?filename=notes.txt")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d", code)
	}
	job := s.waitJob(t, up.JobID, time.Minute)
	if job.State != "failed" || job.Error == nil || job.Error.Code != "invalid_media" || job.Error.Message == "" {
		t.Fatalf("text upload: %+v %+v", job, job.Error)
	}
	t.Logf("text file failed after %s", time.Since(start).Round(time.Millisecond))
}

func openFile(t *testing.T, path string) io.Reader {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(data)
}

func etagOf(t *testing.T, s stack, j jobView) string {
	t.Helper()
	objects, err := objstore.New(s.S3)
	if err != nil {
		t.Fatal(err)
	}
	info, err := objects.Stat(t.Context(), j.Source.Bucket, j.Source.Key)
	if err != nil {
		t.Fatal(err)
	}
	return info.ETag
}

// fetch GETs url (following redirects) and returns at most limit bytes.
func fetch(t *testing.T, url string, limit int64) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
	return b
}

// countFrames decodes the first video stream at url and counts its frames.
func countFrames(t *testing.T, url string) int {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", url).Output()
	if err != nil {
		t.Fatalf("count frames of %s: %v", url, err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n") // HLS lists the stream per program too
	n, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("count frames of %s: %q", url, out)
	}
	return n
}
