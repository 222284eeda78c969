// Package deadletter is the API of the bus's dead letters: messages a
// consumer could never process (malformed, invalid), kept in the KILN_DLQ
// stream with their original subject and data. It lists them and replays
// one (republishes it to its original subject, then deletes it). The
// catalog role serves it, behind the API key.
package deadletter

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/kilnvideo/kiln/internal/bus"
	"github.com/kilnvideo/kiln/internal/httpapi"
)

// Store is where the dead letters are (bus.Bus).
type Store interface {
	DeadLetters(ctx context.Context, q bus.DeadLetterQuery) ([]bus.DeadLetter, bool, error)
	DeadLetter(ctx context.Context, seq uint64) (bus.DeadLetter, error)
	ReplayDeadLetter(ctx context.Context, seq uint64) (bus.DeadLetter, error)
}

var _ Store = (*bus.Bus)(nil)

// Config holds the service's dependencies.
type Config struct {
	Store  Store
	Logger *zap.Logger
}

// Page sizes of GET /v1/dead-letters.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// Service serves the dead-letter API.
type Service struct {
	store Store
	log   *zap.Logger
}

// New returns the service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Service{store: cfg.Store, log: cfg.Logger}
}

// Routes lists the dead-letter API; every route needs an API key (replay a
// write key).
//
//	GET  /v1/dead-letters                ?consumer=&limit=&cursor=, oldest first
//	GET  /v1/dead-letters/{seq}          one, with its data
//	POST /v1/dead-letters/{seq}/replay   republish it to its subject, delete it
//
// Dead letters span every tenant: only keys of the default tenant (the
// operator's) reach them.
func (s *Service) Routes() []httpapi.Route {
	return []httpapi.Route{
		httpapi.Authed("GET /v1/dead-letters", httpapi.OperatorOnly(s.list)),
		httpapi.Authed("GET /v1/dead-letters/{seq}", httpapi.OperatorOnly(s.get)),
		httpapi.Authed("POST /v1/dead-letters/{seq}/replay", httpapi.OperatorOnly(s.replay)),
	}
}

// DeadLetter is a dead letter as the API shows it. Data (base64) is only
// in GET /v1/dead-letters/{seq}.
type DeadLetter struct {
	Seq        uint64    `json:"seq"`
	Consumer   string    `json:"consumer"`
	Subject    string    `json:"subject"`
	Reason     string    `json:"reason"`
	FailedAt   time.Time `json:"failed_at"`
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
	Size       int       `json:"size"`
	Data       string    `json:"data,omitempty"`
}

// List is a page of GET /v1/dead-letters.
type List struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	// NextCursor continues the listing; nil on the last page.
	NextCursor *string `json:"next_cursor"`
}

// Replayed is the answer of POST /v1/dead-letters/{seq}/replay.
type Replayed struct {
	DeadLetter
	Replayed bool `json:"replayed"`
}

func toJSON(dl bus.DeadLetter, withData bool) DeadLetter {
	out := DeadLetter{
		Seq: dl.Seq, Consumer: dl.Consumer, Subject: dl.Subject, Reason: dl.Reason, FailedAt: dl.FailedAt,
		StreamSeq: dl.StreamSeq, Deliveries: dl.Deliveries, Size: len(dl.Data),
	}
	if withData {
		out.Data = base64.StdEncoding.EncodeToString(dl.Data)
	}
	return out
}

// consumerRE is what a durable name may be.
var consumerRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (s *Service) list(w http.ResponseWriter, r *http.Request) {
	q := bus.DeadLetterQuery{Limit: DefaultLimit}
	v := r.URL.Query()
	if c := v.Get("consumer"); c != "" {
		if !consumerRE.MatchString(c) {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, "consumer must be a consumer name (letters, digits, _ and -)")
			return
		}
		q.Consumer = c
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxLimit {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, "limit must be 1 to "+strconv.Itoa(MaxLimit))
			return
		}
		q.Limit = n
	}
	if c := v.Get("cursor"); c != "" {
		n, err := strconv.ParseUint(c, 10, 64)
		if err != nil {
			httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeBadRequest, "cursor must be a next_cursor of this listing")
			return
		}
		q.After = n
	}
	page, more, err := s.store.DeadLetters(r.Context(), q)
	if err != nil {
		s.unavailable(w, r, "list dead letters", err)
		return
	}
	out := List{DeadLetters: make([]DeadLetter, 0, len(page))}
	for _, dl := range page {
		out.DeadLetters = append(out.DeadLetters, toJSON(dl, false))
	}
	if more && len(page) > 0 {
		c := strconv.FormatUint(page[len(page)-1].Seq, 10)
		out.NextCursor = &c
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func (s *Service) get(w http.ResponseWriter, r *http.Request) {
	seq, ok := parseSeq(w, r)
	if !ok {
		return
	}
	dl, err := s.store.DeadLetter(r.Context(), seq)
	if errors.Is(err, bus.ErrDeadLetterNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "dead letter not found")
		return
	}
	if err != nil {
		s.unavailable(w, r, "get dead letter", err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, toJSON(dl, true))
}

func (s *Service) replay(w http.ResponseWriter, r *http.Request) {
	seq, ok := parseSeq(w, r)
	if !ok {
		return
	}
	dl, err := s.store.ReplayDeadLetter(r.Context(), seq)
	if errors.Is(err, bus.ErrDeadLetterNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "dead letter not found (never, already replayed, or expired)")
		return
	}
	if err != nil {
		s.unavailable(w, r, "replay dead letter", err)
		return
	}
	s.log.Info("dead letter replayed", zap.Uint64("seq", seq), zap.String("consumer", dl.Consumer), zap.String("subject", dl.Subject))
	httpapi.WriteJSON(w, http.StatusAccepted, Replayed{DeadLetter: toJSON(dl, false), Replayed: true})
}

// parseSeq reads {seq}: a dead letter's sequence, a positive integer.
func parseSeq(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "a dead letter id is its seq, a positive integer")
		return 0, false
	}
	return seq, true
}

func (s *Service) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		return
	}
	s.log.Error(what, zap.Error(err))
	w.Header().Set("Retry-After", "5")
	httpapi.WriteError(w, http.StatusServiceUnavailable, httpapi.CodeUnavailable, "the event bus is unavailable; retry")
}
