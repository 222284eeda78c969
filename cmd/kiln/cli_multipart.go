package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Multipart uploads from the CLI: a file over --multipart-threshold goes
// straight to S3 as a multipart direct upload (POST /v1/direct-uploads with
// "multipart": true), --parallel parts at a time, and an interrupted upload
// of the same file resumes: its upload id is kept in a state file under
// os.UserCacheDir()/kiln/uploads until the upload completes, and the next
// run sends only the parts the server does not list as stored.

// defaultMultipartThreshold is --multipart-threshold's default.
const defaultMultipartThreshold = 64 << 20

// partTries is how many times one part is sent before the upload gives up.
const partTries = 4

// mpFlags are upload's multipart flags.
type mpFlags struct {
	threshold byteSize
	partSize  byteSize
	parallel  int
}

func multipartFlags(fs *flag.FlagSet) *mpFlags {
	mp := &mpFlags{threshold: byteSize{n: defaultMultipartThreshold}}
	fs.Var(&mp.threshold, "multipart-threshold", "files larger than this are uploaded in parts, straight to storage, and resume when interrupted (bytes, or with KiB, MiB, GiB)")
	fs.Var(&mp.partSize, "part-size", "part size of a multipart upload (at least 5MiB; default: the server's, 16MiB)")
	fs.IntVar(&mp.parallel, "parallel", 4, "parts of a multipart upload sent at once")
	return mp
}

// byteSize is a flag of bytes: "1048576", "64MiB", "1GiB".
type byteSize struct{ n int64 }

func (b *byteSize) String() string {
	if b == nil || b.n == 0 {
		return "0"
	}
	for _, u := range []struct {
		s string
		n int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b.n%u.n == 0 {
			return strconv.FormatInt(b.n/u.n, 10) + u.s
		}
	}
	return strconv.FormatInt(b.n, 10)
}

func (b *byteSize) Set(s string) error {
	mult := int64(1)
	for _, u := range []struct {
		s string
		n int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.s); ok {
			s, mult = v, u.n
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return errors.New("want a number of bytes, optionally with KiB, MiB or GiB")
	}
	b.n = n * mult
	return nil
}

// mpUpload is a multipart upload as the server describes it.
type mpUpload struct {
	UploadID  string `json:"upload_id"`
	Key       string `json:"key"`
	Size      int64  `json:"size"`
	PartSize  int64  `json:"part_size"`
	PartCount int    `json:"part_count"`
}

// mpState is the state file of an upload in progress.
type mpState struct {
	mpUpload
	File    string    `json:"file"`
	APIURL  string    `json:"api_url"`
	Started time.Time `json:"started"`
}

type partURL struct {
	PartNumber int               `json:"part_number"`
	Size       int64             `json:"size"`
	URL        string            `json:"url"`
	Headers    map[string]string `json:"headers"`
}

// stateFile is where the upload of this file (path, size, modification
// time) with these settings to this server is remembered.
func stateFile(c *client, path string, fi os.FileInfo, q url.Values, partSize int64) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "kiln-upload-v1\x00%s\x00%d\x00%d\x00%s\x00%s\x00%d", abs, fi.Size(), fi.ModTime().UnixNano(), c.base, q.Encode(), partSize)
	return filepath.Join(dir, "kiln", "uploads", hex.EncodeToString(h.Sum(nil)[:16])+".json"), nil
}

func loadState(file string) (*mpState, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st mpState
	if err := json.Unmarshal(data, &st); err != nil || st.UploadID == "" {
		return nil, nil // unreadable: start again
	}
	return &st, nil
}

// saveState writes st atomically, readable by the user only (the upload
// id lets whoever holds it complete or abort the upload).
func saveState(file string, st *mpState) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// uploadMultipart uploads f as a multipart direct upload, resuming the one
// its state file names when the server still has it.
func (e *cliEnv) uploadMultipart(ctx context.Context, c *client, f *os.File, fi os.FileInfo, path string, q url.Values, mp *mpFlags) (uploadAnswer, error) {
	file, err := stateFile(c, path, fi, q, mp.partSize.n)
	if err != nil {
		return uploadAnswer{}, withCode(exitGeneric, fmt.Errorf("upload state: %w", err))
	}
	st, err := loadState(file)
	if err != nil {
		return uploadAnswer{}, withCode(exitGeneric, fmt.Errorf("upload state: %w", err))
	}
	stored := map[int]string{} // part number → ETag
	if st != nil {
		stored, err = e.storedParts(ctx, c, st)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || (ae.Status != http.StatusNotFound && ae.Status != http.StatusGone) {
				return uploadAnswer{}, err
			}
			fmt.Fprintf(e.stderr, "the interrupted upload is gone (%s); starting again\n", ae.Code)
			_ = os.Remove(file)
			st, stored = nil, map[int]string{}
		}
	}
	if st == nil {
		up, err := e.startMultipart(ctx, c, fi.Size(), q, mp.partSize.n)
		if err != nil {
			return uploadAnswer{}, err
		}
		st = &mpState{mpUpload: up, File: path, APIURL: c.base, Started: e.now().UTC()}
		if err := saveState(file, st); err != nil {
			return uploadAnswer{}, withCode(exitGeneric, fmt.Errorf("upload state: %w", err))
		}
	} else {
		fmt.Fprintf(e.stderr, "resuming the upload of %s: %d of %d parts stored\n", path, len(stored), st.PartCount)
	}

	bar := newTransferBar(e.stderr, e.tty, e.now, fi.Size())
	for n := range stored {
		bar.resume(partLen(st.mpUpload, n))
	}
	var missing []int
	for n := 1; n <= st.PartCount; n++ {
		if _, ok := stored[n]; !ok {
			missing = append(missing, n)
		}
	}
	sent, err := e.sendParts(ctx, c, f, st, missing, mp.parallel, bar)
	for n, etag := range sent {
		stored[n] = etag
	}
	if err != nil {
		bar.stop()
		if ctx.Err() != nil {
			fmt.Fprintf(e.stderr, "upload interrupted: %d of %d parts stored; run the same command again to resume\n", len(stored), st.PartCount)
		}
		return uploadAnswer{}, err
	}
	up, err := e.completeMultipart(ctx, c, st, stored)
	if err != nil {
		bar.stop()
		return uploadAnswer{}, err
	}
	bar.done()
	if err := os.Remove(file); err != nil {
		fmt.Fprintf(e.stderr, "warning: upload state %s: %v\n", file, err)
	}
	return up, nil
}

// partLen is the size of part n of up.
func partLen(up mpUpload, n int) int64 {
	if n == up.PartCount {
		return up.Size - int64(n-1)*up.PartSize
	}
	return up.PartSize
}

// startMultipart asks for a new multipart upload.
func (e *cliEnv) startMultipart(ctx context.Context, c *client, size int64, q url.Values, partSize int64) (mpUpload, error) {
	body := map[string]any{"filename": q.Get("filename"), "size": size, "multipart": true}
	for _, k := range []string{"preset", "playback_policy", "priority", "webhook_url"} {
		if v := q.Get(k); v != "" {
			body[k] = v
		}
	}
	if partSize > 0 {
		body["part_size"] = partSize
	}
	var up mpUpload
	if err := c.postJSON(ctx, "/v1/direct-uploads", nil, body, &up); err != nil {
		return mpUpload{}, err
	}
	if up.UploadID == "" || up.PartCount < 1 || up.PartSize < 1 || up.Size != size {
		return mpUpload{}, withCode(exitServer, fmt.Errorf("direct upload: unexpected answer %+v", up))
	}
	return up, nil
}

// storedParts lists the parts the server has of st's upload, keeping those
// of the planned size.
func (e *cliEnv) storedParts(ctx context.Context, c *client, st *mpState) (map[int]string, error) {
	var status struct {
		mpUpload
		Parts []struct {
			PartNumber int    `json:"part_number"`
			Size       int64  `json:"size"`
			ETag       string `json:"etag"`
		} `json:"parts"`
	}
	if err := c.getJSON(ctx, "/v1/direct-uploads/"+url.PathEscape(st.UploadID), nil, &status); err != nil {
		return nil, err
	}
	if status.Size != st.Size || status.PartSize != st.PartSize || status.PartCount != st.PartCount {
		return nil, withCode(exitServer, fmt.Errorf("the server describes upload %s differently: %+v", st.Key, status.mpUpload))
	}
	out := map[int]string{}
	for _, p := range status.Parts {
		if p.PartNumber >= 1 && p.PartNumber <= st.PartCount && p.Size == partLen(st.mpUpload, p.PartNumber) {
			out[p.PartNumber] = p.ETag
		}
	}
	return out, nil
}

// sendParts PUTs the missing parts, parallel at a time, and returns the
// ETags of those stored (also when it fails). Part URLs are asked for in
// small batches as they are needed, so none waits long enough to expire;
// a part that fails (network, 5xx, an expired URL) is sent again with a
// fresh URL, up to partTries times.
func (e *cliEnv) sendParts(ctx context.Context, c *client, f *os.File, st *mpState, missing []int, parallel int, bar *transferBar) (map[int]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		etags = map[int]string{}
		first error
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		cancel()
	}
	work := make(chan partURL)
	var wg sync.WaitGroup
	for range min(parallel, len(missing)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				etag, err := e.sendPart(ctx, c, f, st, p, bar)
				if err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				etags[p.PartNumber] = etag
				mu.Unlock()
			}
		}()
	}
	batch := max(2*parallel, 8)
feed:
	for i := 0; i < len(missing); {
		urls, err := c.partURLs(ctx, st.UploadID, missing[i], min(batch, missing[len(missing)-1]-missing[i]+1))
		if err != nil {
			fail(err)
			break
		}
		before := i
		for _, p := range urls {
			if i < len(missing) && p.PartNumber == missing[i] {
				select {
				case work <- p:
				case <-ctx.Done():
					break feed
				}
				i++
			}
		}
		if i == before {
			fail(withCode(exitServer, fmt.Errorf("the server handed out no URL of part %d", missing[i])))
			break
		}
	}
	close(work)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if first == nil && ctx.Err() != nil {
		first = withCode(exitGeneric, ctx.Err())
	}
	return etags, first
}

// partURLs asks for the URLs of count parts from part from.
func (c *client) partURLs(ctx context.Context, id string, from, count int) ([]partURL, error) {
	var batch struct {
		Parts []partURL `json:"parts"`
	}
	q := url.Values{"from": {strconv.Itoa(from)}, "count": {strconv.Itoa(count)}}
	if err := c.postJSON(ctx, "/v1/direct-uploads/"+url.PathEscape(id)+"/parts", q, nil, &batch); err != nil {
		return nil, err
	}
	return batch.Parts, nil
}

// sendPart PUTs one part from the file and returns its ETag.
func (e *cliEnv) sendPart(ctx context.Context, c *client, f *os.File, st *mpState, p partURL, bar *transferBar) (string, error) {
	size := partLen(st.mpUpload, p.PartNumber)
	if p.Size != size {
		return "", withCode(exitServer, fmt.Errorf("part %d: the server plans %d bytes, want %d", p.PartNumber, p.Size, size))
	}
	var last error
	for try := 1; try <= partTries; try++ {
		if try > 1 {
			if err := sleep(ctx, time.Duration(try-1)*time.Second); err != nil {
				return "", withCode(exitGeneric, err)
			}
			urls, err := c.partURLs(ctx, st.UploadID, p.PartNumber, 1) // a fresh URL
			if err != nil {
				return "", err
			}
			if len(urls) != 1 || urls[0].PartNumber != p.PartNumber {
				return "", withCode(exitServer, fmt.Errorf("part %d: no URL handed out", p.PartNumber))
			}
			p = urls[0]
		}
		var read atomic.Int64 // the transport reads the body on its own goroutine
		body := &countingReader{r: io.NewSectionReader(f, int64(p.PartNumber-1)*st.PartSize, size), onRead: func(n int64) {
			read.Add(n)
			bar.add(n)
		}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.URL, body)
		if err != nil {
			return "", withCode(exitServer, fmt.Errorf("part %d: %w", p.PartNumber, err))
		}
		req.ContentLength = size
		for k, v := range p.Headers {
			if !strings.EqualFold(k, "Content-Length") {
				req.Header.Set(k, v)
			}
		}
		resp, err := c.http.Do(req)
		if err == nil {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return strings.Trim(resp.Header.Get("ETag"), `"`), nil
			}
			err = fmt.Errorf("storage answered %s: %s", resp.Status, bytes.TrimSpace(data))
			if resp.StatusCode == http.StatusNotFound { // NoSuchUpload: aborted meanwhile
				bar.add(-read.Load())
				return "", withCode(exitAPI, fmt.Errorf("part %d: %w", p.PartNumber, err))
			}
		}
		bar.add(-read.Load())
		if ctx.Err() != nil {
			return "", withCode(exitGeneric, ctx.Err())
		}
		last = fmt.Errorf("part %d: %w", p.PartNumber, unwrapURLError(err))
	}
	return "", withCode(exitServer, last)
}

// completeMultipart completes the upload with the parts' ETags.
func (e *cliEnv) completeMultipart(ctx context.Context, c *client, st *mpState, etags map[int]string) (uploadAnswer, error) {
	type part struct {
		PartNumber int    `json:"part_number"`
		ETag       string `json:"etag"`
	}
	parts := make([]part, 0, st.PartCount)
	for n := 1; n <= st.PartCount; n++ {
		parts = append(parts, part{PartNumber: n, ETag: etags[n]})
	}
	var up uploadAnswer
	if err := c.postJSON(ctx, "/v1/direct-uploads/"+url.PathEscape(st.UploadID)+"/complete", nil, map[string]any{"parts": parts}, &up); err != nil {
		return uploadAnswer{}, err
	}
	if up.JobID == "" {
		return uploadAnswer{}, withCode(exitServer, errors.New("complete: the answer has no job id"))
	}
	return up, nil
}

// postJSON POSTs body (nil: none) as JSON and decodes the answer into v.
func (c *client) postJSON(ctx context.Context, path string, q url.Values, body, v any) error {
	return c.sendJSON(ctx, http.MethodPost, path, q, body, v)
}
