// Package ffmpegtest serves sources that fail the way object storage and
// networks fail, so tests can check how real ffmpeg and ffprobe runs are
// classified (ffmpeg.Cause) and what the stages make of them. Only tests
// import it.
package ffmpegtest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A Source is one way of serving (or failing to serve) a source, named by
// the path Sources.URL serves it at.
type Source string

// The sources of Sources.
const (
	// OK serves the clip (with range requests, as S3 does).
	OK Source = "ok"
	// Status503, Status500, Status403, Status401 and Status404 answer
	// that status with an S3-like XML error body.
	Status503 Source = "status/503"
	Status500 Source = "status/500"
	Status403 Source = "status/403"
	Status401 Source = "status/401"
	Status404 Source = "status/404"
	// Cut answers as OK would, but sends nothing past the middle of the
	// clip: it closes the connection there (a storage server that died
	// mid-body).
	Cut Source = "cut"
	// Reset is Cut closing with a TCP reset.
	Reset Source = "reset"
	// Stall accepts the request and never answers.
	Stall Source = "stall"
	// StallMidBody is Cut but stalls (sends nothing more) instead of
	// closing.
	StallMidBody Source = "stall-mid-body"
	// CloseBeforeAnswer closes the connection without answering.
	CloseBeforeAnswer Source = "close-before-answer"
	// StallTwoSeeks never answers the first two requests for a range that
	// does not start at byte 0 (the mov demuxer's seek to a moov atom at
	// the end of the file, which ffmpeg tries twice), and serves every
	// other request as OK: a server that stalled for a while. ffmpeg's
	// read timeout on the seek reads as "moov atom not found".
	StallTwoSeeks Source = "stall-two-seeks"
	// StallAfterFirst answers the first request as OK and never answers
	// another: a server that hung mid-job. For a clip with its moov atom
	// at the end, ffmpeg reads "moov atom not found".
	StallAfterFirst Source = "stall-after-first"
	// Garbage serves random bytes with 200: bad input, served correctly.
	Garbage Source = "garbage"
	// TruncatedMoov serves the first half of the clip as a complete
	// object (Content-Length of the half): for a clip whose moov atom is
	// at the end, an MP4 without moov. Bad input, served correctly.
	TruncatedMoov Source = "truncated-moov"
	// TruncatedOgg and TruncatedFLAC are objects of a few bytes, the start
	// of an Ogg and a FLAC file, served correctly: bad input whose errors
	// ffmpeg words like network ones ("End of file", "Input/output error").
	TruncatedOgg  Source = "truncated.ogg"
	TruncatedFLAC Source = "truncated.flac"
)

// Sources is an HTTP server of Source paths for one clip.
type Sources struct {
	srv          *httptest.Server
	clip         []byte
	done         chan struct{}
	stalledSeeks atomic.Int32 // seeks StallTwoSeeks stalled
	answered     atomic.Bool  // StallAfterFirst answered its request
}

// NewSources serves the clip at path (read whole) until tb ends.
func NewSources(tb testing.TB, path string) *Sources {
	tb.Helper()
	clip, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	s := &Sources{clip: clip, done: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	var once sync.Once
	tb.Cleanup(func() {
		once.Do(func() { close(s.done) }) // releases the stalled handlers first
		s.srv.Close()
	})
	return s
}

// URL is where src is served, with a query string like a presigned URL's.
func (s *Sources) URL(src Source) string {
	return s.srv.URL + "/" + string(src) + "?X-Amz-Signature=secret"
}

// StalledSeeks is how many seeks StallTwoSeeks stalled.
func (s *Sources) StalledSeeks() int { return int(s.stalledSeeks.Load()) }

// HTTPSURL is src's URL in https: a TLS client talking to this plain-HTTP
// server, i.e. a TLS failure.
func (s *Sources) HTTPSURL(src Source) string {
	return strings.Replace(s.URL(src), "http://", "https://", 1)
}

// RefusedURL is a URL on a loopback port nothing listens on.
func RefusedURL(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	return "http://" + addr + "/kiln-sources/clip.mp4?X-Amz-Signature=secret"
}

// BadHostURL is a URL whose host cannot resolve (.invalid, RFC 2606).
const BadHostURL = "http://kiln-no-such-host.invalid/kiln-sources/clip.mp4?X-Amz-Signature=secret"

func (s *Sources) serve(w http.ResponseWriter, r *http.Request) {
	src := Source(strings.TrimPrefix(r.URL.Path, "/"))
	half := len(s.clip) / 2
	switch src {
	case OK:
		http.ServeContent(w, r, "clip.mp4", time.Time{}, bytes.NewReader(s.clip))
	case Status503, Status500, Status403, Status401, Status404:
		var code int
		fmt.Sscanf(string(src), "status/%d", &code)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(code)
		fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code></Error>", http.StatusText(code))
	case Cut, Reset:
		conn := s.sendPart(w, r, half)
		if conn == nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok && src == Reset {
			_ = tc.SetLinger(0) // close with RST
		}
		conn.Close()
	case Stall:
		s.stall(r)
	case StallMidBody:
		if conn := s.sendPart(w, r, half); conn != nil {
			// A hijacked request's context no longer ends with the
			// client: wait for the client to hang up on the conn itself.
			gone := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, conn); close(gone) }()
			select {
			case <-gone:
			case <-s.done:
			}
			conn.Close()
		}
	case CloseBeforeAnswer:
		closeUnanswered(w)
	case StallTwoSeeks:
		if rng := r.Header.Get("Range"); rng != "" && !strings.HasPrefix(rng, "bytes=0-") && s.stalledSeeks.Add(1) <= 2 {
			s.stall(r)
			return
		}
		http.ServeContent(w, r, "clip.mp4", time.Time{}, bytes.NewReader(s.clip))
	case StallAfterFirst:
		if !s.answered.CompareAndSwap(false, true) {
			s.stall(r)
			return
		}
		http.ServeContent(w, r, "clip.mp4", time.Time{}, bytes.NewReader(s.clip))
	case Garbage:
		body := bytes.Repeat([]byte("kiln garbage \x00\x01\x02\xff"), 4096)
		w.Header().Set("Content-Type", "video/mp4")
		http.ServeContent(w, r, "garbage.mp4", time.Time{}, bytes.NewReader(body))
	case TruncatedMoov:
		http.ServeContent(w, r, "clip.mp4", time.Time{}, bytes.NewReader(s.clip[:half]))
	case TruncatedOgg:
		http.ServeContent(w, r, "a.ogg", time.Time{}, strings.NewReader("OggS\x00\x02"))
	case TruncatedFLAC:
		http.ServeContent(w, r, "a.flac", time.Time{}, strings.NewReader("fLaC\x00\x00\x00\x22"))
	default:
		http.NotFound(w, r)
	}
}

// stall answers nothing until the client hangs up or the test ends.
func (s *Sources) stall(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.done:
	}
}

func closeUnanswered(w http.ResponseWriter) {
	if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
		conn.Close()
	}
}

// sendPart answers the request (honouring a "bytes=N-" range, as the mov
// demuxer asks when it seeks) with the headers of the rest of the clip but
// only its bytes before offset cut, on the hijacked connection, which it
// returns (nil on failure).
func (s *Sources) sendPart(w http.ResponseWriter, r *http.Request, cut int) net.Conn {
	start := 0
	if rng := r.Header.Get("Range"); rng != "" {
		if _, err := fmt.Sscanf(rng, "bytes=%d-", &start); err != nil || start < 0 || start >= len(s.clip) {
			start = 0
		}
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil
	}
	status, extra := "200 OK", ""
	if start > 0 {
		status, extra = "206 Partial Content", fmt.Sprintf("Content-Range: bytes %d-%d/%d\r\n", start, len(s.clip)-1, len(s.clip))
	}
	head := fmt.Sprintf("HTTP/1.1 %s\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n%sAccept-Ranges: bytes\r\n\r\n",
		status, len(s.clip)-start, extra)
	if _, err := conn.Write(append([]byte(head), s.clip[start:max(start, cut)]...)); err != nil {
		conn.Close()
		return nil
	}
	return conn
}
