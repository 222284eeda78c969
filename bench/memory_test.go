package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// p5Ingest measures the peak RSS of an ingest process (`kiln ingest`,
// attached to the stack, alone in its process so the number is ingest's)
// while it streams a generated upload of s.sc.uploadBytes to S3. The bytes
// come from a seeded ChaCha8 stream, never from a file; the job that
// follows fails at the probe (they are not media), and its asset is
// deleted to give the space back.
func (s *suite) p5Ingest(b *testing.B) []Row {
	st := s.stack(b) // the worker fails the job, so that it can be deleted
	kiln := testenv.BuildKiln(b)
	addr := testenv.FreeAddr(b)
	env := append(roleEnv(st.env, st.natsURL, "ingest", os.Getenv(testenv.NATSPasswordEnv("ingest"))),
		"KILN_API_KEYS="+st.env.APIKey,
		"KILN_HTTP_ADDR="+addr, "KILN_PUBLIC_URL=http://"+addr,
		"KILN_MAX_UPLOAD_BYTES="+strconv.FormatInt(s.sc.uploadBytes+1<<20, 10),
		"KILN_LOG_LEVEL=info")
	logs := filepath.Join(st.data, "logs")
	p := testenv.NewProc(b, "ingest", logs, env, kiln, "ingest")
	p.SetReady(testenv.HTTPReady("http://" + addr + "/readyz"))
	if err := p.StartReady(90 * time.Second); err != nil {
		b.Fatal(err)
	}
	pid := p.Pid()
	startHWM := status(pid, "VmHWM")

	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Minute)
	defer cancel()
	body := io.LimitReader(rand.NewChaCha8([32]byte{'k', 'i', 'l', 'n'}), s.sc.uploadBytes)
	start := time.Now()
	up, err := st.api.upload(ctx, "http://"+addr, body, s.sc.uploadBytes, "random.mp4")
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	hwm := status(pid, "VmHWM")
	// What the peak is made of, right after it: the process's own memory
	// (heap, stacks) and the pages of the binary it touched.
	anon, file := status(pid, "RssAnon"), status(pid, "RssFile")
	b.Logf("ingest streamed %d MiB in %s (%.0f MiB/s); VmHWM %d MiB (%d MiB after start); now RssAnon %d MiB, RssFile %d MiB",
		s.sc.uploadBytes/mib, took.Round(time.Millisecond), float64(s.sc.uploadBytes)/mib/took.Seconds(), hwm/mib, startHWM/mib, anon/mib, file/mib)

	j, _, err := st.api.wait(ctx, up.JobID)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.api.do(ctx, http.MethodDelete, "/v1/assets/"+up.AssetID, nil); err != nil {
		b.Logf("delete the upload's asset (job %s): %v", j.State, err)
	}
	r := Row{ID: "P5", Name: fmt.Sprintf("peak RSS, ingest streaming a %s generated upload (VmHWM)", size(s.sc.uploadBytes)),
		A: "kiln ingest", Unit: "MiB", AMed: float64(hwm) / mib, ASamp: []float64{float64(hwm) / mib}, Target: "≤ 64 MiB",
		Note: fmt.Sprintf("a separate `kiln ingest` on the stack; VmHWM %.0f MiB after start; right after the upload RssAnon %.0f MiB, "+
			"RssFile %.0f MiB (the binary's pages); %.0f MiB/s streamed; the job then ended %s (%v)",
			float64(startHWM)/mib, float64(anon)/mib, float64(file)/mib, float64(s.sc.uploadBytes)/mib/took.Seconds(), j.State, errCode(j))}
	r.Met = ptr(r.AMed <= 64)
	return []Row{r}
}

func errCode(j job) string {
	if j.Error == nil {
		return "no error"
	}
	return j.Error.Code
}

func size(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%g GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%d MiB", n/mib)
}
