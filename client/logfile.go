package client

import (
	"fmt"
	"os"
	"path/filepath"
)

// LogFileName is the daemon's log inside the state directory when nothing
// collects its standard error (the Windows service).
const LogFileName = "posternd.log"

// logFileMax is the size at which the log is moved to posternd.log.1 at the
// next start.
const logFileMax = 10 << 20

// OpenLogFile opens STATE/posternd.log for appending (0600), first moving a
// log larger than 10 MiB to posternd.log.1.
func OpenLogFile(stateDir string) (*os.File, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", stateDir, err)
	}
	p := filepath.Join(stateDir, LogFileName)
	if fi, err := os.Stat(p); err == nil && fi.Size() > logFileMax {
		_ = os.Rename(p, p+".1")
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", p, err)
	}
	return f, nil
}
