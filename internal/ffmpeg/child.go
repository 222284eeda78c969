package ffmpeg

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// What an ffmpeg or ffprobe child gets from the worker: a minimal
// environment and, when Config.MaxMemory is set, a bound on its memory.
//
// Environment. A child decodes hostile files; whatever it can read, a
// decoder exploit can read too. It gets PATH, HOME and TMPDIR (when the
// worker has them) and nothing else: no KILN_* (API keys, S3 secret,
// signing keys), no AWS_*, no proxy settings. ChildEnv is that list.
//
// Memory. Go's os/exec cannot set a resource limit on a child
// (syscall.SysProcAttr has no rlimit field), and setting one on the child
// after it started (prlimit(2) on its pid) races with its first
// allocations. So the child is started as the worker's own binary
// (/proc/self/exe) with argv[0] limitArg0: init, below, sees that, sets
// RLIMIT_AS with setrlimit(2) and execs ffmpeg in place (same pid, same
// process group, Pdeathsig kept), before any input is read. This needs no
// external tool (prlimit(1), a writable cgroup) and works in every binary
// that links this package, the tests' too. RLIMIT_AS bounds the address
// space, not the resident memory: allocations past it fail, and ffmpeg
// reports "Cannot allocate memory" (CauseMemory). A cgroup v2 memory.max
// would bound resident memory instead, but needs a delegated, writable
// cgroup, which containers rarely give a worker.

// limitArg0 marks a child started to limit itself, then exec ffmpeg:
// argv = [limitArg0, <RLIMIT_AS bytes>, <program path>, <program args>…].
const limitArg0 = "kiln-ffmpeg-rlimit"

func init() {
	if len(os.Args) >= 3 && os.Args[0] == limitArg0 {
		os.Exit(execLimited(os.Args[1], os.Args[2], os.Args[3:]))
	}
}

// execLimited sets RLIMIT_AS to limit bytes and execs path with args; it
// returns only on failure (exit code 127, as a shell's for a command that
// could not run).
//
// Under the limit this process (a Go runtime that may already map more
// than it) must not allocate: a heap growth would fail and the runtime
// die ("out of memory") before ffmpeg ran. So everything execve needs is
// built first, the collector is off, and after setrlimit only the execve
// system call itself is made (syscall.Exec would convert its arguments
// after the limit).
func execLimited(limit, path string, args []string) int {
	n, err := strconv.ParseUint(limit, 10, 64)
	var pathp *byte
	var argvp, envp []*byte
	if err == nil {
		pathp, err = syscall.BytePtrFromString(path)
	}
	if err == nil {
		argvp, err = syscall.SlicePtrFromStrings(append([]string{path}, args...))
	}
	if err == nil {
		envp, err = syscall.SlicePtrFromStrings(os.Environ())
	}
	if err == nil {
		debug.SetGCPercent(-1)
		runtime.LockOSThread()
		err = syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: n, Max: n})
	}
	if err == nil {
		_, _, errno := syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(pathp)),
			uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])))
		err = errno
	}
	fmt.Fprintf(os.Stderr, "%s: %s: %v\n", limitArg0, path, err)
	return 127
}

// childEnvNames are the variables a child inherits from the worker.
var childEnvNames = []string{"PATH", "HOME", "TMPDIR"}

// defaultPath is a child's PATH when the worker has none.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// ChildEnv is the environment of every ffmpeg and ffprobe child: PATH,
// HOME and TMPDIR from environ (a PATH of defaultPath when unset), nothing
// else.
func ChildEnv(environ []string) []string {
	env := make([]string, 0, len(childEnvNames))
	for _, name := range childEnvNames {
		for _, kv := range environ {
			if v, ok := strings.CutPrefix(kv, name+"="); ok {
				env = append(env, name+"="+v)
				break
			}
		}
	}
	if len(env) == 0 || !strings.HasPrefix(env[0], "PATH=") {
		env = append([]string{"PATH=" + defaultPath}, env...)
	}
	return env
}

// command is the exec.Cmd running program (a path or a name looked up in
// PATH) with args: directly, or through the self-limiting re-exec when
// maxMemory > 0.
func (r *Runner) command(ctx context.Context, path string, args []string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = r.env
	if r.maxMemory <= 0 {
		return cmd, nil
	}
	abs, err := exec.LookPath(path)
	if err != nil {
		return nil, err
	}
	cmd = exec.CommandContext(ctx, selfExe, append([]string{strconv.FormatInt(r.maxMemory, 10), abs}, args...)...)
	cmd.Args[0] = limitArg0
	cmd.Env = r.env
	return cmd, nil
}

// selfExe is the running binary, for the re-exec.
const selfExe = "/proc/self/exe"
