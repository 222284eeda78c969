package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// KilnBinEnv names a kiln binary to use as is instead of building one (the
// same variable deploy/local/stack.sh honours).
const KilnBinEnv = "KILN_BIN"

var kiln struct {
	mu  sync.Mutex
	bin string // built binary, once per test binary
	dir string // its temp folder, removed by Main
}

// BuildKiln returns the path of a kiln binary: $KILN_BIN when set, or
// ./cmd/kiln built once per test binary into a temp folder (later calls,
// from any test, reuse it). A package that calls BuildKiln should run its
// tests through Main, which removes that folder at the end.
func BuildKiln(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv(KilnBinEnv); bin != "" {
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			tb.Fatalf("%s=%s is not an executable file (%v)", KilnBinEnv, bin, err)
		}
		return bin
	}
	kiln.mu.Lock()
	defer kiln.mu.Unlock()
	if kiln.bin != "" {
		return kiln.bin
	}
	RequireBinaries(tb, "go")
	dir, err := os.MkdirTemp("", "kiln-testenv-")
	if err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, "kiln")
	// By import path: the test's working directory (its package folder) is
	// inside the module, wherever the module is.
	cmd := exec.CommandContext(tb.Context(), "go", "build", "-o", bin, "github.com/kilnvideo/kiln/cmd/kiln")
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		tb.Fatalf("go build ./cmd/kiln: %v\n%s", err, out)
	}
	kiln.bin, kiln.dir = bin, dir
	return bin
}

// Main runs the tests of m and removes what the package left behind (the
// kiln binary of BuildKiln), then exits. Use it as TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	kiln.mu.Lock()
	if kiln.dir != "" {
		_ = os.RemoveAll(kiln.dir)
	}
	kiln.mu.Unlock()
	os.Exit(code)
}
