package bus

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FuzzDeadLetterOf fuzzes the headers and subject of a KILN_DLQ message as
// deadLetterOf reads them back (the consumer, the original subject, the
// reason, the time, the stream sequence and the delivery count). Seeds: the
// headers deadLetter writes for an intake message, and damaged copies
// (missing consumer, a local or garbled time, signed, overflowing or
// spaced numbers).
//
// Properties: no panic; Seq and Data are the message's; the consumer is the
// header's, else the subject's after "kiln_dlq."; FailedAt is the header's
// time when it is RFC 3339, else the stored time in UTC; the numbers are
// the headers' when they are decimal uint64s, else 0; and what deadLetter
// writes (its time format, decimal numbers) reads back unchanged.
func FuzzDeadLetterOf(f *testing.F) {
	failedAt := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	f.Add(DeadLetterSubject("intake"), "intake", "kiln.s3.events", "ingest: s3 event: permanent: parse: no records",
		failedAt.Format(time.RFC3339Nano), "42", "3", uint64(7), []byte(`{"Records":[]}`), failedAt.UnixNano(), uint64(42), uint64(3))
	f.Add(DeadLetterSubject("catalog"), "", "kiln.jobs.job_x", "r", "2025-06-01T14:00:00+02:00", "-1", "18446744073709551616", uint64(1), []byte{}, int64(0), uint64(0), uint64(1<<63))
	f.Add("kiln_dlq.", "", "", "", "yesterday", " 7", "0x10", uint64(0), []byte(nil), int64(-1), ^uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, msgSubject, consumer, subject, reason, at, seq, deliveries string,
		msgSeq uint64, data []byte, nanos int64, streamSeq, delivered uint64) {
		stored := time.Unix(0, nanos)
		h := nats.Header{}
		for k, v := range map[string]string{HeaderDLQConsumer: consumer, HeaderDLQSubject: subject, HeaderDLQReason: reason,
			HeaderDLQTime: at, HeaderDLQStreamSeq: seq, HeaderDLQDeliveries: deliveries} {
			if v != "" {
				h.Set(k, v)
			}
		}
		dl := deadLetterOf(&jetstream.RawStreamMsg{Subject: msgSubject, Sequence: msgSeq, Header: h, Data: data, Time: stored})
		if dl.Seq != msgSeq || !bytes.Equal(dl.Data, data) || dl.Subject != subject || dl.Reason != reason {
			t.Fatalf("dead letter %+v does not carry the message's sequence, data, subject and reason", dl)
		}
		wantConsumer := consumer
		if wantConsumer == "" {
			wantConsumer = strings.TrimPrefix(msgSubject, deadLetterPrefix)
		}
		if dl.Consumer != wantConsumer {
			t.Fatalf("consumer %q, want %q", dl.Consumer, wantConsumer)
		}
		wantAt, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			wantAt = stored.UTC()
		}
		if !dl.FailedAt.Equal(wantAt) {
			t.Fatalf("failed at %v, want %v (header %q)", dl.FailedAt, wantAt, at)
		}
		for _, n := range []struct {
			got    uint64
			header string
		}{{dl.StreamSeq, seq}, {dl.Deliveries, deliveries}} {
			want, _ := strconv.ParseUint(n.header, 10, 64)
			if n.got != want {
				t.Fatalf("number %d from header %q, want %d", n.got, n.header, want)
			}
		}

		// What deadLetter writes reads back unchanged.
		w := nats.Header{}
		w.Set(HeaderDLQConsumer, "intake")
		w.Set(HeaderDLQTime, stored.UTC().Format(time.RFC3339Nano))
		w.Set(HeaderDLQStreamSeq, strconv.FormatUint(streamSeq, 10))
		w.Set(HeaderDLQDeliveries, strconv.FormatUint(delivered, 10))
		back := deadLetterOf(&jetstream.RawStreamMsg{Subject: DeadLetterSubject("intake"), Header: w, Time: time.Unix(1, 0)})
		if !back.FailedAt.Equal(stored) || back.StreamSeq != streamSeq || back.Deliveries != delivered || back.Consumer != "intake" {
			t.Fatalf("wrote time %v, seq %d, deliveries %d; read back %+v", stored, streamSeq, delivered, back)
		}
	})
}
