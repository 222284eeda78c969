package catalog

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/grafov/m3u8"

	"github.com/kilnvideo/kiln/catalog/eventtest"
	"github.com/kilnvideo/kiln/internal/layout"
	kilnv1 "github.com/kilnvideo/kiln/proto/kiln/v1"
)

// eventPlaylist is a media playlist of a rendition still being encoded:
// EXT-X-PLAYLIST-TYPE:EVENT, no EXT-X-ENDLIST, relative URIs, n segments.
func eventPlaylist(n int) string {
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:1\n" +
		"#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n")
	for i := 1; i <= n; i++ {
		b.WriteString("#EXTINF:6.000000,\n" + segName(i) + "\n")
	}
	return b.String()
}

// segName is the name of media segment n (seg_00001.m4s).
func segName(n int) string { return fmt.Sprintf("seg_%05d.m4s", n) }

// playableFixture is a playback fixture with a job whose transcode is
// under way, fed through HandleEvent as the bus would.
func playableFixture(t *testing.T, mut func(*Config)) (f *playbackFixture, jobID, assetID string) {
	t.Helper()
	f = newPlaybackFixture(t, func(c *Config) {
		c.SourcesBucket, c.OutputsBucket = eventtest.SourcesBucket, eventtest.OutputsBucket
		if mut != nil {
			mut(c)
		}
	})
	jobID, assetID = testJob("playable-" + t.Name())
	for _, name := range []string{"720p", "360p", layout.AudioRendition} {
		f.objects["outputs/"+layout.PlaylistKey(assetID, name)] = []byte(eventPlaylist(1))
		f.objects["outputs/"+layout.SegmentKey(assetID, name, "init.mp4")] = []byte("init-" + name)
		f.objects["outputs/"+layout.SegmentKey(assetID, name, segName(1))] = []byte("segment-" + name)
	}
	f.handle(t, event(jobID, queued, 0), event(jobID, probing, 0))
	return f, jobID, assetID
}

func (f *playbackFixture) handle(t *testing.T, evs ...*kilnv1.JobEvent) {
	t.Helper()
	for _, ev := range evs {
		if err := f.svc.HandleEvent(t.Context(), ev); err != nil {
			t.Fatalf("HandleEvent(%v): %v", ev.GetState(), err)
		}
	}
}

// TestPlayableBeforeReady: from the playable event on, the asset plays —
// master with the audio group, EVENT media playlists, segments — with
// short cache lifetimes, and the download answers 409 until it is built.
func TestPlayableBeforeReady(t *testing.T) {
	f, jobID, asset := playableFixture(t, nil)
	play := "/v1/play/" + asset
	for _, p := range []string{"/master.m3u8", "/720p/index.m3u8", "/audio/init.mp4", "/download.mp4"} {
		if rec := f.get(t, play+p); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s of a probing job = %d, want 404", p, rec.Code)
		}
	}

	f.handle(t, eventtest.Playable(jobID))
	rec := f.get(t, play+"/master.m3u8")
	if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "public, max-age=2" {
		t.Fatalf("master while encoding: %d, Cache-Control %q\n%s", rec.Code, rec.Header().Get("Cache-Control"), rec.Body)
	}
	master := m3u8.NewMasterPlaylist()
	if err := master.DecodeFrom(bytes.NewReader(rec.Body.Bytes()), true); err != nil {
		t.Fatalf("master: %v\n%s", err, rec.Body)
	}
	if len(master.Variants) != 2 {
		t.Fatalf("master has %d variants, want 2 video variants and the audio group:\n%s", len(master.Variants), rec.Body)
	}
	v := master.Variants[0] // 360p, the lowest
	if v.URI != "360p/index.m3u8" || v.Audio != "audio" || v.Codecs != "avc1.64001e,mp4a.40.2" || v.Bandwidth != 880_000+140_000 ||
		len(v.Alternatives) != 1 || v.Alternatives[0].URI != "audio/index.m3u8" {
		t.Errorf("first variant = %s %+v\n%s", v.URI, v.VariantParams, rec.Body)
	}

	for _, name := range []string{"720p", "360p", "audio"} {
		rec := f.get(t, play+"/"+name+"/index.m3u8")
		if rec.Code != http.StatusOK {
			t.Fatalf("%s media playlist: %d %s", name, rec.Code, rec.Body)
		}
		if maxAge := cacheMaxAge(t, rec.Header().Get("Cache-Control")); maxAge > 3*time.Second || maxAge <= 0 {
			t.Errorf("%s EVENT playlist: Cache-Control %q, want at most half the 6 s target duration", name, rec.Header().Get("Cache-Control"))
		}
		body := rec.Body.String()
		if !strings.Contains(body, "#EXT-X-PLAYLIST-TYPE:EVENT") || strings.Contains(body, "ENDLIST") ||
			!strings.Contains(body, "https://s3.test/outputs/"+layout.SegmentKey(asset, name, segName(1))) {
			t.Errorf("%s media playlist:\n%s", name, body)
		}
	}
	if rec := f.get(t, play+"/audio/"+segName(1)); rec.Code != http.StatusFound {
		t.Errorf("audio segment = %d, want 302", rec.Code)
	}
	rec = f.get(t, play+"/download.mp4")
	if rec.Code != http.StatusConflict || errorCode(t, rec) != CodeDownloadNotReady {
		t.Errorf("download while encoding = %d %s, want 409 %s", rec.Code, rec.Body, CodeDownloadNotReady)
	}
	if rec := f.get(t, play+"/poster.jpg"); rec.Code != http.StatusNotFound {
		t.Errorf("poster of a playable asset without one = %d, want 404", rec.Code)
	}

	// The playlist grows: a player sees the next segment within the
	// playlist's max-age, never later.
	key := "outputs/" + layout.PlaylistKey(asset, "720p")
	f.objects[key] = []byte(eventPlaylist(2))
	next := segName(2)
	f.now = f.now.Add(livePlaylistMaxAge)
	if body := f.get(t, play+"/720p/index.m3u8").Body.String(); !strings.Contains(body, next) {
		t.Errorf("%s after the playlist's max-age: still the stale playlist:\n%s", next, body)
	}

	// READY: measured bandwidths, VOD playlists at once (a new generation,
	// whatever the cache held), long lifetimes; the download follows.
	vod := strings.Replace(eventPlaylist(2), "EVENT", "VOD", 1) + "#EXT-X-ENDLIST\n"
	for _, name := range []string{"720p", "360p", "audio"} {
		f.objects["outputs/"+layout.PlaylistKey(asset, name)] = []byte(vod)
	}
	rd := event(jobID, ready, 0)
	rd.Outputs = eventtest.Playable(jobID).Outputs
	rd.Outputs.Renditions[1].Bandwidth = 900_000
	rd.Outputs.DurationSeconds = 12
	f.handle(t, rd)
	rec = f.get(t, play+"/master.m3u8")
	if rec.Header().Get("Cache-Control") != "public, max-age=60" || !strings.Contains(rec.Body.String(), "BANDWIDTH=1040000,") {
		t.Errorf("master after READY: Cache-Control %q\n%s", rec.Header().Get("Cache-Control"), rec.Body)
	}
	rec = f.get(t, play+"/720p/index.m3u8")
	if !strings.Contains(rec.Body.String(), "#EXT-X-ENDLIST") || cacheMaxAge(t, rec.Header().Get("Cache-Control")) <= livePlaylistMaxAge {
		t.Errorf("media playlist after READY: Cache-Control %q\n%s", rec.Header().Get("Cache-Control"), rec.Body)
	}
	if rec := f.get(t, play+"/download.mp4"); rec.Code != http.StatusConflict {
		t.Errorf("download after READY, before it is built = %d, want 409", rec.Code)
	}
	dl := eventtest.Download(jobID)
	f.objects["outputs/"+dl.Outputs.Mp4Key] = f.mp4
	f.handle(t, dl, eventtest.Download(jobID))
	if rec := f.get(t, play+"/download.mp4"); rec.Code != http.StatusFound ||
		!strings.Contains(rec.Header().Get("Location"), dl.Outputs.Mp4Key) {
		t.Errorf("download once built = %d %q, want 302 to it", rec.Code, rec.Header().Get("Location"))
	}
}

// TestPlayableProxyDelivery: proxied EVENT playlists are short-lived too.
func TestPlayableProxyDelivery(t *testing.T) {
	f, jobID, asset := playableFixture(t, func(c *Config) { c.Delivery = DeliveryProxy })
	f.handle(t, eventtest.Playable(jobID))
	rec := f.get(t, "/v1/play/"+asset+"/audio/index.m3u8")
	if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "public, max-age=2" {
		t.Fatalf("proxied EVENT playlist: %d, Cache-Control %q", rec.Code, rec.Header().Get("Cache-Control"))
	}
	if rec := f.get(t, "/v1/play/"+asset+"/audio/init.mp4"); rec.Code != http.StatusOK || rec.Body.String() != "init-audio" {
		t.Errorf("proxied init segment: %d %q", rec.Code, rec.Body)
	}
}

// TestPlayableThenFailed: a job that fails after its playable event plays
// no more.
func TestPlayableThenFailed(t *testing.T) {
	f, jobID, asset := playableFixture(t, nil)
	f.handle(t, eventtest.Playable(jobID))
	if rec := f.get(t, "/v1/play/"+asset+"/master.m3u8"); rec.Code != http.StatusOK {
		t.Fatalf("master = %d", rec.Code)
	}
	f.handle(t, event(jobID, failed, 0))
	for _, p := range []string{"/master.m3u8", "/720p/index.m3u8", "/audio/init.mp4"} {
		if rec := f.get(t, "/v1/play/"+asset+p); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s of a failed job = %d, want 404", p, rec.Code)
		}
	}
}
