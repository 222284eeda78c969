package workers_test

// The transcode with the real ffmpeg, reading its source over HTTP as it
// reads a presigned URL: segments straight from the encoder, stored while
// it works, the audio once, the stills beside, then READY and the
// download's command.

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kilnvideo/kiln/internal/fakes"
	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/playlist"
	"github.com/kilnvideo/kiln/internal/tasks"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
	"github.com/kilnvideo/kiln/workers"
)

// serveSlowly serves file over HTTP (with ranges) at about rate bytes a
// second, so that an encode of it lasts long enough to be watched.
func serveSlowly(t *testing.T, file string, rate int) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(throttled{w, rate}, r, "clip.mp4", time.Time{}, strings.NewReader(string(data)))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/clip.mp4"
}

type throttled struct {
	http.ResponseWriter
	rate int
}

func (t throttled) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), t.rate/20)]
		m, err := t.ResponseWriter.Write(chunk)
		n += m
		if err != nil {
			return n, err
		}
		t.ResponseWriter.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond)
		p = p[len(chunk):]
	}
	return n, nil
}

// watchedFFmpeg is the real ffmpeg, noting when each run ended.
type watchedFFmpeg struct {
	*ffmpeg.Runner
	mu    sync.Mutex
	ended []time.Time
}

func (w *watchedFFmpeg) Run(ctx context.Context, args []string, progress func(ffmpeg.Progress)) error {
	err := w.Runner.Run(ctx, args, progress)
	w.mu.Lock()
	w.ended = append(w.ended, time.Now())
	w.mu.Unlock()
	return err
}

type encodeHarness struct {
	stageEnv
	objects *fakes.Objects
	events  *fakes.Events
	jobs    *fakes.Jobs
	ff      *watchedFFmpeg
	h       *workers.Handlers
	// at is when each event was published, by event id.
	at map[string]time.Time
	// queuedAtReady is how many tasks were enqueued when READY was published.
	queuedAtReady int
}

func newEncodeHarness(t *testing.T, url string) *encodeHarness {
	t.Helper()
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	x := &encodeHarness{stageEnv: newStageEnv(t), objects: &fakes.Objects{}, jobs: &fakes.Jobs{}, at: map[string]time.Time{},
		ff: &watchedFFmpeg{Runner: ffmpeg.New(ffmpeg.Config{Logger: zaptest.NewLogger(t)})}}
	var mu sync.Mutex
	x.events = &fakes.Events{Fail: func(ev *kilnv1.JobEvent) error {
		mu.Lock()
		defer mu.Unlock()
		x.at[ev.GetEventId()] = time.Now()
		if ev.GetState() == kilnv1.JobState_JOB_STATE_READY {
			x.queuedAtReady = len(x.queue.Enqueued())
		}
		return nil
	}}
	x.h = workers.New(workers.Config{
		FFmpeg: x.ff, Objects: presignTo{x.objects, url}, Events: x.events, Queue: x.queue, Jobs: x.jobs,
		OutputsBucket: outputsBucket, WorkDir: x.workDir, Threads: 1, X264Preset: "ultrafast", HTTPClient: healthyStorage,
	})
	return x
}

// TestTranscodeStreamsSegments: a 14 s source read slowly. Every rendition
// — two rungs and the audio, once — is stored segment by segment while
// ffmpeg works, each segment before the playlist that names it, the
// playlists growing as EVENT playlists and ending as VOD; the playable
// event comes before ffmpeg is done; then the stills, the download's
// command and READY with measured bit rates.
func TestTranscodeStreamsSegments(t *testing.T) {
	clip := testenv.Clip(t, testenv.ClipSpec{Seconds: 14, Width: 640, Height: 360, Audio: []string{"-c:a", "aac"}})
	fi, err := os.Stat(clip)
	if err != nil {
		t.Fatal(err)
	}
	x := newEncodeHarness(t, serveSlowly(t, clip, int(fi.Size()/3))) // about 3 s
	if err := x.h.Transcode(t.Context(), transcodeTaskLasting(t, videoPlan(), 14)); err != nil {
		t.Fatal(err)
	}
	if len(x.ff.ended) != 1 {
		t.Fatalf("%d ffmpeg runs, want 1 (one decode for every output)", len(x.ff.ended))
	}
	ids := x.events.IDs()
	if !slices.Equal([]string{ids[0], ids[len(ids)-2], ids[len(ids)-1]}, []string{eventID("transcoding"), eventID("playable"), eventID("ready")}) &&
		!slices.Contains(ids, eventID("playable")) {
		t.Fatalf("events %q, want transcoding, …, playable, …, ready", ids)
	}
	if !x.at[eventID("playable")].Before(x.ff.ended[0]) {
		t.Errorf("playable at %v, ffmpeg ended at %v: not announced while encoding", x.at[eventID("playable")], x.ff.ended[0])
	}

	// Segments before the playlists that name them; playlists only grow.
	stored := map[string]bool{}
	lastCount := map[string]int{}
	for _, p := range x.objects.Puts() {
		if !strings.HasSuffix(p.Key, "/"+layout.PlaylistFile) {
			stored[p.Key] = true
			continue
		}
		name := strings.Split(p.Key, "/")[3]
		segs, err := playlist.ParseSegments([]byte(p.Body))
		if err != nil {
			t.Fatalf("%s: %v", p.Key, err)
		}
		if len(segs) < lastCount[name] {
			t.Errorf("%s shrank from %d to %d segments", p.Key, lastCount[name], len(segs))
		}
		lastCount[name] = len(segs)
		for _, f := range append([]string{layout.InitFile}, uris(segs)...) {
			if !stored[layout.SegmentKey(assetID, name, f)] {
				t.Errorf("%s names %s before it was stored", p.Key, f)
			}
		}
	}
	for _, name := range []string{"360p", "240p", "audio"} {
		var bodies []string
		for _, p := range x.objects.Puts() {
			if p.Key == layout.PlaylistKey(assetID, name) {
				bodies = append(bodies, p.Body)
			}
		}
		if len(bodies) < 2 || !strings.Contains(bodies[0], "#EXT-X-PLAYLIST-TYPE:EVENT") || strings.Contains(bodies[0], "#EXT-X-ENDLIST") {
			t.Errorf("%s: %d playlists stored, the first %q: want an EVENT playlist first", name, len(bodies), bodies)
		}
		last := bodies[len(bodies)-1]
		if !strings.Contains(last, "#EXT-X-PLAYLIST-TYPE:VOD") || !strings.HasSuffix(last, "#EXT-X-ENDLIST\n") || !strings.Contains(last, "#EXT-X-TARGETDURATION:6\n") {
			t.Errorf("%s: final playlist %q, want VOD with ENDLIST and target 6", name, last)
		}
		// Three one-GOP segments first, then the plan's 6 s: 2+2+2+6+2 s.
		if final, _ := playlist.ParseSegments([]byte(last)); len(final) != 5 || final[0].Duration > 2.1 || final[2].Duration > 2.1 || final[3].Duration < 5.9 {
			t.Errorf("%s: segments %v, want 2, 2, 2, 6 and 2 s", name, final)
		}
		// A segment, once listed, keeps its duration.
		first, _ := playlist.ParseSegments([]byte(bodies[0]))
		final, _ := playlist.ParseSegments([]byte(last))
		if len(first) == 0 || first[0] != final[0] {
			t.Errorf("%s: first segment %v then %v", name, first, final)
		}
	}

	// The stored segments, joined GOPs included, decode to every frame.
	for _, name := range []string{"360p", "240p"} {
		if n := ffprobeFloat(t, rungFile(t, x.objects, name), "-count_frames", "-select_streams", "v", "-show_entries", "stream=nb_read_frames"); n != 14*30 {
			t.Errorf("%s: %v frames, want %d", name, n, 14*30)
		}
	}

	evs := x.events.Events()
	playable, ready := evs[slices.Index(ids, eventID("playable"))], evs[len(evs)-1]
	if !playable.GetPlayable() || playable.GetState() != kilnv1.JobState_JOB_STATE_TRANSCODING {
		t.Errorf("playable event %v", playable)
	}
	for _, ev := range []*kilnv1.JobEvent{playable, ready} {
		var names []string
		for _, r := range ev.GetOutputs().GetRenditions() {
			names = append(names, r.GetName()+":"+r.GetCodecs())
			if r.GetPlaylistKey() != layout.PlaylistKey(assetID, r.GetName()) || r.GetBandwidth() <= 0 || r.GetAverageBandwidth() <= 0 {
				t.Errorf("%s rendition %v", ev.GetEventId(), r)
			}
		}
		if got := strings.Join(names, " "); !regexp.MustCompile(`^360p:avc1\.[0-9a-f]{6} 240p:avc1\.[0-9a-f]{6} audio:mp4a\.40\.2$`).MatchString(got) {
			t.Errorf("%s renditions %s", ev.GetEventId(), got)
		}
	}
	out := ready.GetOutputs()
	if out.GetPosterKey() != layout.PosterKey(assetID) || len(out.GetThumbnails().GetKeys()) != 14 || out.GetThumbnails().GetStoryboardKey() == "" || out.GetMp4Key() != "" {
		t.Errorf("ready outputs %v: want the poster, 14 thumbnails, a storyboard and no MP4 yet", out)
	}
	if d := ready.GetMedia().GetDecodedDurationSeconds(); d < 13.9 || d > 14.1 {
		t.Errorf("decoded %v s, want 14", d)
	}
	// The download's command before the READY fact.
	e := x.only(t)
	checkStage(t, e, tasks.TypePackage, tasks.QueuePackage, tasks.PackageTimeout)
	if next := decode(t, e.Task, &kilnv1.PackageTask{}); !next.GetDownload() || next.GetPlan().GetRungs()[0].GetName() != "360p" {
		t.Errorf("package task %v, want the download", next)
	}
	if x.queuedAtReady != 1 {
		t.Errorf("%d tasks enqueued when READY was published, want the download's", x.queuedAtReady)
	}
	x.checkClean(t)
}

// TestTranscodeAudioOnly: an audio-only source is one rendition, the
// audio, and has no stills.
func TestTranscodeAudioOnly(t *testing.T) {
	clip := testenv.Clip(t, testenv.ClipSpec{Name: "a.m4a", Seconds: 3, NoVideo: true, Audio: []string{"-c:a", "aac"}})
	x := newEncodeHarness(t, serve(t, clip))
	if err := x.h.Transcode(t.Context(), transcodeTaskLasting(t, audioPlan(), 3)); err != nil {
		t.Fatal(err)
	}
	evs := x.events.Events()
	ready := evs[len(evs)-1]
	if r := ready.GetOutputs().GetRenditions(); len(r) != 1 || r[0].GetName() != "audio" || r[0].GetCodecs() != "mp4a.40.2" || ready.GetOutputs().GetPosterKey() != "" {
		t.Errorf("ready outputs %v", ready.GetOutputs())
	}
	if !slices.Contains(x.events.IDs(), eventID("playable")) {
		t.Errorf("events %q: no playable", x.events.IDs())
	}
	x.checkClean(t)
}

// TestTranscodeStorageFailures: a segment or playlist that cannot be
// stored, or a download command that cannot be enqueued, fails the run to
// be retried, and READY is never published.
func TestTranscodeStorageFailures(t *testing.T) {
	clip := testenv.Clip(t, testenv.ClipSpec{Seconds: 3, Width: 320, Height: 180, Audio: []string{"-c:a", "aac"}})
	s3Err, queueErr := errors.New("s3: slow down"), errors.New("redis: connection refused")
	for _, tt := range []struct {
		name  string
		setup func(*encodeHarness)
		cause error
	}{
		{"a segment of the second rung", func(x *encodeHarness) { x.objects.FailPut = failKey("/240p/seg_", s3Err) }, s3Err},
		{"the audio's playlist", func(x *encodeHarness) { x.objects.FailPut = failKey("/audio/index.m3u8", s3Err) }, s3Err},
		{"the poster", func(x *encodeHarness) { x.objects.FailPut = failKey("poster", s3Err) }, s3Err},
		{"the download's enqueue", func(x *encodeHarness) { x.queue.Err = queueErr }, queueErr},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x := newEncodeHarness(t, serve(t, clip))
			tt.setup(x)
			fakes.WantRetryable(t, x.h.Transcode(t.Context(), transcodeTaskLasting(t, videoPlan(), 3)), tt.cause)
			if slices.Contains(x.events.IDs(), eventID("ready")) {
				t.Error("READY published")
			}
			x.checkClean(t)
		})
	}
}

// TestTranscodeCanceledMeanwhile: a job canceled while it encodes hands
// nothing over and publishes no READY.
func TestTranscodeCanceledMeanwhile(t *testing.T) {
	clip := testenv.Clip(t, testenv.ClipSpec{Seconds: 2, Width: 320, Height: 180, Audio: []string{"-c:a", "aac"}})
	x := newEncodeHarness(t, serve(t, clip))
	x.jobs.Cancel()
	fakes.WantCanceled(t, x.h.Transcode(t.Context(), transcodeTaskLasting(t, videoPlan(), 2)))
	if got := x.queue.Enqueued(); len(got) > 0 || slices.Contains(x.events.IDs(), eventID("ready")) {
		t.Errorf("enqueued %d, events %q", len(got), x.events.IDs())
	}
	x.checkClean(t)
}
