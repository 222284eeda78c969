package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/packager/hlscheck"
)

// TestHLSConformance validates kiln's real HLS output through the catalog's
// playback URLs (playlists served, segments by presigned redirect): every
// RFC 8216 / Apple authoring rule hlscheck knows, measured bit rates, and
// ffprobe on every segment (IDR at the start, aligned across variants,
// CODECS and RESOLUTION matching the streams).
func TestHLSConformance(t *testing.T) {
	s := needStack(t)
	clip := makeClip(t, "hls.mp4", 7, "640x360")
	code, up, _ := s.uploadMultipart(t, clip, "")
	if code != http.StatusAccepted {
		t.Fatalf("upload: status %d", code)
	}
	job := s.waitJob(t, up.JobID, jobTimeout)
	if job.State != "ready" {
		t.Fatalf("job ended %q: %+v", job.State, job.Error)
	}
	var asset assetView
	if code := s.do(t, http.MethodGet, "/v1/assets/"+up.AssetID, nil, "", &asset); code != http.StatusOK {
		t.Fatalf("GET asset: %d", code)
	}
	if asset.Playback == nil || asset.Playback.HLS == "" {
		t.Fatalf("asset not playable: %+v", asset)
	}

	client := &http.Client{Timeout: 30 * time.Second}
	report, err := hlscheck.CheckMaster(t.Context(), hlscheck.Config{
		Fetcher:         hlscheck.HTTPFetcher{Client: client},
		InspectSegments: true,
	}, asset.Playback.HLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d variants, %d segments", asset.Playback.HLS, report.Variants, report.Segments)
	if err := report.Err(); err != nil {
		t.Fatal(err)
	}
	// 640x360 gives three rungs and the audio; 7 s gives four segments
	// each: three of one GOP (2 s) first, then what is left.
	if report.Variants != len(asset.Renditions) || report.Variants != 4 || report.Segments != 4*report.Variants {
		t.Fatalf("checked %d variants and %d segments; the asset has %d renditions", report.Variants, report.Segments, len(asset.Renditions))
	}
}
