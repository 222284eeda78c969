package objstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// Multipart uploads whose parts a client PUTs itself, through presigned
// URLs (S3's CreateMultipartUpload, UploadPart, ListParts,
// CompleteMultipartUpload, AbortMultipartUpload, ListMultipartUploads).

// ErrNoUpload is returned (wrapped) when a multipart upload does not exist
// (any more): never created, completed or aborted.
var ErrNoUpload = errors.New("multipart upload not found")

// ErrBadParts is returned (wrapped) by CompleteMultipartUpload when S3
// refuses the part list: a part missing or with another ETag, a part other
// than the last under MinPartSize, or the parts out of order.
var ErrBadParts = errors.New("the parts do not make the object")

// MaxParts is S3's most parts of one multipart upload.
const MaxParts = maxParts

// MaxPartSize is S3's largest part (and largest single PUT).
const MaxPartSize = 5 << 30

// Part is one stored part of a multipart upload.
type Part struct {
	Number       int
	Size         int64
	ETag         string
	LastModified time.Time
}

// Upload is one multipart upload in progress.
type Upload struct {
	Key       string
	UploadID  string
	Initiated time.Time
}

func (c *Client) core() minio.Core { return minio.Core{Client: c.mc} }

// NewMultipartUpload starts a multipart upload of bucket/key whose object
// will have contentType and the user metadata meta, and returns its upload
// id.
func (c *Client) NewMultipartUpload(ctx context.Context, bucket, key, contentType string, meta map[string]string) (string, error) {
	id, err := c.core().NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{ContentType: contentType, UserMetadata: meta})
	if err != nil {
		return "", fmt.Errorf("objstore: new multipart upload %s/%s: %w", bucket, key, err)
	}
	return id, nil
}

// PresignUploadPart returns a URL that stores part number part of the
// upload with one PUT of exactly size bytes (its Content-Length is signed)
// until ttl passes.
func (c *Client) PresignUploadPart(ctx context.Context, bucket, key, uploadID string, part int, size int64, ttl time.Duration) (*url.URL, error) {
	q := url.Values{"partNumber": {strconv.Itoa(part)}, "uploadId": {uploadID}}
	h := http.Header{"Content-Length": {strconv.FormatInt(size, 10)}}
	u, err := c.mc.PresignHeader(ctx, http.MethodPut, bucket, key, ttl, q, h)
	if err != nil {
		return nil, fmt.Errorf("objstore: presign part %d of %s/%s: %w", part, bucket, key, err)
	}
	return u, nil
}

// ListParts returns the stored parts of the upload, by part number.
func (c *Client) ListParts(ctx context.Context, bucket, key, uploadID string) ([]Part, error) {
	var out []Part
	marker := 0
	for {
		res, err := c.core().ListObjectParts(ctx, bucket, key, uploadID, marker, 1000)
		if err != nil {
			return nil, fmt.Errorf("objstore: list parts of %s/%s: %w", bucket, key, wrapNoUpload(err))
		}
		for _, p := range res.ObjectParts {
			out = append(out, Part{Number: p.PartNumber, Size: p.Size, ETag: trimETag(p.ETag), LastModified: p.LastModified})
		}
		if !res.IsTruncated || res.NextPartNumberMarker <= marker {
			return out, nil
		}
		marker = res.NextPartNumberMarker
	}
}

// CompleteMultipartUpload makes the object of the upload from parts (their
// numbers and ETags, ascending) and returns its ETag ("<hex>-<parts>").
func (c *Client) CompleteMultipartUpload(ctx context.Context, bucket, key, uploadID string, parts []Part) (string, error) {
	cp := make([]minio.CompletePart, len(parts))
	for i, p := range parts {
		cp[i] = minio.CompletePart{PartNumber: p.Number, ETag: p.ETag}
	}
	info, err := c.core().CompleteMultipartUpload(ctx, bucket, key, uploadID, cp, minio.PutObjectOptions{})
	if err != nil {
		switch minio.ToErrorResponse(err).Code {
		case "InvalidPart", "InvalidPartOrder", "EntityTooSmall":
			err = fmt.Errorf("%w: %w", ErrBadParts, err)
		default:
			err = wrapNoUpload(err)
		}
		return "", fmt.Errorf("objstore: complete %s/%s: %w", bucket, key, err)
	}
	return trimETag(info.ETag), nil
}

// AbortMultipartUpload discards the upload and its stored parts. An upload
// that is gone gives ErrNoUpload on S3, but no error on MinIO.
func (c *Client) AbortMultipartUpload(ctx context.Context, bucket, key, uploadID string) error {
	if err := c.core().AbortMultipartUpload(ctx, bucket, key, uploadID); err != nil {
		return fmt.Errorf("objstore: abort %s/%s: %w", bucket, key, wrapNoUpload(err))
	}
	return nil
}

// ListMultipartUploads returns the uploads in progress under prefix. It
// lists the whole bucket's and keeps those under prefix itself: MinIO takes
// a ListMultipartUploads prefix for an exact object name (a folder lists
// nothing), while S3 and MinIO both list every upload without one.
func (c *Client) ListMultipartUploads(ctx context.Context, bucket, prefix string) ([]Upload, error) {
	var out []Upload
	keyMarker, idMarker := "", ""
	for {
		res, err := c.core().ListMultipartUploads(ctx, bucket, "", keyMarker, idMarker, "", 1000)
		if err != nil {
			return nil, fmt.Errorf("objstore: list multipart uploads %s: %w", bucket, err)
		}
		for _, u := range res.Uploads {
			if strings.HasPrefix(u.Key, prefix) {
				out = append(out, Upload{Key: u.Key, UploadID: u.UploadID, Initiated: u.Initiated})
			}
		}
		if !res.IsTruncated || (res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == idMarker) {
			return out, nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

func wrapNoUpload(err error) error {
	if minio.ToErrorResponse(err).Code == "NoSuchUpload" {
		return fmt.Errorf("%w: %w", ErrNoUpload, err)
	}
	return err
}

// trimETag drops the quotes S3 puts around ETags.
func trimETag(etag string) string {
	if len(etag) >= 2 && etag[0] == '"' && etag[len(etag)-1] == '"' {
		return etag[1 : len(etag)-1]
	}
	return etag
}
