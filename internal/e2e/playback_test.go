package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnvideo/kiln/catalog"
	"github.com/kilnvideo/kiln/catalog/sqlite"
	"github.com/kilnvideo/kiln/internal/httpapi"
	"github.com/kilnvideo/kiln/internal/jobid"
	"github.com/kilnvideo/kiln/internal/layout"
	"github.com/kilnvideo/kiln/internal/objstore"
	"github.com/kilnvideo/kiln/internal/policy"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// playbackGet GETs url with the given header pairs (following redirects)
// and returns the response with its body read.
func playbackGet(t *testing.T, rawURL string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// wantDenied checks a playback URL answers 403 with the error code.
func wantDenied(t *testing.T, rawURL, code string) {
	t.Helper()
	resp, body := playbackGet(t, rawURL)
	var e apiError
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusForbidden || e.Error.Code != code {
		t.Errorf("GET %s: %d %s, want 403 %s", rawURL, resp.StatusCode, body, code)
	}
}

// withoutToken and withTamperedToken rewrite the token of a playback URL.
func withoutToken(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.RawQuery = ""
	return u.String()
}

func withTamperedToken(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	tok := u.Query().Get("token")
	if tok == "" {
		t.Fatalf("%s has no token", rawURL)
	}
	last := "A"
	if strings.HasSuffix(tok, "A") {
		last = "B"
	}
	u.RawQuery = url.Values{"token": {tok[:len(tok)-1] + last}}.Encode()
	return u.String()
}

// TestSignedPlayback: an upload with playback_policy=signed plays only with
// the token its asset JSON hands out, through the running stack (redirect
// delivery), and the same asset plays through a proxy-mode catalog reading
// the real object store.
func TestSignedPlayback(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "signed.mp4", 4, "320x180")
	code, up, bad := s.upload(t, openFile(t, clip), "video/mp4", "?filename=signed.mp4&playback_policy=signed")
	if code != http.StatusAccepted {
		t.Fatalf("upload: %d %+v", code, bad)
	}
	if job := s.waitJob(t, up.JobID, jobTimeout); job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}
	var job struct {
		Policy string `json:"playback_policy"`
	}
	s.do(t, http.MethodGet, "/v1/jobs/"+up.JobID, nil, "", &job)
	var asset assetView
	if code := s.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset); code != http.StatusOK {
		t.Fatalf("GET asset: %d", code)
	}
	if job.Policy != "signed" || asset.Policy != "signed" || asset.Playback == nil || asset.TokenExpiresAt == nil {
		t.Fatalf("job policy %q, asset %+v", job.Policy, asset)
	}
	if d := time.Until(*asset.TokenExpiresAt); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("token expires in %v, want the 24h default", d)
	}
	for _, u := range []string{asset.Playback.HLS, asset.Playback.MP4, asset.Playback.Poster} {
		if !strings.HasPrefix(u, s.APIURL+"/v1/play/"+up.AssetID+"/") || !strings.Contains(u, "?token=") {
			t.Errorf("playback URL %q: want the public URL with a token", u)
		}
	}

	t.Run("redirect", func(t *testing.T) {
		// ffmpeg plays every variant: the master, media playlists and
		// segments all carry the token.
		decode(t, asset.Playback.HLS, "-map", "0")

		wantDenied(t, withoutToken(t, asset.Playback.HLS), catalog.CodeTokenRequired)
		wantDenied(t, withTamperedToken(t, asset.Playback.HLS), catalog.CodeInvalidToken)
		wantDenied(t, withoutToken(t, asset.Playback.MP4), catalog.CodeTokenRequired)
		wantDenied(t, withTamperedToken(t, asset.Playback.Poster), catalog.CodeInvalidToken)
		media := strings.Replace(withoutToken(t, asset.Playback.HLS), "master.m3u8", asset.Renditions[0].Name+"/index.m3u8", 1)
		wantDenied(t, media, catalog.CodeTokenRequired)
		wantDenied(t, strings.Replace(media, "index.m3u8", "init.mp4", 1), catalog.CodeTokenRequired)

		// The MP4 answers a range request (the object store does, after the
		// redirect), as a download.
		resp, body := playbackGet(t, asset.Playback.MP4, "Range", "bytes=0-99")
		if resp.StatusCode != http.StatusPartialContent || len(body) != 100 || !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes 0-99/") {
			t.Errorf("MP4 range: %d, %d bytes, Content-Range %q", resp.StatusCode, len(body), resp.Header.Get("Content-Range"))
		}
		if ct, cd := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"); ct != "video/mp4" ||
			cd != `attachment; filename="`+up.AssetID+`.mp4"` {
			t.Errorf("MP4 Content-Type %q, Content-Disposition %q", ct, cd)
		}
		if resp, _ := playbackGet(t, asset.Playback.Poster); resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
			t.Errorf("poster: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}

		// A token minted by the API works too.
		var minted struct {
			Token     string    `json:"token"`
			ExpiresAt time.Time `json:"expires_at"`
			HLS       string    `json:"hls"`
		}
		if code := s.do(t, http.MethodPost, "/v1/assets/"+up.AssetID+"/playback-token", strings.NewReader(`{"ttl_seconds": 120}`),
			"application/json", &minted); code != http.StatusOK {
			t.Fatalf("mint token: %d", code)
		}
		if d := time.Until(minted.ExpiresAt); d < 100*time.Second || d > 130*time.Second {
			t.Errorf("minted token expires in %v", d)
		}
		if resp, body := playbackGet(t, minted.HLS); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "?token="+minted.Token) {
			t.Errorf("minted HLS URL: %d\n%s", resp.StatusCode, body)
		}
	})

	t.Run("proxy", func(t *testing.T) { proxyPlayback(t, s, asset) })
}

// proxyPlayback serves the real outputs of a ready asset through a
// proxy-mode catalog of its own (SQLite in a temp dir, the stack's object
// store), and plays, ranges and revalidates through it.
func proxyPlayback(t *testing.T, s stack, asset assetView) {
	objects, err := objstore.New(s.S3)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := objects.List(t.Context(), s.Outputs, layout.AssetPrefix(asset.ID))
	if err != nil {
		t.Fatal(err)
	}
	playlists := map[string]string{}
	var mp4 objstore.Info
	for _, in := range infos {
		switch {
		case strings.HasSuffix(in.Key, "/index.m3u8"):
			playlists[path.Base(path.Dir(in.Key))] = in.Key
		case strings.Contains(in.Key, "/mp4/") && strings.HasSuffix(in.Key, ".mp4") && in.Size > mp4.Size:
			mp4 = in
		}
	}
	outputs := &kilnv1.AssetOutputs{Bucket: s.Outputs, Prefix: layout.AssetPrefix(asset.ID),
		Mp4Key: mp4.Key, PosterKey: layout.PosterKey(asset.ID)}
	for _, r := range asset.Renditions {
		outputs.Renditions = append(outputs.Renditions, &kilnv1.Rendition{Name: r.Name, Width: int32(r.Width), Height: int32(r.Height),
			FrameRate: r.FrameRate, Bandwidth: r.Bandwidth, AverageBandwidth: r.AverageBandwidth, Codecs: r.Codecs,
			PlaylistKey: playlists[r.Name]})
	}
	if mp4.Key == "" || len(playlists) != len(asset.Renditions) {
		t.Fatalf("outputs of %s: mp4 %q, playlists %v", asset.ID, mp4.Key, playlists)
	}

	store, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "catalog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	jobID := jobid.JobOf(asset.ID)
	for _, ev := range []*kilnv1.JobEvent{
		{EventId: jobID + "/q", JobId: jobID, AssetId: asset.ID, State: kilnv1.JobState_JOB_STATE_QUEUED,
			PlaybackPolicy: policy.Signed, Time: timestamppb.Now()},
		{EventId: jobID + "/r", JobId: jobID, AssetId: asset.ID, State: kilnv1.JobState_JOB_STATE_READY,
			Outputs: outputs, Time: timestamppb.Now()},
	} {
		if _, err := store.Apply(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	key := []byte("e2e-proxy-signing-key-0123456789")
	var handler http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	defer srv.Close()
	svc, err := catalog.New(catalog.Config{Store: store, Objects: objects, PublicURL: srv.URL,
		APIKeys: httpapi.NewKeys([]string{"e2e"}), Logger: zaptest.NewLogger(t), SigningKey: key, Delivery: catalog.DeliveryProxy,
		SourcesBucket: s.Sources, OutputsBucket: s.Outputs})
	if err != nil {
		t.Fatal(err)
	}
	handler = svc.Handler()

	q := "?token=" + catalog.MintToken(key, asset.ID, time.Now().Add(time.Hour))
	play := srv.URL + "/v1/play/" + asset.ID
	decode(t, play+"/master.m3u8"+q, "-map", "0")
	decode(t, play+"/download.mp4"+q)
	wantDenied(t, play+"/download.mp4", catalog.CodeTokenRequired)

	noRedirect := func(resp *http.Response) {
		t.Helper()
		if resp.Request.URL.Host != strings.TrimPrefix(srv.URL, "http://") {
			t.Errorf("proxy mode sent the client to %s", resp.Request.URL)
		}
	}
	size := strconv.FormatInt(mp4.Size, 10)
	resp, body := playbackGet(t, play+"/download.mp4"+q, "Range", "bytes=0-99")
	noRedirect(resp)
	if resp.StatusCode != http.StatusPartialContent || len(body) != 100 || resp.Header.Get("Content-Range") != "bytes 0-99/"+size ||
		resp.Header.Get("Content-Type") != "video/mp4" || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "private, max-age=") {
		t.Errorf("range: %d, %d bytes, headers %v", resp.StatusCode, len(body), resp.Header)
	}
	resp, _ = playbackGet(t, play+"/download.mp4"+q, "Range", "bytes="+size+"-")
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != "bytes */"+size {
		t.Errorf("unsatisfiable range: %d, Content-Range %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	resp, body = playbackGet(t, play+"/download.mp4"+q)
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusOK || fmt.Sprint(len(body)) != size || etag == "" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("download: %d, %d bytes of %s, ETag %q", resp.StatusCode, len(body), size, etag)
	}
	if resp, _ := playbackGet(t, play+"/download.mp4"+q, "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	resp, body = playbackGet(t, play+"/"+asset.Renditions[0].Name+"/init.mp4"+q)
	noRedirect(resp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "video/mp4" || len(body) == 0 {
		t.Errorf("init segment: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, _ := playbackGet(t, play+"/"+asset.Renditions[0].Name+"/init.mp4"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("init segment without token: %d", resp.StatusCode)
	}
}
