package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Dead letters: a message its handler can never process (ErrPermanent) is
// copied, data unchanged, to the stream KILN_DLQ on kiln_dlq.<consumer>,
// with what happened in its headers, before it is terminated. It stays
// there until it is replayed (republished to its original subject, then
// deleted) or expires (Config.DeadLetterMaxAge).
const (
	// DeadLetterStream holds the dead letters of every consumer.
	DeadLetterStream = "KILN_DLQ"
	deadLetterPrefix = "kiln_dlq."
)

// Headers of a dead letter.
const (
	HeaderDLQSubject    = "Kiln-Dlq-Subject"    // the original subject
	HeaderDLQConsumer   = "Kiln-Dlq-Consumer"   // the durable that gave up on it
	HeaderDLQReason     = "Kiln-Dlq-Reason"     // the handler's error
	HeaderDLQTime       = "Kiln-Dlq-Time"       // when (RFC 3339, UTC)
	HeaderDLQStreamSeq  = "Kiln-Dlq-Stream-Seq" // its sequence in the KILN stream
	HeaderDLQDeliveries = "Kiln-Dlq-Deliveries" // deliveries until then
	HeaderDLQMsgID      = "Kiln-Dlq-Msg-Id"     // its Nats-Msg-Id, if any
)

// maxReason bounds the reason kept in a header.
const maxReason = 1024

// DeadLetterSubject is the subject of consumer's dead letters.
func DeadLetterSubject(consumer string) string { return deadLetterPrefix + consumer }

// ErrDeadLetterNotFound: no dead letter has that sequence (never, replayed
// or expired).
var ErrDeadLetterNotFound = errors.New("dead letter not found")

// DeadLetter is one message of the KILN_DLQ stream.
type DeadLetter struct {
	// Seq is its sequence in KILN_DLQ: its id.
	Seq        uint64
	Consumer   string
	Subject    string
	Reason     string
	FailedAt   time.Time
	StreamSeq  uint64
	Deliveries uint64
	Data       []byte
}

// deadLetter copies msg to its consumer's dead letters, deduplicated by
// consumer and stream sequence (a redelivery after a lost Term is stored
// once).
func (b *Bus) deadLetter(ctx context.Context, consumer string, msg jetstream.Msg, streamSeq, delivered uint64, reason error) error {
	r := reason.Error()
	if len(r) > maxReason {
		r = r[:maxReason] + "…"
	}
	h := nats.Header{}
	h.Set(HeaderDLQSubject, msg.Subject())
	h.Set(HeaderDLQConsumer, consumer)
	h.Set(HeaderDLQReason, strings.ToValidUTF8(strings.NewReplacer("\r", " ", "\n", " ").Replace(r), "?"))
	h.Set(HeaderDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
	h.Set(HeaderDLQStreamSeq, strconv.FormatUint(streamSeq, 10))
	h.Set(HeaderDLQDeliveries, strconv.FormatUint(delivered, 10))
	if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		h.Set(HeaderDLQMsgID, id)
	}
	// Its own deadline: the consume context may be ending (shutdown) and the
	// copy must be made before the original is terminated.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	m := &nats.Msg{Subject: DeadLetterSubject(consumer), Header: h, Data: msg.Data()}
	msgID := fmt.Sprintf("dlq:%s:%d", consumer, streamSeq)
	if _, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("bus: dead letter: %w", err)
	}
	return nil
}

// DeadLetterQuery selects a page of dead letters, oldest first.
type DeadLetterQuery struct {
	// Consumer, when set, keeps only that consumer's.
	Consumer string
	// After is the cursor: only dead letters with a greater Seq.
	After uint64
	// Limit bounds the page (1 to 1000).
	Limit int
}

// DeadLetters returns a page of dead letters and whether more follow.
func (b *Bus) DeadLetters(ctx context.Context, q DeadLetterQuery) (page []DeadLetter, more bool, err error) {
	if q.Limit < 1 || q.Limit > 1000 {
		return nil, false, fmt.Errorf("bus: dead letters: limit %d out of 1..1000", q.Limit)
	}
	s, err := b.js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return nil, false, fmt.Errorf("bus: dead letters: %w", err)
	}
	filter := deadLetterPrefix + ">"
	if q.Consumer != "" {
		filter = DeadLetterSubject(q.Consumer)
	}
	seq := q.After + 1
	for len(page) <= q.Limit {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return page, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("bus: dead letters: %w", err)
		}
		if len(page) == q.Limit {
			return page, true, nil
		}
		page = append(page, deadLetterOf(m))
		seq = m.Sequence + 1
	}
	return page, false, nil
}

// DeadLetter returns the dead letter seq.
func (b *Bus) DeadLetter(ctx context.Context, seq uint64) (DeadLetter, error) {
	s, err := b.js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("bus: dead letter %d: %w", seq, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && !strings.HasPrefix(m.Subject, deadLetterPrefix)) {
		return DeadLetter{}, fmt.Errorf("bus: dead letter %d: %w", seq, ErrDeadLetterNotFound)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("bus: dead letter %d: %w", seq, err)
	}
	return deadLetterOf(m), nil
}

// ReplayDeadLetter republishes the dead letter seq, data unchanged, to its
// original subject, then deletes it, and returns it. The republished
// message is a new one to the consumers (a new stream sequence), its
// Nats-Msg-Id derived from seq, so replaying twice within the duplicate
// window publishes it once.
func (b *Bus) ReplayDeadLetter(ctx context.Context, seq uint64) (DeadLetter, error) {
	dl, err := b.DeadLetter(ctx, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	if dl.Subject == "" {
		return DeadLetter{}, fmt.Errorf("bus: dead letter %d has no original subject", seq)
	}
	m := &nats.Msg{Subject: dl.Subject, Data: dl.Data, Header: nats.Header{}}
	m.Header.Set(HeaderReplayOf, strconv.FormatUint(seq, 10))
	if _, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgID("replay:"+strconv.FormatUint(seq, 10))); err != nil {
		return DeadLetter{}, fmt.Errorf("bus: replay dead letter %d: %w", seq, err)
	}
	s, err := b.js.Stream(ctx, DeadLetterStream)
	if err == nil {
		err = s.DeleteMsg(ctx, seq)
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("bus: replayed dead letter %d, but deleting it: %w", seq, err)
	}
	return dl, nil
}

// HeaderReplayOf marks a replayed message with the dead letter it came from.
const HeaderReplayOf = "Kiln-Replay-Of"

// DeadLetterCounts returns the number of dead letters per consumer: every
// consumer that has some, and every consumer of this process (zero or not).
func (b *Bus) DeadLetterCounts(ctx context.Context) (map[string]int, error) {
	counts := map[string]int{}
	b.consumers.Range(func(k, _ any) bool {
		counts[k.(string)] = 0
		return true
	})
	s, err := b.js.Stream(ctx, DeadLetterStream)
	if err != nil {
		return counts, fmt.Errorf("bus: dead letter counts: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(deadLetterPrefix+">"))
	if err != nil {
		return counts, fmt.Errorf("bus: dead letter counts: %w", err)
	}
	for subj, n := range info.State.Subjects {
		counts[strings.TrimPrefix(subj, deadLetterPrefix)] += int(n)
	}
	return counts, nil
}

func deadLetterOf(m *jetstream.RawStreamMsg) DeadLetter {
	h := m.Header
	dl := DeadLetter{
		Seq:      m.Sequence,
		Consumer: h.Get(HeaderDLQConsumer),
		Subject:  h.Get(HeaderDLQSubject),
		Reason:   h.Get(HeaderDLQReason),
		Data:     m.Data,
		FailedAt: m.Time.UTC(),
	}
	if dl.Consumer == "" {
		dl.Consumer = strings.TrimPrefix(m.Subject, deadLetterPrefix)
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(HeaderDLQTime)); err == nil {
		dl.FailedAt = t
	}
	dl.StreamSeq, _ = strconv.ParseUint(h.Get(HeaderDLQStreamSeq), 10, 64)
	dl.Deliveries, _ = strconv.ParseUint(h.Get(HeaderDLQDeliveries), 10, 64)
	return dl
}
