package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// registryDir records the running labs (one file per lab, with the pid of
// the process that owns it) so that the namespaces of a lab whose process
// died without Close (SIGKILL, a crashed test binary) can be removed later.
const registryDir = "/run/postern-lab"

type registration struct {
	ID      string    `json:"id"`
	PID     int       `json:"pid"`
	Dir     string    `json:"dir"`
	Started time.Time `json:"started"`
}

func (l *Lab) register() error {
	if err := os.MkdirAll(registryDir, 0o755); err != nil {
		return fmt.Errorf("lab registry: %w", err)
	}
	b, _ := json.Marshal(registration{ID: l.ID, PID: os.Getpid(), Dir: l.Dir, Started: time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(registryDir, l.ID+".json"), b, 0o644); err != nil {
		return fmt.Errorf("lab registry: %w", err)
	}
	l.mu.Lock()
	l.cleanups = append(l.cleanups, func() { _ = os.Remove(filepath.Join(registryDir, l.ID+".json")) })
	l.mu.Unlock()
	return nil
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// CleanupStale removes the namespaces and /etc/netns entries of labs whose
// owning process is gone. It touches only labs recorded in /run/postern-lab,
// never a running lab, and returns the ids it cleaned.
func CleanupStale(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(registryDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read lab registry: %w", err)
	}
	var cleaned []string
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(registryDir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var r registration
		if json.Unmarshal(b, &r) != nil || !strings.HasPrefix(r.ID, "pl") || len(r.ID) != 8 || pidAlive(r.PID) {
			continue
		}
		out, err := run(ctx, nil, "ip", "netns", "list")
		if err != nil {
			return cleaned, err
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && strings.HasPrefix(f[0], r.ID+"-") {
				if err := deleteNamespace(ctx, f[0]); err != nil {
					errs = append(errs, err)
				}
			}
		}
		etc, _ := filepath.Glob(filepath.Join("/etc/netns", r.ID+"-*"))
		for _, d := range etc {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
		_ = os.Remove(path)
		cleaned = append(cleaned, r.ID)
	}
	return cleaned, errors.Join(errs...)
}
