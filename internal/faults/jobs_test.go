package faults

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// job is one upload of a scenario and what it must become.
type job struct {
	file   string // uploaded file name
	id     string
	asset  string
	frames int  // video frames every variant must have (good jobs)
	bad    bool // the bad input: must fail with badCode
}

// badCode is the failure code the bad input must end with.
const badCode = "invalid_media"

// jobView is the part of GET /v1/jobs/{id} the suite reads.
type jobView struct {
	ID      string `json:"id"`
	AssetID string `json:"asset_id"`
	State   string `json:"state"`
	Attempt int    `json:"attempt"`
	Source  struct {
		Bucket string `json:"bucket"`
		Key    string `json:"key"`
		ETag   string `json:"etag"`
		Size   int64  `json:"size"`
	} `json:"source"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	UpdatedAt time.Time `json:"updated_at"`
}

func terminal(state string) bool { return state == "ready" || state == "failed" }

// clipSpec is a clip of the suite: testsrc2 + a tone, 30 fps, H.264 veryfast
// so x264 does some work.
type clipSpec struct {
	seconds       int
	width, height int
}

func (s clipSpec) frames() int { return s.seconds * 30 }

// makeClip generates the clip once per scenario.
func (c *cluster) makeClip(s clipSpec) string {
	c.t.Helper()
	return testenv.Clip(c.t, testenv.ClipSpec{
		Name:    fmt.Sprintf("clip-%ds-%dx%d.mp4", s.seconds, s.width, s.height),
		Seconds: float64(s.seconds), Width: s.width, Height: s.height, Rate: "30",
	})
}

// submit uploads one job per clip (each upload is a new source key, so a
// new job, even for the same file) and, when bad, one file that is not
// media.
func (c *cluster) submit(clips []clipSpec, bad bool) []*job {
	c.t.Helper()
	files := map[clipSpec]string{}
	var jobs []*job
	for i, s := range clips {
		if files[s] == "" {
			files[s] = c.makeClip(s)
		}
		j := &job{file: fmt.Sprintf("good%d-%ds.mp4", i+1, s.seconds), frames: s.frames()}
		c.upload(j, files[s])
		jobs = append(jobs, j)
	}
	if bad {
		path := filepath.Join(c.dir, "bad.mp4")
		junk := bytes.Repeat([]byte("this is not a video, only words. "), 3000)
		if err := os.WriteFile(path, junk, 0o644); err != nil {
			c.t.Fatal(err)
		}
		j := &job{file: "bad.mp4", bad: true}
		c.upload(j, path)
		jobs = append(jobs, j)
	}
	c.t.Logf("submitted %d jobs (%d good, bad input: %v)", len(jobs), len(clips), bad)
	return jobs
}

func (c *cluster) upload(j *job, path string) {
	c.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var up struct {
		JobID   string `json:"job_id"`
		AssetID string `json:"asset_id"`
	}
	if _, err := c.api(c.t.Context(), http.MethodPost, c.ingestURL+"/v1/uploads?filename="+url.QueryEscape(j.file), f, "video/mp4", &up); err != nil {
		c.t.Fatalf("upload %s: %v", j.file, err)
	}
	j.id, j.asset = up.JobID, up.AssetID
}

// getJob reads a job from the catalog; ok is false when the catalog does
// not answer or does not know the job yet.
func (c *cluster) getJob(ctx context.Context, id string) (jobView, bool) {
	var v jobView
	code, err := c.api(ctx, http.MethodGet, c.catalogURL+"/v1/jobs/"+id, nil, "", &v)
	return v, err == nil && code == http.StatusOK
}

// waitTerminal polls the jobs until all are ready or failed, or timeout
// passes; it returns the last view of each job and whether all finished.
func (c *cluster) waitTerminal(jobs []*job, timeout time.Duration) (map[string]jobView, bool) {
	c.t.Helper()
	last := map[string]jobView{}
	deadline := time.Now().Add(timeout)
	for {
		done := 0
		for _, j := range jobs {
			if v, ok := c.getJob(c.t.Context(), j.id); ok {
				last[j.id] = v
			}
			if terminal(last[j.id].State) {
				done++
			}
		}
		if done == len(jobs) {
			return last, true
		}
		if time.Now().After(deadline) || c.t.Context().Err() != nil {
			var pending []string
			for _, j := range jobs {
				if v := last[j.id]; !terminal(v.State) {
					pending = append(pending, fmt.Sprintf("%s (%s): %q", j.id, j.file, v.State))
				}
			}
			c.t.Errorf("after %s, %d of %d jobs are not finished: %s", timeout, len(pending), len(jobs), strings.Join(pending, "; "))
			return last, false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitState waits until some job is in one of states (a scenario's trigger
// for "mid-run").
func (c *cluster) waitState(jobs []*job, timeout time.Duration, states ...string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, j := range jobs {
			if v, ok := c.getJob(c.t.Context(), j.id); ok {
				for _, s := range states {
					if v.State == s {
						c.t.Logf("job %s (%s) is %s", j.id, j.file, s)
						return
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no job reached %v within %s", states, timeout)
}

// ffmpegProc is an ffmpeg or ffprobe process found in /proc.
type ffmpegProc struct {
	pid, ppid int
	args      string
}

// ffmpegs lists the ffmpeg and ffprobe processes that belong to this
// scenario: their command line or working directory is under its folder
// (every output of a worker is in its work dir).
func (c *cluster) ffmpegs() []ffmpegProc {
	entries, _ := os.ReadDir("/proc")
	var out []ffmpegProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if base := filepath.Base(argv[0]); base != "ffmpeg" && base != "ffprobe" {
			continue
		}
		args := strings.Join(argv, " ")
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if !strings.Contains(args, c.dir+"/") && !strings.HasPrefix(cwd+"/", c.dir+"/") {
			continue
		}
		if state(pid) == "Z" {
			continue
		}
		out = append(out, ffmpegProc{pid: pid, ppid: ppid(pid), args: args})
	}
	return out
}

// statFields are the fields of /proc/pid/stat after "pid (comm)".
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

func state(pid int) string {
	if f := statFields(pid); len(f) > 0 {
		return f[0]
	}
	return ""
}

func ppid(pid int) int {
	if f := statFields(pid); len(f) > 1 {
		n, _ := strconv.Atoi(f[1])
		return n
	}
	return 0
}

// waitTranscode waits until a worker runs a transcode (an ffmpeg with
// split) and returns the worker's index and the ffmpeg.
func (c *cluster) waitTranscode(timeout time.Duration) (int, ffmpegProc) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, f := range c.ffmpegs() {
			if !strings.Contains(f.args, "split=") {
				continue
			}
			for i, w := range c.workers {
				if pid := w.Pid(); pid != 0 && f.ppid == pid {
					return i, f
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("no worker ran a transcode within %s", timeout)
	return 0, ffmpegProc{}
}

// waitGone waits until process pid is gone (or a zombie).
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s := state(pid); s == "" || s == "Z" {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
