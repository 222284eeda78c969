package hlscheck

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// mapFetcher serves fixed bytes by URI.
type mapFetcher map[string][]byte

func (m mapFetcher) Fetch(_ context.Context, uri string) ([]byte, error) {
	if b, ok := m[uri]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%s: %w", uri, fs.ErrNotExist)
}

func mediaText(target int, durs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n", target)
	for i, d := range durs {
		fmt.Fprintf(&b, "#EXTINF:%s,\nseg_%05d.m4s\n", d, i)
	}
	b.WriteString("#EXT-X-ENDLIST\n")
	return b.String()
}

// ladder is a two-variant asset: "lo" at 600 kb/s peak (6 s of 450 kB, 1 s
// of 50 kB: average 571 428 b/s), "hi" at twice that.
func ladder(base string) mapFetcher {
	m := mapFetcher{
		base + "/master.m3u8": []byte(`#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=600000,AVERAGE-BANDWIDTH=571429,CODECS="avc1.64000c,mp4a.40.2",RESOLUTION=160x90,FRAME-RATE=30.000
lo/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=1200000,AVERAGE-BANDWIDTH=1142858,CODECS="avc1.64000d,mp4a.40.2",RESOLUTION=320x180,FRAME-RATE=30.000
hi/index.m3u8
`),
		base + "/lo/index.m3u8":    []byte(mediaText(6, "6.000000", "1.000000")),
		base + "/lo/init.mp4":      make([]byte, 800),
		base + "/lo/seg_00000.m4s": make([]byte, 450_000),
		base + "/lo/seg_00001.m4s": make([]byte, 50_000),
		base + "/hi/index.m3u8":    []byte(mediaText(6, "6.000000", "1.000000")),
		base + "/hi/init.mp4":      make([]byte, 800),
		base + "/hi/seg_00000.m4s": make([]byte, 900_000),
		base + "/hi/seg_00001.m4s": make([]byte, 100_000),
	}
	return m
}

func TestCheckMasterRules(t *testing.T) {
	const base = "/assets/a"
	replaceMaster := func(old, new string) func(mapFetcher) {
		return func(m mapFetcher) {
			m[base+"/master.m3u8"] = []byte(strings.Replace(string(m[base+"/master.m3u8"]), old, new, 1))
		}
	}
	tests := []struct {
		name   string
		change func(mapFetcher)
		want   string
	}{
		{"good", func(mapFetcher) {}, ""},
		{"declared peak below 90% of measured", replaceMaster("BANDWIDTH=1200000,AVERAGE-BANDWIDTH=1142858", "BANDWIDTH=1070000,AVERAGE-BANDWIDTH=1040000"), RuleVariantBandwidth},
		{"declared peak within 10%", replaceMaster("BANDWIDTH=1200000,AVERAGE-BANDWIDTH=1142858", "BANDWIDTH=1090000,AVERAGE-BANDWIDTH=1040000"), ""},
		{"declared average 21% low", replaceMaster("AVERAGE-BANDWIDTH=1142858", "AVERAGE-BANDWIDTH=900000"), RuleVariantAverageBandwidth},
		{"declared average 9% high", replaceMaster("AVERAGE-BANDWIDTH=571429", "AVERAGE-BANDWIDTH=600000"), ""},
		{"target duration differs", func(m mapFetcher) { m[base+"/hi/index.m3u8"] = []byte(mediaText(7, "6.000000", "1.000000")) }, RuleVariantsTargetDuration},
		{"segment count differs", func(m mapFetcher) {
			m[base+"/hi/index.m3u8"] = []byte(mediaText(6, "6.000000", "0.500000", "0.500000"))
			m[base+"/hi/seg_00001.m4s"] = make([]byte, 50_000)
			m[base+"/hi/seg_00002.m4s"] = make([]byte, 50_000)
		}, RuleVariantsSegmentCount},
		{"durations differ by 2 ms", func(m mapFetcher) { m[base+"/hi/index.m3u8"] = []byte(mediaText(6, "6.002000", "0.998000")) }, RuleVariantsSegmentDurations},
		{"durations differ by 1 ms", func(m mapFetcher) { m[base+"/hi/index.m3u8"] = []byte(mediaText(6, "6.001000", "0.999000")) }, ""},
		{"variant playlist missing", func(m mapFetcher) { delete(m, base+"/hi/index.m3u8") }, RuleMediaFetch},
		{"segment missing", func(m mapFetcher) { delete(m, base+"/hi/seg_00001.m4s") }, RuleSegmentFetch},
		{"media rule reported with the variant", func(m mapFetcher) {
			m[base+"/hi/index.m3u8"] = []byte(strings.Replace(mediaText(6, "6.000000", "1.000000"), "#EXT-X-ENDLIST\n", "", 1))
		}, RuleMediaEndlist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ladder(base)
			tt.change(m)
			r, err := CheckMaster(t.Context(), Config{Fetcher: m}, base+"/master.m3u8")
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			if tt.want != "" {
				want = []string{tt.want}
			}
			if got := r.Rules(); !slices.Equal(got, want) {
				t.Fatalf("rules = %v, want %v\n%v", got, want, r.Err())
			}
			if (r.Err() == nil) != (tt.want == "") {
				t.Fatalf("Err() = %v", r.Err())
			}
			if tt.want == "" && (r.Variants != 2 || r.Segments < 4) {
				t.Fatalf("variants %d segments %d", r.Variants, r.Segments)
			}
			for _, p := range r.Problems {
				if p.URI == "" || p.Detail == "" {
					t.Errorf("problem without URI or detail: %+v", p)
				}
			}
		})
	}
}

func TestCheckMasterUnreadable(t *testing.T) {
	if _, err := CheckMaster(t.Context(), Config{Fetcher: mapFetcher{}}, "/nope/master.m3u8"); err == nil {
		t.Fatal("no error for a missing master playlist")
	}
}

func TestCheckMasterPlaylistProblemsGetTheMasterURI(t *testing.T) {
	m := ladder("/a")
	m["/a/master.m3u8"] = []byte(strings.Replace(string(m["/a/master.m3u8"]), "#EXT-X-INDEPENDENT-SEGMENTS\n", "", 1))
	r, err := CheckMaster(t.Context(), Config{Fetcher: m}, "/a/master.m3u8")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || r.Problems[0].Rule != RuleMasterIndependent || r.Problems[0].URI != "/a/master.m3u8" {
		t.Fatalf("problems = %+v", r.Problems)
	}
	if !strings.Contains(r.Err().Error(), RuleMasterIndependent) {
		t.Fatalf("Err() = %v", r.Err())
	}
}

// TestHTTPFetcher: redirects are followed, the playlist's query string is
// not carried over to segments, non-2xx answers are errors.
func TestHTTPFetcher(t *testing.T) {
	m := ladder("")
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.RequestURI())
		if strings.HasPrefix(r.URL.Path, "/play/") { // like kiln's presigned redirects
			http.Redirect(w, r, "/store/"+strings.TrimPrefix(r.URL.Path, "/play/")+"?sig=1", http.StatusFound)
			return
		}
		b, ok := m["/"+strings.TrimPrefix(r.URL.Path, "/store/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	defer srv.Close()

	r, err := CheckMaster(t.Context(), Config{Fetcher: HTTPFetcher{Client: srv.Client()}}, srv.URL+"/play/master.m3u8?token=abc")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Variants != 2 || r.Segments != 4 {
		t.Fatalf("variants %d segments %d", r.Variants, r.Segments)
	}
	if !slices.Contains(seen, "/play/lo/index.m3u8") || slices.Contains(seen, "/play/lo/index.m3u8?token=abc") {
		t.Errorf("requests = %v", seen)
	}
	if _, err := (HTTPFetcher{}).Fetch(t.Context(), srv.URL+"/store/missing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: err = %v", err)
	}
}
