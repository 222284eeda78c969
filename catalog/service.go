package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/packager"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// Objects is the object storage the catalog reads outputs from.
type Objects interface {
	// PresignGet returns a URL granting GET on bucket/key for ttl.
	PresignGet(ctx context.Context, bucket, key string, ttl time.Duration) (*url.URL, error)
	// Get returns a small object (playlists); it fails when the object is
	// larger than maxBytes.
	Get(ctx context.Context, bucket, key string, maxBytes int64) ([]byte, error)
}

// Config configures a Service.
type Config struct {
	// Store holds catalog state. Required.
	Store *Store
	// Objects reads and presigns output objects. Required.
	Objects Objects
	// PublicURL is the absolute base URL clients reach the catalog at, e.g.
	// "https://kiln.example.com"; links and playback URLs are built from it.
	// Required.
	PublicURL string
	// APIKeys guards the JSON API (playback routes are open). Required.
	APIKeys *httpapi.Keys
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// PresignTTL is the lifetime of presigned playback URLs; default 1h.
	PresignTTL time.Duration
}

// Service applies job events and serves the catalog's HTTP API.
type Service struct {
	store   *Store
	objects Objects
	public  string // PublicURL without trailing slash
	keys    *httpapi.Keys
	log     *zap.Logger
	ttl     time.Duration
}

// New validates cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("catalog: Config.Store is required")
	case cfg.Objects == nil:
		return nil, errors.New("catalog: Config.Objects is required")
	case cfg.APIKeys == nil:
		return nil, errors.New("catalog: Config.APIKeys is required")
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("catalog: Config.PublicURL %q must be an absolute http(s) URL", cfg.PublicURL)
	}
	s := &Service{
		store:   cfg.Store,
		objects: cfg.Objects,
		public:  strings.TrimRight(cfg.PublicURL, "/"),
		keys:    cfg.APIKeys,
		log:     cfg.Logger,
		ttl:     cfg.PresignTTL,
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.ttl <= 0 {
		s.ttl = time.Hour
	}
	return s, nil
}

// HandleEvent applies one job event. Errors wrapping ErrInvalidEvent are
// permanent; others (database) are worth a redelivery.
func (s *Service) HandleEvent(ctx context.Context, ev *kilnv1.JobEvent) error {
	log := s.log.With(zap.String("job_id", ev.GetJobId()), zap.String("event_id", ev.GetEventId()),
		zap.Stringer("state", ev.GetState()))
	changed, err := s.store.Apply(ctx, ev)
	if err != nil {
		log.Error("apply job event", zap.Error(err))
		return err
	}
	if changed {
		log.Info("job updated", zap.Float64("progress", ev.GetProgress()))
	} else {
		log.Debug("job event ignored (stale or repeated)")
	}
	return nil
}

// Handler returns the HTTP API:
//
//	GET /v1/jobs/{id}                              job (API key)
//	GET /v1/assets/{id}                            asset (API key)
//	GET /v1/play/{id}/master.m3u8                  master playlist, generated
//	GET /v1/play/{id}/{rendition}/index.m3u8       media playlist, proxied
//	GET /v1/play/{id}/{rendition}/{file}           302 to a presigned segment
//	GET /v1/play/{id}/download.mp4                 302 to the presigned MP4
//	GET /v1/play/{id}/poster.jpg                   302 to the presigned poster
//	OPTIONS /v1/play/...                           CORS preflight
//
// Playback routes need no key (players cannot send bearer headers) and allow
// any origin.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/jobs/{id}", s.keys.Require(http.HandlerFunc(s.getJob)))
	mux.Handle("GET /v1/assets/{id}", s.keys.Require(http.HandlerFunc(s.getAsset)))
	mux.Handle("GET /v1/play/{id}/master.m3u8", cors(s.master))
	mux.Handle("GET /v1/play/{id}/download.mp4", cors(s.redirect(func(a *Asset) string { return a.MP4Key })))
	mux.Handle("GET /v1/play/{id}/poster.jpg", cors(s.redirect(func(a *Asset) string { return a.PosterKey })))
	mux.Handle("GET /v1/play/{id}/{rendition}/index.m3u8", cors(s.mediaPlaylist))
	mux.Handle("GET /v1/play/{id}/{rendition}/{file}", cors(s.segment))
	mux.Handle("OPTIONS /v1/play/", cors(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "Range")
		w.Header().Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
	}))
	return mux
}

func cors(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Expose-Headers", "Content-Length, Content-Range")
		h(w, r)
	})
}

// JSON shapes of the API.
type (
	jobJSON struct {
		ID         string               `json:"id"`
		AssetID    string               `json:"asset_id"`
		State      State                `json:"state"`
		Progress   float64              `json:"progress"`
		Preset     string               `json:"preset"`
		Source     sourceJSON           `json:"source"`
		Error      *httpapi.ErrorDetail `json:"error,omitempty"`
		Media      json.RawMessage      `json:"media,omitempty"`
		Plan       json.RawMessage      `json:"plan,omitempty"`
		CreatedAt  time.Time            `json:"created_at"`
		UpdatedAt  time.Time            `json:"updated_at"`
		Timestamps map[State]time.Time  `json:"timestamps"`
		Links      map[string]string    `json:"links"`
	}
	sourceJSON struct {
		Bucket string `json:"bucket"`
		Key    string `json:"key"`
		ETag   string `json:"etag"`
		Size   int64  `json:"size"`
	}
	assetJSON struct {
		ID              string            `json:"id"`
		JobID           string            `json:"job_id"`
		State           State             `json:"state"`
		DurationSeconds float64           `json:"duration_seconds"`
		Renditions      []renditionJSON   `json:"renditions"`
		Playback        *playbackJSON     `json:"playback"`
		Links           map[string]string `json:"links"`
	}
	renditionJSON struct {
		Name             string  `json:"name"`
		Width            int     `json:"width"`
		Height           int     `json:"height"`
		FrameRate        float64 `json:"frame_rate"`
		Bandwidth        int64   `json:"bandwidth"`
		AverageBandwidth int64   `json:"average_bandwidth"`
		Codecs           string  `json:"codecs"`
	}
	playbackJSON struct {
		HLS    string `json:"hls"`
		MP4    string `json:"mp4,omitempty"`
		Poster string `json:"poster,omitempty"`
	}
)

func (s *Service) getJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !jobid.ValidJob(id) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed job id")
		return
	}
	j, err := s.store.Job(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "job")
		return
	}
	out := jobJSON{
		ID: j.ID, AssetID: j.AssetID, State: j.State, Progress: j.Progress, Preset: j.Preset,
		Source:    sourceJSON{Bucket: j.Source.Bucket, Key: j.Source.Key, ETag: j.Source.ETag, Size: j.Source.Size},
		CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, Timestamps: j.Timestamps,
		Links: map[string]string{
			"self":  s.public + "/v1/jobs/" + j.ID,
			"asset": s.public + "/v1/assets/" + j.AssetID,
		},
	}
	if j.State == StateFailed {
		out.Error = &httpapi.ErrorDetail{Code: j.ErrorCode, Message: j.ErrorMessage}
	}
	if out.Media, err = protoJSON(j.Media); err == nil {
		out.Plan, err = protoJSON(j.Plan)
	}
	if err != nil {
		s.internal(w, r, fmt.Errorf("render job %s: %w", id, err))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// protoJSON renders m with proto field names, nil when m is nil.
func protoJSON(m proto.Message) (json.RawMessage, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil, nil
	}
	return protoOut.Marshal(m)
}

func (s *Service) getAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := s.asset(w, r)
	if !ok {
		return
	}
	out := assetJSON{
		ID: a.ID, JobID: a.JobID, State: a.State, DurationSeconds: a.DurationSeconds,
		Renditions: make([]renditionJSON, 0, len(a.Renditions)),
		Links: map[string]string{
			"self": s.public + "/v1/assets/" + a.ID,
			"job":  s.public + "/v1/jobs/" + a.JobID,
		},
	}
	for _, r := range a.Renditions {
		out.Renditions = append(out.Renditions, renditionJSON{Name: r.Name, Width: r.Width, Height: r.Height,
			FrameRate: r.FrameRate, Bandwidth: r.Bandwidth, AverageBandwidth: r.AverageBandwidth, Codecs: r.Codecs})
	}
	if a.Ready() {
		play := s.public + "/v1/play/" + a.ID
		out.Playback = &playbackJSON{HLS: play + "/master.m3u8"}
		if a.MP4Key != "" {
			out.Playback.MP4 = play + "/download.mp4"
		}
		if a.PosterKey != "" {
			out.Playback.Poster = play + "/poster.jpg"
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// asset loads the asset named by the {id} path value, answering the request
// itself (and returning false) when it is malformed or unknown.
func (s *Service) asset(w http.ResponseWriter, r *http.Request) (*Asset, bool) {
	id := r.PathValue("id")
	if !jobid.ValidAsset(id) {
		httpapi.WriteError(w, http.StatusBadRequest, httpapi.CodeInvalidID, "malformed asset id")
		return nil, false
	}
	a, err := s.store.Asset(r.Context(), id)
	if err != nil {
		s.storeError(w, r, err, "asset")
		return nil, false
	}
	return a, true
}

// readyAsset is asset, but answers 404 for an asset that is not ready.
func (s *Service) readyAsset(w http.ResponseWriter, r *http.Request) (*Asset, bool) {
	a, ok := s.asset(w, r)
	if ok && !a.Ready() {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "asset is not ready")
		return nil, false
	}
	return a, ok
}

// rendition is readyAsset plus the rendition named by {rendition}.
func (s *Service) rendition(w http.ResponseWriter, r *http.Request) (*Asset, Rendition, bool) {
	a, ok := s.readyAsset(w, r)
	if !ok {
		return nil, Rendition{}, false
	}
	rend, ok := a.Rendition(r.PathValue("rendition"))
	if !ok {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such rendition")
	}
	return a, rend, ok
}

const (
	hlsContentType  = "application/vnd.apple.mpegurl"
	playlistCache   = "public, max-age=60"
	maxPlaylistSize = 4 << 20
)

func (s *Service) master(w http.ResponseWriter, r *http.Request) {
	a, ok := s.readyAsset(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", hlsContentType)
	w.Header().Set("Cache-Control", playlistCache)
	_, _ = w.Write(packager.MasterPlaylist(a.protoRenditions()))
}

func (s *Service) mediaPlaylist(w http.ResponseWriter, r *http.Request) {
	a, rend, ok := s.rendition(w, r)
	if !ok {
		return
	}
	body, err := s.objects.Get(r.Context(), a.Bucket, rend.PlaylistKey, maxPlaylistSize)
	if err != nil {
		s.log.Error("read media playlist", zap.String("asset_id", a.ID), zap.String("key", rend.PlaylistKey), zap.Error(err))
		httpapi.WriteError(w, http.StatusBadGateway, httpapi.CodeUnavailable, "media playlist unavailable")
		return
	}
	w.Header().Set("Content-Type", hlsContentType)
	w.Header().Set("Cache-Control", playlistCache)
	_, _ = w.Write(body)
}

// segmentFile is the only shape of file a media playlist references.
var segmentFile = regexp.MustCompile(`^[A-Za-z0-9_-]+\.(m4s|mp4)$`)

func (s *Service) segment(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if !segmentFile.MatchString(file) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "no such file")
		return
	}
	a, rend, ok := s.rendition(w, r)
	if !ok {
		return
	}
	s.presignRedirect(w, r, a, path.Dir(rend.PlaylistKey)+"/"+file)
}

// redirect serves a 302 to the presigned object keyOf picks, 404 when the
// asset has none.
func (s *Service) redirect(keyOf func(*Asset) string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := s.readyAsset(w, r)
		if !ok {
			return
		}
		key := keyOf(a)
		if key == "" {
			httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, "asset has no such output")
			return
		}
		s.presignRedirect(w, r, a, key)
	}
}

func (s *Service) presignRedirect(w http.ResponseWriter, r *http.Request, a *Asset, key string) {
	u, err := s.objects.PresignGet(r.Context(), a.Bucket, key, s.ttl)
	if err != nil {
		s.internal(w, r, fmt.Errorf("presign %s/%s: %w", a.Bucket, key, err))
		return
	}
	w.Header().Set("Cache-Control", "private, max-age="+strconv.Itoa(int((s.ttl/2).Seconds())))
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (s *Service) storeError(w http.ResponseWriter, r *http.Request, err error, what string) {
	if errors.Is(err, ErrNotFound) {
		httpapi.WriteError(w, http.StatusNotFound, httpapi.CodeNotFound, what+" not found")
		return
	}
	s.internal(w, r, err)
}

func (s *Service) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("catalog request failed", zap.String("path", r.URL.Path), zap.Error(err))
	httpapi.WriteError(w, http.StatusInternalServerError, httpapi.CodeInternal, "internal error")
}
