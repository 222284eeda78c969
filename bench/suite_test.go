// Package bench holds kiln's benchmark suite (README, "Performance"). Every
// comparison measures kiln's way and a baseline in the same run, sides
// alternated A, B, A, B…, and reports their medians and ratio, because
// these machines are too noisy for absolute numbers; no benchmark asserts a
// time. Run it with `go tool task bench` (deploy/local/stack.sh bench),
// which starts the stack and runs BenchmarkSuite once; it prints one table
// and writes results/<date>.json and .md.
package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/kilnvideo/kiln/internal/testenv"
)

// TestMain removes the kiln binary testenv.BuildKiln may have built.
func TestMain(m *testing.M) { testenv.Main(m) }

// QuickEnv set to 1 runs the suite on short clips and small counts, to try
// the harness; its results are written as results/<date>-quick.*.
const QuickEnv = "KILN_BENCH_QUICK"

// Rounds is how many times each side of a comparison runs, alternated.
const Rounds = 3

// scale is what one run of the suite measures: the full suite, or the
// reduced one of QuickEnv.
type scale struct {
	quick bool
	// P1 and P2: the 1080p30 clips; P2 alternates the short and the long one.
	e2eSeconds, longSeconds float64
	// P3: the 1080p clip encoded both ways.
	ladderSeconds float64
	// P5: bytes streamed to ingest.
	uploadBytes int64
	// P6: how long each side is loaded, and by how many clients.
	loadFor     time.Duration
	concurrency int
	// P7: how many one-second clips.
	clips int
	// P4: the 1080p clip encoded whole and in chunks.
	chunkSeconds float64
}

func scaleFromEnv() scale {
	if os.Getenv(QuickEnv) == "1" {
		return scale{quick: true, e2eSeconds: 8, longSeconds: 16, ladderSeconds: 4,
			uploadBytes: 512 << 20, loadFor: 2 * time.Second, concurrency: 16, clips: 8, chunkSeconds: 14}
	}
	return scale{e2eSeconds: 60, longSeconds: 300, ladderSeconds: 12,
		uploadBytes: 4 << 30, loadFor: 5 * time.Second, concurrency: 16, clips: 50, chunkSeconds: 30}
}

// Row is one line of the results table. Side A is kiln's unless said
// otherwise; Ratio and Met are nil where they do not apply.
type Row struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	A       string    `json:"side_a"`
	B       string    `json:"side_b,omitempty"`
	Unit    string    `json:"unit"`
	AMed    float64   `json:"side_a_median"`
	BMed    float64   `json:"side_b_median,omitempty"`
	ASamp   []float64 `json:"side_a_samples,omitempty"`
	BSamp   []float64 `json:"side_b_samples,omitempty"`
	Ratio   *float64  `json:"ratio,omitempty"`
	RatioOf string    `json:"ratio_of,omitempty"` // how the ratio is computed, e.g. "A/B"
	Target  string    `json:"target"`
	Met     *bool     `json:"met,omitempty"`
	Note    string    `json:"note,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// median of xs (NaN when empty).
func median(xs []float64) float64 { return quantile(xs, 0.5) }

// quantile of xs by linear interpolation between closest ranks.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// alternate runs the sides in turn, A, B, A, B…, rounds times each, and
// returns each side's samples. A side returns one measurement.
func alternate(b *testing.B, rounds int, names []string, sides ...func(round int) float64) [][]float64 {
	b.Helper()
	out := make([][]float64, len(sides))
	for i := range rounds {
		var line []string
		for s, side := range sides {
			v := side(i)
			line = append(line, fmt.Sprintf("%s %.4g", names[s], v))
			out[s] = append(out[s], v)
		}
		// One line a round: go test keeps only a benchmark's first lines.
		b.Logf("round %d/%d: %s", i+1, rounds, strings.Join(line, ", "))
	}
	return out
}

// Results is what one run of the suite writes.
type Results struct {
	Date     string    `json:"date"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Quick    bool      `json:"quick"`
	Commit   string    `json:"commit"`
	Machine  Machine   `json:"machine"`
	Command  string    `json:"command"`
	Rows     []Row     `json:"rows"`
	Complete bool      `json:"complete"` // every benchmark of the suite ran
}

// Machine is what the numbers were measured on.
type Machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	RAMBytes int64  `json:"ram_bytes"`
	Go       string `json:"go"`
	FFmpeg   string `json:"ffmpeg"`
	Kernel   string `json:"kernel"`
	OS       string `json:"os"`
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.RAMBytes = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if out, err := exec.Command("ffmpeg", "-hide_banner", "-version").Output(); err == nil {
		m.FFmpeg, _, _ = strings.Cut(string(out), "\n")
	}
	return m
}

func commit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// BenchmarkSuite runs every benchmark once (each alternates its sides
// Rounds times), prints the table and, when all of them ran, writes
// results/<date>.json and .md. `-bench Suite/P6` runs one of them.
func BenchmarkSuite(b *testing.B) {
	sc := scaleFromEnv()
	res := Results{Started: time.Now().UTC(), Quick: sc.quick, Commit: commit(), Machine: machine(),
		Command: "go tool task bench"}
	res.Date = res.Started.Format(time.DateOnly)
	if sc.quick {
		res.Command = QuickEnv + "=1 go tool task bench"
	}
	s := newSuite(b, sc)
	benches := []struct {
		name string
		run  func(*testing.B) []Row
	}{
		{"P3", s.p3},
		{"P4", s.p4},
		{"P1_P2", s.p1p2},
		{"P5_ingest", s.p5Ingest},
		{"P6", s.p6},
		{"P7", s.p7},
	}
	ran := 0
	for _, bench := range benches {
		var rows []Row
		if b.Run(bench.name, func(b *testing.B) { rows = bench.run(b) }) && rows != nil {
			ran++
		}
		res.Rows = append(res.Rows, rows...)
	}
	res.Rows = append(res.Rows, s.p5WorkerRow()...)
	slices.SortStableFunc(res.Rows, func(x, y Row) int { return cmp.Compare(x.ID, y.ID) })
	res.Complete = ran == len(benches)
	res.Seconds = time.Since(res.Started).Seconds()
	table := markdownTable(res.Rows)
	fmt.Fprintf(os.Stderr, "\n%s\n", textTable(res.Rows))
	if !res.Complete {
		b.Logf("not every benchmark ran (%d of %d): results not written", ran, len(benches))
		return
	}
	if err := writeResults(res, table); err != nil {
		b.Fatal(err)
	}
}

func resultsBase(res Results) string {
	name := res.Date
	if res.Quick {
		name += "-quick"
	}
	return filepath.Join("results", name)
}

func writeResults(res Results, table string) error {
	base := resultsBase(res)
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", append(js, '\n'), 0o644); err != nil {
		return err
	}
	m := res.Machine
	var md strings.Builder
	fmt.Fprintf(&md, "# kiln benchmarks, %s\n\n", res.Date)
	fmt.Fprintf(&md, "`%s` on commit `%s`, %s UTC, %.0f s in all%s.\n\n", res.Command, res.Commit,
		res.Started.Format("15:04"), res.Seconds, map[bool]string{true: " (quick: short clips, small counts)"}[res.Quick])
	fmt.Fprintf(&md, "| machine | |\n|---|---|\n| CPU | %s |\n| cores | %d |\n| RAM | %.1f GiB |\n| Go | %s |\n| ffmpeg | %s |\n| kernel | %s |\n| OS | %s |\n\n",
		m.CPU, m.Cores, float64(m.RAMBytes)/(1<<30), m.Go, m.FFmpeg, m.Kernel, m.OS)
	fmt.Fprintf(&md, "Each comparison alternates its sides A, B, A, B… %d times each in the same run; "+
		"the table has the medians (every sample is in %s.json).\n\n", Rounds, filepath.Base(base))
	md.WriteString(table)
	md.WriteString("\n")
	for _, r := range res.Rows {
		if r.Note != "" {
			fmt.Fprintf(&md, "- **%s**: %s\n", r.ID, r.Note)
		}
	}
	return os.WriteFile(base+".md", []byte(md.String()), 0o644)
}

// cells are a row's table cells: benchmark, side A, side B, ratio, target, met.
func cells(r Row) []string {
	val := func(side string, v float64) string {
		if side == "" {
			return "—"
		}
		return fmt.Sprintf("%s %s %s", side, num(v), r.Unit)
	}
	ratio, met := "—", "—"
	if r.Ratio != nil {
		ratio = fmt.Sprintf("%.2f (%s)", *r.Ratio, r.RatioOf)
	}
	if r.Met != nil {
		met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
	}
	return []string{r.ID + " " + r.Name, val(r.A, r.AMed), val(r.B, r.BMed), ratio, r.Target, met}
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "n/a"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

var header = []string{"benchmark", "side A (median)", "side B (median)", "ratio", "target", "met?"}

func markdownTable(rows []Row) string {
	var sb strings.Builder
	sb.WriteString("| " + strings.Join(header, " | ") + " |\n|" + strings.Repeat("---|", len(header)) + "\n")
	for _, r := range rows {
		sb.WriteString("| " + strings.Join(cells(r), " | ") + " |\n")
	}
	return sb.String()
}

func textTable(rows []Row) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(cells(r), "\t"))
	}
	_ = tw.Flush()
	return sb.String()
}
