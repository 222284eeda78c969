package ingest_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/ingest"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/tasks"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// fuzzMinIOPut is a bucket notification as MinIO sends it to NATS for a PUT
// of "dir/a b.mp4" with kiln's metadata.
const fuzzMinIOPut = `{
  "EventName": "s3:ObjectCreated:Put",
  "Key": "kiln-sources/dir/a%20b.mp4",
  "Records": [{
    "eventVersion": "2.0",
    "eventSource": "minio:s3",
    "awsRegion": "",
    "eventTime": "2024-05-01T10:11:12.345Z",
    "eventName": "s3:ObjectCreated:Put",
    "userIdentity": {"principalId": "kilnadmin"},
    "requestParameters": {"principalId": "kilnadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
    "responseElements": {"x-amz-id-2": "dd9025bab4ad", "x-amz-request-id": "17CB0D0DE8E0F3A5"},
    "s3": {
      "s3SchemaVersion": "1.0",
      "configurationId": "Config",
      "bucket": {"name": "kiln-sources", "ownerIdentity": {"principalId": "kilnadmin"}, "arn": "arn:aws:s3:::kiln-sources"},
      "object": {
        "key": "dir%2Fa+b.mp4",
        "size": 123,
        "eTag": "\"5d41402abc4b2a76b9719d911017c592\"",
        "contentType": "video/mp4",
        "userMetadata": {"X-Amz-Meta-Kiln-Preset": "default", "X-Amz-Meta-Kiln-Playback-Policy": "signed",
          "X-Amz-Meta-Kiln-Webhook-Url": "https://example.com/hook", "content-type": "video/mp4"},
        "sequencer": "17CB0D0DE8F4A7B1"
      }
    },
    "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"}
  }]
}`

// FuzzS3EventLanded feeds arbitrary bytes to ParseS3Event, as the intake
// does with every message on kiln.s3.events, and follows each landed object
// as far as StartJob goes without services. Seeds: a MinIO notification,
// AWS-style and multi-record events, folder markers, deletions, bad escapes.
//
// Properties: no panic; an error comes with no objects; at most one object
// per record; every object has a bucket and a key that is no folder, its
// key unescaped from some record's key, origin "s3", an ETag without
// quotes; and every object, with the job and probe task StartJob derives
// from it, marshals as protobuf (a message that cannot is never retried
// into success).
func FuzzS3EventLanded(f *testing.F) {
	f.Add([]byte(fuzzMinIOPut))
	for _, s := range []string{
		strings.Replace(fuzzMinIOPut, `"dir%2Fa+b.mp4"`, `"dir%2F"`, 1),
		strings.Replace(fuzzMinIOPut, `s3:ObjectCreated:Put`, `s3:ObjectRemoved:Delete`, 2),
		strings.Replace(fuzzMinIOPut, `"dir%2Fa+b.mp4"`, `"dir%2"`, 1),
		strings.Replace(fuzzMinIOPut, `"dir%2Fa+b.mp4"`, `"caf%C3%A9%20%E2%9C%93.mov"`, 1),
		strings.Replace(fuzzMinIOPut, `"2024-05-01T10:11:12.345Z"`, `"0000-01-01T00:00:00Z"`, 1),
		`{"Records":[{"eventName":"ObjectCreated:CompleteMultipartUpload","eventTime":"2024-05-01T10:11:12Z","s3":{"bucket":{"name":"b"},"object":{"key":"k","size":-1}}},` +
			`{"eventName":"ObjectCreated:Copy","s3":{"bucket":{"name":""},"object":{"key":"k"}}}]}`,
		`{"Records":[]}`,
		`{"Records":null}`,
		`{"Records":[{"s3":null}]}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		landed, err := ingest.ParseS3Event(data)
		if err != nil {
			if landed != nil {
				t.Fatalf("objects %v with error %v", landed, err)
			}
			return
		}
		var raw struct {
			Records []struct {
				S3 struct {
					Object struct {
						Key string `json:"key"`
					} `json:"object"`
				} `json:"s3"`
			} `json:"Records"`
		}
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatalf("ParseS3Event accepted JSON that does not decode generically: %v", err)
		}
		if len(landed) > len(raw.Records) {
			t.Fatalf("%d objects from %d records", len(landed), len(raw.Records))
		}
		keys := map[string]bool{}
		for _, r := range raw.Records {
			if k, err := url.QueryUnescape(r.S3.Object.Key); err == nil {
				keys[k] = true
			}
		}
		for _, ev := range landed {
			o := ev.GetObject()
			switch {
			case o.GetBucket() == "" || o.GetKey() == "" || strings.HasSuffix(o.GetKey(), "/"):
				t.Fatalf("object %v should have been skipped", o)
			case !keys[o.GetKey()]:
				t.Fatalf("key %q is no record's key unescaped", o.GetKey())
			case ev.GetOrigin() != "s3":
				t.Fatalf("origin %q", ev.GetOrigin())
			case strings.HasPrefix(o.GetEtag(), `"`) || strings.HasSuffix(o.GetEtag(), `"`):
				t.Fatalf("etag %q keeps quotes", o.GetEtag())
			}
			if _, err := proto.Marshal(ev); err != nil {
				t.Fatalf("landed object does not marshal: %v\n%v", err, ev)
			}
			jobID, assetID := jobid.FromObject(o.GetBucket(), o.GetKey(), o.GetEtag())
			if _, err := tasks.NewProbeTask(t.Context(), &kilnv1.ProbeTask{JobId: jobID, AssetId: assetID, Source: o, Preset: ev.GetPreset()}); err != nil {
				t.Fatalf("StartJob could not build the probe task of %v: %v", o, err)
			}
		}
	})
}
