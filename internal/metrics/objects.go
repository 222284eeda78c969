package metrics

import (
	"context"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnvideo/kiln/internal/objstore"
)

// ObjectBytes counts the bytes kiln moves to and from object storage.
type ObjectBytes struct {
	n *prometheus.CounterVec
}

// NewObjectBytes returns the counter, registered with reg:
// kiln_object_bytes_total{role,direction}.
func NewObjectBytes(reg prometheus.Registerer) (*ObjectBytes, error) {
	n := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kiln_object_bytes_total",
		Help: "Bytes a kiln process read from (direction=read) or wrote to (direction=written) object storage itself, by role; ffmpeg's reads of presigned URLs are not seen.",
	}, []string{"role", "direction"})
	if err := reg.Register(n); err != nil {
		return nil, err
	}
	return &ObjectBytes{n: n}, nil
}

// For returns c counting what role reads and writes through it.
func (b *ObjectBytes) For(role string, c *objstore.Client) *Objects {
	return &Objects{Client: c, read: b.n.WithLabelValues(role, "read"), written: b.n.WithLabelValues(role, "written")}
}

// Objects is an objstore.Client whose transfers are counted.
type Objects struct {
	*objstore.Client
	read, written prometheus.Counter
}

// Put uploads r (objstore.Client.Put), counting what was read from r.
func (o *Objects) Put(ctx context.Context, bucket, key string, r io.Reader, size int64, contentType string, meta map[string]string) (objstore.Info, error) {
	cr := &countingReader{r: r, c: o.written}
	return o.Client.Put(ctx, bucket, key, cr, size, contentType, meta)
}

// PutFile uploads the file at path (objstore.Client.PutFile), counting its
// size once uploaded.
func (o *Objects) PutFile(ctx context.Context, bucket, key, path, contentType string) error {
	if err := o.Client.PutFile(ctx, bucket, key, path, contentType); err != nil {
		return err
	}
	if fi, err := os.Stat(path); err == nil {
		o.written.Add(float64(fi.Size()))
	}
	return nil
}

// Get reads a small object (objstore.Client.Get).
func (o *Objects) Get(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, error) {
	b, err := o.Client.Get(ctx, bucket, key, maxBytes)
	o.read.Add(float64(len(b)))
	return b, err
}

// Open opens an object for reading (objstore.Client.Open), counting what
// is read from it.
func (o *Objects) Open(ctx context.Context, bucket, key string) (io.ReadSeekCloser, objstore.Info, error) {
	rc, info, err := o.Client.Open(ctx, bucket, key)
	if err != nil {
		return nil, info, err
	}
	return countingReadSeekCloser{ReadSeekCloser: rc, c: o.read}, info, nil
}

type countingReader struct {
	r io.Reader
	c prometheus.Counter
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.c.Add(float64(n))
	return n, err
}

type countingReadSeekCloser struct {
	io.ReadSeekCloser
	c prometheus.Counter
}

func (r countingReadSeekCloser) Read(p []byte) (int, error) {
	n, err := r.ReadSeekCloser.Read(p)
	r.c.Add(float64(n))
	return n, err
}
