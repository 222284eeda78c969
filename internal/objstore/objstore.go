// Package objstore is kiln's thin wrapper over an S3-compatible object store
// (minio-go). It owns the few operations kiln needs — streamed puts, bounded
// reads, presigned URLs, bucket setup — so the rest of kiln depends on small
// consumer-owned interfaces instead of the SDK.
package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/cors"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/notification"
)

// ErrNotFound is returned (wrapped) when an object does not exist.
var ErrNotFound = errors.New("object not found")

// ErrChanged is returned (wrapped) by PutIfMatch when the stored object is
// no longer the one its ETag named.
var ErrChanged = errors.New("the stored object changed")

// ErrTooLarge is returned (wrapped) when an object exceeds a read bound.
var ErrTooLarge = errors.New("object too large")

// DefaultPartSize bounds memory used by a streamed upload of unknown size:
// minio-go buffers one part at a time. 16 MiB parts allow objects up to
// ~156 GiB (10,000 parts).
const DefaultPartSize = 16 << 20

// MinPartSize is S3's smallest part (every part but the last).
const MinPartSize = 5 << 20

// maxParts is S3's most parts per multipart upload.
const maxParts = 10_000

// PartSizeFor is the smallest part size, in whole MiB and at least
// MinPartSize, with which an object of maxBytes fits S3's 10,000 parts: a
// streamed upload holds one part in memory, so the smaller the better
// (5 MiB up to 48 GiB).
func PartSizeFor(maxBytes int64) uint64 {
	need := (max(maxBytes, 0) + maxParts - 1) / maxParts
	mib := (need + 1<<20 - 1) >> 20
	return max(uint64(mib)<<20, MinPartSize)
}

// Config locates the object store.
type Config struct {
	// Endpoint is host:port of the S3 API, e.g. "127.0.0.1:9700".
	Endpoint  string
	AccessKey string
	SecretKey string
	// Secure selects https.
	Secure bool
	// Region defaults to DefaultRegion.
	Region string
	// PartSize for streamed uploads; default DefaultPartSize.
	PartSize uint64
}

// Client talks to one S3-compatible endpoint.
type Client struct {
	mc       *minio.Client
	region   string
	partSize uint64
}

// Info describes a stored object.
type Info struct {
	Bucket      string
	Key         string
	ETag        string
	Size        int64
	ContentType string
	Metadata    map[string]string
	// LastModified is set by Stat, Open and List.
	LastModified time.Time
}

// DefaultRegion is Config.Region's default.
const DefaultRegion = "us-east-1"

// New returns a client; it does not contact the server.
func New(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("objstore: endpoint is required")
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	mc, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.Secure,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	return &Client{mc: mc, region: cfg.Region, partSize: cfg.PartSize}, nil
}

// EnsureBuckets creates the buckets that do not exist yet.
func (c *Client) EnsureBuckets(ctx context.Context, buckets ...string) error {
	for _, b := range buckets {
		ok, err := c.mc.BucketExists(ctx, b)
		if err != nil {
			return fmt.Errorf("objstore: bucket %q: %w", b, err)
		}
		if ok {
			continue
		}
		if err := c.mc.MakeBucket(ctx, b, minio.MakeBucketOptions{Region: c.region}); err != nil {
			if resp := minio.ToErrorResponse(err); resp.Code == "BucketAlreadyOwnedByYou" {
				continue
			}
			return fmt.Errorf("objstore: create bucket %q: %w", b, err)
		}
	}
	return nil
}

// What EnsurePlaybackCORS found and did.
const (
	// CORSSet: the bucket had no CORS configuration; it has PlaybackCORS now.
	CORSSet = "set"
	// CORSKept: the bucket has a CORS configuration of its own, left alone.
	CORSKept = "kept"
	// CORSUnsupported: the server has no bucket CORS API (MinIO: it answers
	// CORS for every bucket itself, from its api cors_allow_origin
	// setting, MINIO_API_CORS_ALLOW_ORIGIN, by default any origin).
	CORSUnsupported = "unsupported"
)

// PlaybackCORS is the CORS rule browsers need to play objects of a bucket
// from another origin: GET and HEAD from any origin, with Range, and the
// headers a player reads exposed.
func PlaybackCORS() cors.Rule {
	return cors.Rule{
		AllowedOrigin: []string{"*"},
		AllowedMethod: []string{http.MethodGet, http.MethodHead},
		AllowedHeader: []string{"Range", "If-Range", "If-None-Match", "If-Modified-Since"},
		ExposeHeader:  []string{"Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Content-Type"},
		MaxAgeSeconds: 86400,
	}
}

// EnsurePlaybackCORS gives bucket the PlaybackCORS rule when it has no CORS
// configuration (one set by its operator is kept), and reports which of
// CORSSet, CORSKept and CORSUnsupported applied.
func (c *Client) EnsurePlaybackCORS(ctx context.Context, bucket string) (string, error) {
	have, err := c.mc.GetBucketCors(ctx, bucket)
	switch {
	case notImplemented(err):
		return CORSUnsupported, nil
	case err != nil:
		return "", fmt.Errorf("objstore: get CORS of %q: %w", bucket, err)
	case have != nil && len(have.CORSRules) > 0:
		return CORSKept, nil
	}
	err = c.mc.SetBucketCors(ctx, bucket, cors.NewConfig([]cors.Rule{PlaybackCORS()}))
	switch {
	case notImplemented(err):
		return CORSUnsupported, nil
	case err != nil:
		return "", fmt.Errorf("objstore: set CORS of %q: %w", bucket, err)
	}
	return CORSSet, nil
}

func notImplemented(err error) bool {
	return err != nil && minio.ToErrorResponse(err).Code == "NotImplemented"
}

// NotifyObjectCreated makes the bucket publish every object-created event to
// the notification target arn (for MinIO's NATS target:
// "arn:minio:sqs::<ID>:nats"). It replaces the bucket's notification config.
func (c *Client) NotifyObjectCreated(ctx context.Context, bucket, arn string) error {
	a, err := notification.NewArnFromString(arn)
	if err != nil {
		return fmt.Errorf("objstore: notification arn %q: %w", arn, err)
	}
	qc := notification.NewConfig(a)
	qc.AddEvents(notification.ObjectCreatedAll)
	var cfg notification.Configuration
	cfg.AddQueue(qc)
	if err := c.mc.SetBucketNotification(ctx, bucket, cfg); err != nil {
		return fmt.Errorf("objstore: set notification on %q: %w", bucket, err)
	}
	return nil
}

// Put streams r into bucket/key. size may be -1 when unknown; memory stays
// bounded by the part size either way.
func (c *Client) Put(ctx context.Context, bucket, key string, r io.Reader, size int64, contentType string, meta map[string]string) (Info, error) {
	up, err := c.mc.PutObject(ctx, bucket, key, r, size, minio.PutObjectOptions{
		ContentType:  contentType,
		UserMetadata: meta,
		PartSize:     c.partSize,
	})
	if err != nil {
		return Info{}, fmt.Errorf("objstore: put %s/%s: %w", bucket, key, err)
	}
	return Info{Bucket: bucket, Key: key, ETag: up.ETag, Size: up.Size, ContentType: contentType}, nil
}

// PutFile uploads a local file.
func (c *Client) PutFile(ctx context.Context, bucket, key, path, contentType string) error {
	_, err := c.mc.FPutObject(ctx, bucket, key, path, minio.PutObjectOptions{ContentType: contentType, PartSize: c.partSize})
	if err != nil {
		return fmt.Errorf("objstore: put file %s/%s: %w", bucket, key, err)
	}
	return nil
}

// Stat returns an object's metadata.
func (c *Client) Stat(ctx context.Context, bucket, key string) (Info, error) {
	oi, err := c.mc.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, fmt.Errorf("objstore: stat %s/%s: %w", bucket, key, wrapNotFound(err))
	}
	return infoOf(bucket, key, oi), nil
}

func infoOf(bucket, key string, oi minio.ObjectInfo) Info {
	return Info{Bucket: bucket, Key: key, ETag: oi.ETag, Size: oi.Size, ContentType: oi.ContentType,
		Metadata: oi.UserMetadata, LastModified: oi.LastModified}
}

// Open returns a reader of the whole object that can seek, for streaming it
// (e.g. with http.ServeContent: each seek then read is one ranged GET), and
// its metadata. The object is stat'ed first, so a missing object fails here
// with ErrNotFound rather than on the first read. The reader is bound to ctx;
// the caller closes it.
func (c *Client) Open(ctx context.Context, bucket, key string) (io.ReadSeekCloser, Info, error) {
	obj, err := c.mc.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, fmt.Errorf("objstore: open %s/%s: %w", bucket, key, wrapNotFound(err))
	}
	oi, err := obj.Stat()
	if err != nil {
		_ = obj.Close()
		return nil, Info{}, fmt.Errorf("objstore: open %s/%s: %w", bucket, key, wrapNotFound(err))
	}
	return obj, infoOf(bucket, key, oi), nil
}

// Get reads a small object whole; objects over maxBytes give ErrTooLarge.
func (c *Client) Get(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, error) {
	obj, err := c.mc.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("objstore: get %s/%s: %w", bucket, key, wrapNotFound(err))
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("objstore: get %s/%s: %w", bucket, key, wrapNotFound(err))
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("objstore: get %s/%s: %w (limit %d bytes)", bucket, key, ErrTooLarge, maxBytes)
	}
	return data, nil
}

// GetETag reads a small object whole, with its ETag; a missing object is
// nil data and "" (no error): what PutIfMatch then creates.
func (c *Client) GetETag(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, string, error) {
	obj, info, err := c.Open(ctx, bucket, key)
	if errors.Is(err, ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	defer obj.Close()
	if info.Size > maxBytes {
		return nil, "", fmt.Errorf("objstore: get %s/%s: %w (limit %d bytes)", bucket, key, ErrTooLarge, maxBytes)
	}
	data, err := io.ReadAll(io.LimitReader(obj, maxBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("objstore: get %s/%s: %w", bucket, key, wrapNotFound(err))
	}
	return data, info.ETag, nil
}

// PutIfMatch writes data to bucket/key only over the object whose ETag is
// etag — or, for "", only where there is none — and returns ErrChanged
// otherwise (a compare-and-swap: S3's conditional writes).
func (c *Client) PutIfMatch(ctx context.Context, bucket, key string, data []byte, contentType, etag string) error {
	opts := minio.PutObjectOptions{ContentType: contentType}
	if etag == "" {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(etag)
	}
	_, err := c.mc.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	if code := minio.ToErrorResponse(err).Code; code == "PreconditionFailed" || code == "ConditionalRequestConflict" {
		return fmt.Errorf("objstore: put %s/%s: %w", bucket, key, ErrChanged)
	}
	if err != nil {
		return fmt.Errorf("objstore: put %s/%s: %w", bucket, key, err)
	}
	return nil
}

// PresignGet returns a URL that reads bucket/key without credentials until
// ttl passes.
func (c *Client) PresignGet(ctx context.Context, bucket, key string, ttl time.Duration) (*url.URL, error) {
	return c.PresignGetWith(ctx, bucket, key, ttl, PresignOptions{})
}

// PresignOptions override headers of the response to a presigned GET; empty
// fields leave the stored object's headers alone.
type PresignOptions struct {
	// ContentType is sent as response-content-type.
	ContentType string
	// ContentDisposition is sent as response-content-disposition, e.g.
	// `attachment; filename="video.mp4"`.
	ContentDisposition string
}

// PresignGetWith is PresignGet with response header overrides.
func (c *Client) PresignGetWith(ctx context.Context, bucket, key string, ttl time.Duration, opts PresignOptions) (*url.URL, error) {
	var params url.Values
	if opts.ContentType != "" || opts.ContentDisposition != "" {
		params = url.Values{}
		if opts.ContentType != "" {
			params.Set("response-content-type", opts.ContentType)
		}
		if opts.ContentDisposition != "" {
			params.Set("response-content-disposition", opts.ContentDisposition)
		}
	}
	u, err := c.mc.PresignedGetObject(ctx, bucket, key, ttl, params)
	if err != nil {
		return nil, fmt.Errorf("objstore: presign %s/%s: %w", bucket, key, err)
	}
	return u, nil
}

// List returns the keys under prefix.
func (c *Client) List(ctx context.Context, bucket, prefix string) ([]Info, error) {
	var out []Info
	for oi := range c.mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, fmt.Errorf("objstore: list %s/%s: %w", bucket, prefix, oi.Err)
		}
		out = append(out, Info{Bucket: bucket, Key: oi.Key, ETag: oi.ETag, Size: oi.Size, LastModified: oi.LastModified})
	}
	return out, nil
}

// Ping checks that the store answers and the buckets exist.
func (c *Client) Ping(ctx context.Context, buckets ...string) error {
	for _, b := range buckets {
		ok, err := c.mc.BucketExists(ctx, b)
		if err != nil {
			return fmt.Errorf("objstore: %w", err)
		}
		if !ok {
			return fmt.Errorf("objstore: bucket %q does not exist", b)
		}
	}
	return nil
}

func wrapNotFound(err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NoSuchBucket":
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// Remove deletes bucket/key; a missing object is not an error.
func (c *Client) Remove(ctx context.Context, bucket, key string) error {
	if err := c.mc.RemoveObject(ctx, bucket, key, minio.RemoveObjectOptions{}); err != nil {
		if errors.Is(wrapNotFound(err), ErrNotFound) {
			return nil
		}
		return fmt.Errorf("objstore: remove %s/%s: %w", bucket, key, err)
	}
	return nil
}

// RemovePrefix deletes every object under prefix, which must be a non-empty
// folder ("…/"), so a mistake cannot empty a bucket.
func (c *Client) RemovePrefix(ctx context.Context, bucket, prefix string) error {
	if prefix == "" || prefix == "/" || prefix[len(prefix)-1] != '/' {
		return fmt.Errorf("objstore: remove prefix %q: not a folder", prefix)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing if removal ends early
	objects := make(chan minio.ObjectInfo)
	var listErr error
	go func() {
		defer close(objects)
		for oi := range c.mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if oi.Err != nil {
				listErr = oi.Err
				return
			}
			select {
			case objects <- oi:
			case <-ctx.Done():
				return
			}
		}
	}()
	var first error
	for re := range c.mc.RemoveObjects(ctx, bucket, objects, minio.RemoveObjectsOptions{}) {
		if re.Err != nil && first == nil && !errors.Is(wrapNotFound(re.Err), ErrNotFound) {
			first = fmt.Errorf("objstore: remove %s/%s: %w", bucket, re.ObjectName, re.Err)
		}
	}
	if first != nil {
		return first
	}
	if listErr != nil {
		return fmt.Errorf("objstore: list %s/%s: %w", bucket, prefix, listErr)
	}
	return nil
}

// PresignPut returns a URL that stores bucket/key with one PUT until ttl
// passes. The request must carry exactly the headers given (e.g. the
// Content-Length and x-amz-meta-* ones): they are signed into the URL.
func (c *Client) PresignPut(ctx context.Context, bucket, key string, ttl time.Duration, headers http.Header) (*url.URL, error) {
	u, err := c.mc.PresignHeader(ctx, http.MethodPut, bucket, key, ttl, nil, headers)
	if err != nil {
		return nil, fmt.Errorf("objstore: presign put %s/%s: %w", bucket, key, err)
	}
	return u, nil
}
