package fakes

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/kilnvideo/kiln/internal/objstore"
)

// Put is one upload: where it went and the file's content at upload time.
type Put struct {
	Bucket, Key, ContentType string
	Body                     string
}

// Size is the length of the uploaded file.
func (p Put) Size() int { return len(p.Body) }

// Objects is object storage (the Objects of workers and packager): it
// presigns to URL(bucket, key) and records uploads.
type Objects struct {
	// FailPut decides the error of an upload of key; nil: success.
	FailPut func(key string) error
	// PresignErr, when set, is the error of every PresignGet.
	PresignErr error

	mu        sync.Mutex
	presigned []string
	puts      []Put
	removed   []string
}

// URL is the fake presigned URL of an object.
func URL(bucket, key string) string {
	return "https://objects.test/" + bucket + "/" + key + "?X-Amz-Signature=fake"
}

// PresignGet records bucket/key and returns URL(bucket, key), or PresignErr.
func (o *Objects) PresignGet(_ context.Context, bucket, key string, _ time.Duration) (*url.URL, error) {
	o.mu.Lock()
	o.presigned = append(o.presigned, bucket+"/"+key)
	o.mu.Unlock()
	if o.PresignErr != nil {
		return nil, o.PresignErr
	}
	return url.Parse(URL(bucket, key))
}

// PutFile records the upload of the file at path, unless FailPut fails it.
func (o *Objects) PutFile(_ context.Context, bucket, key, path, contentType string) error {
	if o.FailPut != nil {
		if err := o.FailPut(key); err != nil {
			return err
		}
	}
	body, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("fake put %s: %w", key, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.puts = append(o.puts, Put{bucket, key, contentType, string(body)})
	return nil
}

// Remove records the removal of bucket/key (Removed); the uploads stay
// as they were.
func (o *Objects) Remove(_ context.Context, bucket, key string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.removed = append(o.removed, bucket+"/"+key)
	return nil
}

// Removed are the removals so far, bucket/key, in order.
func (o *Objects) Removed() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.removed...)
}

// Puts are the uploads so far, in order.
func (o *Objects) Puts() []Put {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Put(nil), o.puts...)
}

// Put is the first upload of key, if any.
func (o *Objects) Put(key string) (Put, bool) {
	for _, p := range o.Puts() {
		if p.Key == key {
			return p, true
		}
	}
	return Put{}, false
}

// Presigned are the objects presigned so far ("bucket/key"), in order.
func (o *Objects) Presigned() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.presigned...)
}

// Latest is the last upload of key, if any: what a read of it returns.
func (o *Objects) Latest(key string) (Put, bool) {
	puts := o.Puts()
	for i := len(puts) - 1; i >= 0; i-- {
		if puts[i].Key == key {
			return puts[i], true
		}
	}
	return Put{}, false
}

// Get returns the last upload of bucket/key, objstore.ErrNotFound (wrapped)
// when there was none.
func (o *Objects) Get(_ context.Context, bucket, key string, maxBytes int64) ([]byte, error) {
	p, ok := o.Latest(key)
	if !ok || p.Bucket != bucket {
		return nil, fmt.Errorf("fake get %s/%s: %w", bucket, key, objstore.ErrNotFound)
	}
	if int64(len(p.Body)) > maxBytes {
		return nil, fmt.Errorf("fake get %s/%s: %w", bucket, key, objstore.ErrTooLarge)
	}
	return []byte(p.Body), nil
}

// Open reads the last upload of bucket/key, as Get.
func (o *Objects) Open(ctx context.Context, bucket, key string) (io.ReadSeekCloser, objstore.Info, error) {
	body, err := o.Get(ctx, bucket, key, 1<<40)
	if err != nil {
		return nil, objstore.Info{}, err
	}
	return readSeekNopCloser{bytes.NewReader(body)}, objstore.Info{Bucket: bucket, Key: key, Size: int64(len(body))}, nil
}

type readSeekNopCloser struct{ *bytes.Reader }

func (readSeekNopCloser) Close() error { return nil }
