package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// p6 compares the master playlist requests per second the catalog serves
// (generated from its state on each request) with nginx serving a static
// copy of the same bytes, under the same load generator: net/http,
// keep-alive, s.sc.concurrency clients, s.sc.loadFor per run, alternated.
func (s *suite) p6(b *testing.B) []Row {
	st := s.stack(b)
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			testenv.Missing(b, "nginx not found (Debian package nginx-light; `stack.sh bench` installs it)")
		}
		nginx = "/usr/sbin/nginx"
	}
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	st.idle(b)
	up, err := st.api.uploadFile(ctx, s.clip1080(b, 2))
	if err != nil {
		b.Fatal(err)
	}
	if j, _, err := st.api.wait(ctx, up.JobID); err != nil || j.State != "ready" {
		b.Fatalf("job %s: %s %+v %v", up.JobID, j.State, j.Error, err)
	}
	masterURL := st.api.base + "/v1/play/" + up.AssetID + "/master.m3u8"
	master, ok, err := st.api.get(ctx, masterURL)
	if err != nil || !ok {
		b.Fatalf("GET %s: %v (status not 200: %v)", masterURL, err, !ok)
	}

	dir, err := os.MkdirTemp("", "kiln-bench-nginx-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	// nginx's workers run as nobody when it is started as root.
	www := filepath.Join(dir, "www")
	for _, d := range []string{dir, www, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(www, "master.m3u8"), []byte(master), 0o644); err != nil {
		b.Fatal(err)
	}
	addr := testenv.FreeAddr(b)
	conf := fmt.Sprintf(`worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	types { application/vnd.apple.mpegurl m3u8; }
	keepalive_requests 100000000;
	keepalive_timeout 75s;
	client_body_temp_path %[1]s/tmp;
	server {
		listen %[2]s;
		root %[1]s/www;
	}
}
`, dir, addr)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	p := testenv.NewProc(b, "nginx", filepath.Join(dir, "logs"), nil, nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	staticURL := "http://" + addr + "/master.m3u8"
	p.SetReady(testenv.HTTPReady(staticURL))
	if err := p.StartReady(30 * time.Second); err != nil {
		b.Fatal(err)
	}

	run := func(u string) func(int) float64 {
		return func(int) float64 {
			n, err := load(b.Context(), u, []byte(master), s.sc.concurrency, s.sc.loadFor)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	// Warm both up (connections, caches) before anything counts.
	for _, u := range []string{masterURL, staticURL} {
		if _, err := load(b.Context(), u, []byte(master), s.sc.concurrency, s.sc.loadFor/4); err != nil {
			b.Fatal(err)
		}
	}
	v := alternate(b, Rounds, []string{"catalog", "nginx"}, run(masterURL), run(staticURL))
	r := Row{ID: "P6", Name: fmt.Sprintf("master playlist requests/s (%d B, %d clients, keep-alive)", len(master), s.sc.concurrency),
		A: "catalog", B: "nginx", Unit: "req/s", ASamp: v[0], BSamp: v[1], RatioOf: "A/B", Target: "≥ 0.5",
		Note: fmt.Sprintf("nginx-light %s serving a static copy of the same bytes; one Go load generator (bench/playlist_test.go load), %s per run, on the same machine",
			nginxVersion(nginx), s.sc.loadFor)}
	r.AMed, r.BMed = median(r.ASamp), median(r.BSamp)
	r.Ratio = ptr(r.AMed / r.BMed)
	r.Met = ptr(*r.Ratio >= 0.5)
	return []Row{r}
}

func nginxVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	_, v, _ := strings.Cut(strings.TrimSpace(string(out)), "nginx/")
	return v
}

// load has clients keep-alive connections GET u for d, each answer read
// whole and checked against want, and returns the answers per second.
func load(ctx context.Context, u string, want []byte, clients int, d time.Duration) (float64, error) {
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients,
		DisableCompression: true, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		n     atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			buf := bytes.NewBuffer(make([]byte, 0, len(want)+512))
			for time.Now().Before(deadline) {
				err := func() error {
					req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
					if err != nil {
						return err
					}
					resp, err := hc.Do(req)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					buf.Reset()
					if _, err := io.Copy(buf, resp.Body); err != nil {
						return err
					}
					if resp.StatusCode != http.StatusOK || !bytes.Equal(buf.Bytes(), want) {
						return fmt.Errorf("GET %s: %s, %d bytes (want 200 and the %d bytes of the master)", u, resp.Status, buf.Len(), len(want))
					}
					return nil
				}()
				if err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}
