package connector

import (
	"os"
	"path/filepath"
	"runtime"
)

// DefaultStateDir is the OS's usual place for the connector's state.
func DefaultStateDir() string {
	switch runtime.GOOS {
	case "windows":
		if d := os.Getenv("ProgramData"); d != "" {
			return filepath.Join(d, "Postern", "connector")
		}
	case "darwin":
		return "/Library/Application Support/Postern/connector"
	}
	if os.Geteuid() != 0 {
		if d, err := os.UserConfigDir(); err == nil {
			return filepath.Join(d, "postern", "connector")
		}
	}
	return "/var/lib/postern/connector"
}
