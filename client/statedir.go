package client

import (
	"os"
	"path/filepath"
	"runtime"

	"postern.dev/postern/localapi"
)

// DefaultStateDir is the OS's usual place for the daemon's state.
func DefaultStateDir() string {
	switch runtime.GOOS {
	case "windows":
		pd := os.Getenv("ProgramData")
		if pd == "" {
			pd = `C:\ProgramData`
		}
		return filepath.Join(pd, "Postern")
	case "darwin":
		return "/Library/Application Support/Postern"
	}
	return "/var/lib/postern"
}

// DefaultSocket is the local API socket of a daemon using the default state dir.
func DefaultSocket() string { return filepath.Join(DefaultStateDir(), localapi.SocketName) }
