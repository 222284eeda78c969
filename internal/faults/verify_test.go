package faults

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnvideo/kiln/internal/layout"
)

// result is what a scenario measured.
type result struct {
	name       string
	jobs       int
	lost       int // jobs not ending as they must (stuck, missing, wrong state)
	duplicated int // extra jobs for one source, stray or rewritten output objects
	orphaned   int // asset prefixes of no job the API lists
	recover    time.Duration
	recovered  bool // every job finished within the bound
	problems   []string
}

// problem records a failed assertion: in the result (for the table) and as
// a test error.
func (c *cluster) problem(r *result, format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	r.problems = append(r.problems, msg)
	c.t.Error(msg)
}

// listJobs returns every job the catalog lists (all pages).
func (c *cluster) listJobs() ([]jobView, error) {
	var all []jobView
	cursor := ""
	for range 100 {
		var page struct {
			Jobs       []jobView `json:"jobs"`
			NextCursor *string   `json:"next_cursor"`
		}
		u := c.catalogURL + "/v1/jobs?limit=100"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		if _, err := c.api(c.t.Context(), http.MethodGet, u, nil, "", &page); err != nil {
			return nil, err
		}
		all = append(all, page.Jobs...)
		if page.NextCursor == nil || *page.NextCursor == "" {
			return all, nil
		}
		cursor = *page.NextCursor
	}
	return nil, fmt.Errorf("more than 100 pages of jobs")
}

// assetView is the part of GET /v1/assets/{id} the suite reads.
type assetView struct {
	State      string `json:"state"`
	Renditions []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"renditions"`
	Playback *struct {
		HLS string `json:"hls"`
	} `json:"playback"`
}

// verify checks everything a scenario promises once its jobs finished:
// each job's end state, playback of every variant with the right frame
// count, one set of output objects per rendition, no orphaned asset prefix
// and no ffmpeg left behind.
func (c *cluster) verify(r *result, jobs []*job, last map[string]jobView) {
	c.t.Helper()
	r.jobs = len(jobs)
	listed, err := c.listJobs()
	if err != nil {
		c.problem(r, "list jobs: %v", err)
		r.lost = len(jobs)
		return
	}
	byID := map[string]jobView{}
	perSource := map[string]int{}
	assets := map[string]bool{}
	for _, v := range listed {
		byID[v.ID] = v
		perSource[v.Source.Bucket+"/"+v.Source.Key]++
		assets[v.AssetID] = true
	}
	for src, n := range perSource {
		if n > 1 {
			r.duplicated += n - 1
			c.problem(r, "source %s has %d jobs", src, n)
		}
	}

	for _, j := range jobs {
		v, ok := byID[j.id]
		if !ok {
			r.lost++
			c.problem(r, "job %s (%s) is not listed by the catalog (last seen %q)", j.id, j.file, last[j.id].State)
			continue
		}
		switch {
		case j.bad:
			if v.State != "failed" || v.Error == nil || v.Error.Code != badCode {
				r.lost++
				c.problem(r, "bad input %s: state %q, error %+v; want failed with %s", j.id, v.State, v.Error, badCode)
			}
		case v.State != "ready":
			r.lost++
			msg := ""
			if v.Error != nil {
				msg = v.Error.Code + ": " + v.Error.Message
			}
			c.problem(r, "job %s (%s) ended %q (attempt %d) %s", j.id, j.file, v.State, v.Attempt, firstLine(msg, 300))
		default:
			if !c.plays(r, j) {
				r.lost++
			}
		}
	}

	// Outputs: every asset prefix belongs to a listed job; every good
	// asset has exactly its renditions' objects.
	objs, err := c.objects.List(c.t.Context(), outputsBucket, "assets/")
	if err != nil {
		c.problem(r, "list outputs: %v", err)
		return
	}
	byAsset := map[string][]string{}
	for _, o := range objs {
		id, _, _ := strings.Cut(strings.TrimPrefix(o.Key, "assets/"), "/")
		byAsset[id] = append(byAsset[id], o.Key)
	}
	for id, keys := range byAsset {
		if !assets[id] {
			r.orphaned++
			c.problem(r, "orphaned outputs: assets/%s/ (%d objects) belongs to no listed job", id, len(keys))
		}
	}
	for _, j := range jobs {
		if !j.bad && byID[j.id].State == "ready" {
			c.checkOutputs(r, j, byAsset[j.asset])
		}
	}
	c.checkNoFFmpeg(r)
}

// plays fetches the master playlist through the catalog's playback URL and
// decodes every variant: no decode error, j.frames video frames each.
func (c *cluster) plays(r *result, j *job) bool {
	c.t.Helper()
	var a assetView
	if _, err := c.api(c.t.Context(), http.MethodGet, c.catalogURL+"/v1/assets/"+j.asset, nil, "", &a); err != nil {
		c.problem(r, "asset %s: %v", j.asset, err)
		return false
	}
	if a.Playback == nil || a.Playback.HLS == "" {
		c.problem(r, "asset %s (%s) has no HLS playback URL", j.asset, j.file)
		return false
	}
	master, err := httpGet(c.t.Context(), a.Playback.HLS)
	if err != nil {
		c.problem(r, "asset %s master playlist: %v", j.asset, err)
		return false
	}
	variants, err := variantURLs(a.Playback.HLS, master)
	if err != nil || len(variants) == 0 {
		c.problem(r, "asset %s master playlist has no variants (%v):\n%s", j.asset, err, master)
		return false
	}
	// The audio rendition is a group the video variants refer to, not a
	// variant of its own (unless the asset is audio only).
	wantVariants := 0
	for _, rd := range a.Renditions {
		if rd.Name != layout.AudioRendition {
			wantVariants++
		}
	}
	if wantVariants == 0 {
		wantVariants = len(a.Renditions)
	}
	if len(variants) != wantVariants {
		c.problem(r, "asset %s: %d variants in the master playlist, %d renditions %v", j.asset, len(variants), len(a.Renditions), a.Renditions)
		return false
	}
	ok := true
	for _, v := range variants {
		frames, stderr, err := countFrames(c.t.Context(), v)
		switch {
		case err != nil:
			c.problem(r, "asset %s: ffprobe %s: %v\n%s", j.asset, v, err, stderr)
			ok = false
		case stderr != "":
			c.problem(r, "asset %s: decoding %s reported errors:\n%s", j.asset, v, firstLine(stderr, 500))
			ok = false
		case frames != j.frames:
			c.problem(r, "asset %s: variant %s has %d video frames, want %d", j.asset, v, frames, j.frames)
			ok = false
		}
	}
	return ok
}

// variantURLs returns the absolute URLs of the variant streams of a master
// playlist; a variant listed twice is an error.
func variantURLs(base string, master []byte) ([]string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(master))
	next := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "#EXT-X-STREAM-INF"):
			next = true
		case next && line != "" && !strings.HasPrefix(line, "#"):
			u, err := b.Parse(line)
			if err != nil {
				return nil, err
			}
			if slices.Contains(out, u.String()) {
				return nil, fmt.Errorf("variant %s listed twice", u)
			}
			out = append(out, u.String())
			next = false
		}
	}
	return out, sc.Err()
}

// countFrames decodes every video frame of url with ffprobe and returns
// their number and what ffprobe reported at level error.
func countFrames(ctx context.Context, u string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
		"-show_entries", "stream=nb_read_frames", "-of", "default=noprint_wrappers=1:nokey=1", u)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return 0, stderr.String(), err
	}
	// An HLS input lists its stream under its program too: one count a line,
	// all the same.
	n := -1
	for _, line := range strings.Fields(stdout.String()) {
		m, err := strconv.Atoi(line)
		if err != nil || (n >= 0 && m != n) {
			return 0, stderr.String(), fmt.Errorf("no single video frame count in %q", stdout.String())
		}
		n = m
	}
	if n < 0 {
		return 0, stderr.String(), fmt.Errorf("no video frame count in %q", stdout.String())
	}
	return n, strings.TrimSpace(stderr.String()), nil
}

// checkOutputs compares an asset's output objects with the set its
// renditions make: per rendition the encoded MP4, the media playlist, and
// the init and media segments that playlist lists; thumbnails apart.
// Anything else (a second copy, a segment no playlist lists, a rendition
// the asset does not have) counts as duplicated.
func (c *cluster) checkOutputs(r *result, j *job, keys []string) {
	c.t.Helper()
	var a assetView
	if _, err := c.api(c.t.Context(), http.MethodGet, c.catalogURL+"/v1/assets/"+j.asset, nil, "", &a); err != nil {
		c.problem(r, "asset %s: %v", j.asset, err)
		return
	}
	want := map[string]bool{}
	download := map[string]bool{} // the MP4 download's possible keys: built after READY, so maybe not yet
	names := map[string]bool{}
	for _, rd := range a.Renditions {
		if names[rd.Name] {
			r.duplicated++
			c.problem(r, "asset %s lists rendition %s twice", j.asset, rd.Name)
		}
		names[rd.Name] = true
		download[layout.EncodedKey(j.asset, rd.Name)] = true
		pk := layout.PlaylistKey(j.asset, rd.Name)
		want[pk] = true
		data, err := c.objects.Get(c.t.Context(), outputsBucket, pk, 1<<20)
		if err != nil {
			c.problem(r, "asset %s rendition %s: media playlist: %v", j.asset, rd.Name, err)
			continue
		}
		files, err := playlistFiles(data)
		if err != nil {
			c.problem(r, "asset %s rendition %s: %v", j.asset, rd.Name, err)
		}
		for _, f := range files {
			want[layout.SegmentKey(j.asset, rd.Name, f)] = true
		}
	}
	have := map[string]bool{}
	downloads := 0
	for _, k := range keys {
		have[k] = true
		if download[k] {
			downloads++
		}
		if want[k] || download[k] || strings.HasPrefix(k, layout.ThumbnailDir(j.asset)+"/") {
			continue
		}
		r.duplicated++
		c.problem(r, "asset %s: stray output %s (not one of its renditions' objects)", j.asset, k)
	}
	for k := range want {
		if !have[k] {
			c.problem(r, "asset %s: missing output %s", j.asset, k)
		}
	}
	if downloads > 1 {
		r.duplicated++
		c.problem(r, "asset %s: %d MP4 downloads, want one", j.asset, downloads)
	}
}

// playlistFiles returns the init segment and media segments a media
// playlist names (relative file names); a file named twice is an error.
func playlistFiles(data []byte) ([]string, error) {
	var out []string
	add := func(f string) error {
		f = path.Base(strings.SplitN(f, "?", 2)[0])
		if slices.Contains(out, f) {
			return fmt.Errorf("media playlist names %s twice", f)
		}
		out = append(out, f)
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "#EXT-X-MAP:"); ok {
			if _, v, ok := strings.Cut(rest, `URI="`); ok {
				if err := add(strings.SplitN(v, `"`, 2)[0]); err != nil {
					return out, err
				}
			}
			continue
		}
		if line != "" && !strings.HasPrefix(line, "#") {
			if err := add(line); err != nil {
				return out, err
			}
		}
	}
	return out, sc.Err()
}

// checkNoFFmpeg fails when an ffmpeg or ffprobe of the scenario's workers
// still runs once every job finished (a few seconds of grace).
func (c *cluster) checkNoFFmpeg(r *result) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := c.ffmpegs()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, f := range left {
				c.problem(r, "ffmpeg left behind: pid %d (parent %d): %s", f.pid, f.ppid, firstLine(f.args, 300))
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func httpGet(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(data))
	}
	return data, nil
}

// firstLine shortens s for a message: its first line, at most n bytes.
func firstLine(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
