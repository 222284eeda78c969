package workers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"
)

// PrepareWorkDir gives this process its own folder under root
// (root/kiln-<pid>) and removes the folders of kiln processes that no longer
// run: a worker killed mid-task (kill -9, OOM) leaves its temp files behind,
// and the next worker on the host cleans them up.
func PrepareWorkDir(root string, log *zap.Logger) (string, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoWorkDir, err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoWorkDir, err)
	}
	for _, e := range entries {
		pidStr, ok := strings.CutPrefix(e.Name(), "kiln-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || !e.IsDir() || pid == os.Getpid() || alive(pid) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
			log.Warn("remove stale work dir", zap.String("dir", e.Name()), zap.Error(err))
			continue
		}
		log.Info("removed the work dir of a dead worker", zap.Int("pid", pid))
	}
	dir := filepath.Join(root, "kiln-"+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoWorkDir, err)
	}
	return dir, nil
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// ErrNoWorkDir is returned when the work folder cannot be prepared.
var ErrNoWorkDir = errors.New("work dir")
