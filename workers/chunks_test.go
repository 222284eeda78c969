package workers

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/ffmpeg"
	"github.com/kilnvideo/kiln/internal/testenv"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

func chunkPlan(fps float64, gop int32) *kilnv1.Plan {
	return &kilnv1.Plan{FrameRate: fps, GopFrames: gop, SegmentSeconds: 6, Rungs: []*kilnv1.Rung{{Name: "360p", Width: 640, Height: 360, VideoBitRate: 800_000}}}
}

// TestPlanChunks: chunk 0 is the three lead segments, the others whole
// segments of about the configured length, and together they cover the
// header's duration; short, audio-only and unconfigured sources are not
// chunked.
func TestPlanChunks(t *testing.T) {
	cfg := ChunkConfig{Threshold: 30 * time.Second, Length: 12 * time.Second}
	plan := chunkPlan(30, 60)
	PlanChunks(plan, &kilnv1.MediaInfo{DurationSeconds: 40}, cfg)
	c := plan.GetChunking()
	if c.GetCount() != 4 || c.GetLeadFrames() != 180 || c.GetFrames() != 360 {
		t.Fatalf("chunking %v, want 4 chunks: 180 frames, then 360", c)
	}
	var got [][2]int64
	for i := range int(c.GetCount()) {
		s, e := ChunkFrames(c, i)
		got = append(got, [2]int64{s, e})
	}
	if want := [][2]int64{{0, 180}, {180, 540}, {540, 900}, {900, -1}}; !slices.Equal(got, want) {
		t.Errorf("chunk frames %v, want %v", got, want)
	}
	if segs := []int{firstSegment(plan, 0), firstSegment(plan, 1), firstSegment(plan, 2), firstSegment(plan, 3)}; !slices.Equal(segs, []int{0, 3, 5, 7}) {
		t.Errorf("first segments %v, want [0 3 5 7] (3 lead segments, then 2 per chunk)", segs)
	}
	if !strings.Contains(strings.Join(plan.Decisions, " "), "chunked: 4 chunks") {
		t.Errorf("decisions %q", plan.Decisions)
	}
	for name, tc := range map[string]struct {
		plan  *kilnv1.Plan
		media *kilnv1.MediaInfo
		cfg   ChunkConfig
	}{
		"short":      {chunkPlan(30, 60), &kilnv1.MediaInfo{DurationSeconds: 30}, cfg},
		"off":        {chunkPlan(30, 60), &kilnv1.MediaInfo{DurationSeconds: 3600}, ChunkConfig{}},
		"audio only": {&kilnv1.Plan{AudioOnly: true, SegmentSeconds: 6}, &kilnv1.MediaInfo{DurationSeconds: 3600}, cfg},
		"no header":  {chunkPlan(30, 60), &kilnv1.MediaInfo{}, cfg},
	} {
		PlanChunks(tc.plan, tc.media, tc.cfg)
		if tc.plan.Chunking != nil {
			t.Errorf("%s: chunked %v", name, tc.plan.Chunking)
		}
	}
}

// TestChunkShift: a chunk's fragments move by its first frame's time in
// the track's timescale, exactly for NTSC rates too.
func TestChunkShift(t *testing.T) {
	for _, tc := range []struct {
		fps       float64
		gop       int32
		timescale uint32
		chunk     int
		want      uint64
	}{
		{30, 60, 15360, 1, 180 * 512},
		{30000.0 / 1001, 60, 30000, 2, 540 * 1001},
		{25, 50, 12800, 1, 150 * 512},
	} {
		plan := chunkPlan(tc.fps, tc.gop)
		PlanChunks(plan, &kilnv1.MediaInfo{DurationSeconds: 100}, ChunkConfig{Threshold: time.Second, Length: 12 * time.Second})
		got, err := chunkShift(plan, tc.chunk, tc.timescale)
		if err != nil || got != tc.want {
			t.Errorf("%.3f fps, chunk %d: shift %d, %v; want %d", tc.fps, tc.chunk, got, err, tc.want)
		}
	}
	plan := chunkPlan(30000.0/1001, 60)
	PlanChunks(plan, &kilnv1.MediaInfo{DurationSeconds: 100}, ChunkConfig{Threshold: time.Second, Length: 12 * time.Second})
	if _, err := chunkShift(plan, 1, 1); err == nil { // 6.006 s in whole seconds
		t.Error("a shift that is no whole number of ticks: no error")
	}
}

func box(typ string, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	out := binary.BigEndian.AppendUint32(nil, uint32(8+len(b)))
	return append(append(out, typ...), b...)
}

// TestShiftFragments: every traf's tfdt moves, the sidx goes, the rest is
// untouched.
func TestShiftFragments(t *testing.T) {
	tfdt := func(v uint64) []byte { return box("tfdt", []byte{1, 0, 0, 0}, binary.BigEndian.AppendUint64(nil, v)) }
	tfhd := box("tfhd", []byte{0, 0, 0, 0, 0, 0, 0, 1})
	seg := slices.Concat(box("styp", []byte("msdh")), box("sidx", make([]byte, 24)),
		box("moof", box("mfhd", make([]byte, 8)), box("traf", tfhd, tfdt(1000))), box("mdat", []byte("frames")))
	got, err := shiftFragments(slices.Clone(seg), 5000)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(box("styp", []byte("msdh")),
		box("moof", box("mfhd", make([]byte, 8)), box("traf", tfhd, tfdt(6000))), box("mdat", []byte("frames")))
	if !bytes.Equal(got, want) {
		t.Errorf("shifted\n%x\nwant\n%x", got, want)
	}
	if _, err := shiftFragments(box("moof", box("traf", tfhd)), 1); err == nil {
		t.Error("a traf without tfdt: no error")
	}
	if _, err := shiftFragments(seg[:len(seg)-3], 1); err == nil {
		t.Error("a cut segment: no error")
	}
}

// TestChunkArgs: a later chunk seeks before its first frame, keeps the
// source's timestamps and trims by frame number; chunk 0 pads from time 0.
func TestChunkArgs(t *testing.T) {
	plan := chunkPlan(30, 60)
	PlanChunks(plan, &kilnv1.MediaInfo{DurationSeconds: 40}, ChunkConfig{Threshold: time.Second, Length: 12 * time.Second})
	in := Input{URL: "http://s3/src", Seconds: 42}
	a1 := strings.Join(ChunkArgs(in, plan, 1, Outputs{Root: "/w"}, EncodeOptions{X264Preset: "veryfast"}), " ")
	for _, want := range []string{"-copyts -start_at_zero -noaccurate_seek -ss 5.000 -t 42.000 -i http://s3/src",
		"fps=30,trim=start_pts=180:end_pts=540,setpts=PTS-STARTPTS"} {
		if !strings.Contains(a1, want) {
			t.Errorf("chunk 1 args lack %q:\n%s", want, a1)
		}
	}
	a0 := strings.Join(ChunkArgs(in, plan, 0, Outputs{Root: "/w"}, EncodeOptions{X264Preset: "veryfast"}), " ")
	if !strings.Contains(a0, "fps=30:start_time=0,trim=start_pts=0:end_pts=180") || strings.Contains(a0, "-ss") || strings.Contains(a0, "-an -map") && strings.Contains(a0, "0:a") {
		t.Errorf("chunk 0 args:\n%s", a0)
	}
	a3 := strings.Join(ChunkArgs(in, plan, 3, Outputs{Root: "/w"}, EncodeOptions{X264Preset: "veryfast"}), " ")
	if !strings.Contains(a3, "trim=start_pts=900,setpts") {
		t.Errorf("the last chunk runs to the end:\n%s", a3)
	}
}

// TestTrackArgs: the track reads its source at TrackReadRate (an input
// option, so before -i) and the chunks read theirs at full speed.
func TestTrackArgs(t *testing.T) {
	plan := chunkPlan(30, 60)
	plan.HasAudio = true
	PlanChunks(plan, &kilnv1.MediaInfo{DurationSeconds: 40}, ChunkConfig{Threshold: time.Second, Length: 12 * time.Second})
	in := Input{URL: "http://s3/src", Seconds: 42}
	track := strings.Join(TrackArgs(in, plan, Outputs{Root: "/w"}), " ")
	if !strings.Contains(track, "-readrate 30 -i http://s3/src") || !strings.Contains(track, "-vn") {
		t.Errorf("track args:\n%s", track)
	}
	if chunk := strings.Join(ChunkArgs(in, plan, 0, Outputs{Root: "/w"}, EncodeOptions{}), " "); strings.Contains(chunk, "-readrate") {
		t.Errorf("chunk 0 reads at a capped rate:\n%s", chunk)
	}
}

// TestChunkStills: the chunks of a chunked encode take, between them,
// exactly the stills the whole-video run takes — the same thumbnails and
// poster candidates, under the same names, pixel for pixel — and the
// poster chosen from the chunks' statistics is the whole run's.
func TestChunkStills(t *testing.T) {
	testenv.RequireBinaries(t, "ffmpeg", "ffprobe")
	clip := testenv.Clip(t, testenv.ClipSpec{Seconds: 14, Width: 320, Height: 180})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, clip) }))
	t.Cleanup(srv.Close)
	runner := ffmpeg.New(ffmpeg.Config{})
	in := Input{URL: srv.URL + "/clip.mp4", Seconds: 16}
	probe, err := runner.Probe(t.Context(), in.URL, ffmpeg.ProbeOptions{FormatWhitelist: FormatWhitelist, ProtocolWhitelist: ProtocolWhitelist})
	if err != nil {
		t.Fatal(err)
	}
	media := MediaFromProbe(probe)
	plan, err := Plan(media, DefaultPreset())
	if err != nil {
		t.Fatal(err)
	}
	PlanChunks(plan, media, ChunkConfig{Threshold: time.Second, Length: 6 * time.Second})
	if plan.GetChunking().GetCount() != 3 {
		t.Fatalf("chunking %v, want 3 chunks", plan.GetChunking())
	}
	opt := EncodeOptions{X264Preset: "ultrafast", Threads: 1}
	run := func(root string, args func(Outputs) []string, st *Stills) *Stills {
		out := Outputs{Root: root, Stills: st}
		if err := out.Prepare(plan); err != nil {
			t.Fatal(err)
		}
		if err := runner.Run(t.Context(), args(out), nil); err != nil {
			t.Fatal(err)
		}
		return st
	}
	tmp := t.TempDir()
	whole := run(filepath.Join(tmp, "whole"), func(o Outputs) []string { return TranscodeArgs(in, plan, o, opt) },
		NewStills(filepath.Join(tmp, "whole", "stills"), plan, media.GetDurationSeconds()))
	want := stillFiles(t, whole.Dir)
	if len(want) != whole.Grid.Count+len(whole.PosterFrames) {
		t.Fatalf("the whole run wrote %d stills, want %d thumbnails and %d candidates", len(want), whole.Grid.Count, len(whole.PosterFrames))
	}
	got := map[string][]byte{}
	stats := map[int][2]float64{}
	for i := range int(plan.GetChunking().GetCount()) {
		root := filepath.Join(tmp, fmt.Sprint("c", i))
		start, end := ChunkFrames(plan.GetChunking(), i)
		st := run(root, func(o Outputs) []string { return ChunkArgs(in, plan, i, o, opt) },
			NewStills(filepath.Join(root, "stills"), plan, media.GetDurationSeconds()).Window(int(start), int(end)))
		for name, b := range stillFiles(t, st.Dir) {
			if _, dup := got[name]; dup {
				t.Errorf("%s taken by two chunks", name)
			}
			got[name] = b
		}
		first, local := st.window(st.PosterFrames)
		for j := range local {
			mean, dev, err := lumaStats(filepath.Join(st.Dir, PosterFile(first+j)))
			if err != nil {
				t.Fatal(err)
			}
			stats[st.PosterFrames[first+j]] = [2]float64{mean, dev}
		}
	}
	for name, b := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s: no chunk took it", name)
		} else if !bytes.Equal(g, b) {
			t.Errorf("%s differs from the whole run's", name)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the chunks took %d stills, the whole run %d", len(got), len(want))
	}
	wantPoster, _, _ := whole.PickPoster()
	frame, ok := whole.choosePoster(func(n int) (float64, float64, bool) { s, ok := stats[n]; return s[0], s[1], ok })
	if gotPoster := filepath.Join(whole.Dir, PosterFile(slices.Index(whole.PosterFrames, frame))); !ok || gotPoster != wantPoster {
		t.Errorf("poster from the chunks %s (%v), the whole run's %s", gotPoster, ok, wantPoster)
	}
}

// stillFiles reads the JPEGs in dir, by name.
func stillFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}
