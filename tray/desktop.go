package tray

import (
	_ "embed"
	"os"
	"path/filepath"
	"runtime"

	"postern.dev/postern/localapi"
)

// DesktopEntry is the XDG autostart entry (install it as
// /etc/xdg/autostart/postern-tray.desktop) that starts the tray with the
// desktop session. `postern-tray --print-desktop-entry` prints it.
//
//go:embed postern-tray.desktop
var DesktopEntry string

// DefaultSocket is $POSTERN_SOCKET, else the daemon's default state
// directory's socket.
func DefaultSocket() string {
	if s := os.Getenv(localapi.EnvSocket); s != "" {
		return s
	}
	switch runtime.GOOS {
	case "windows":
		dir := os.Getenv("ProgramData")
		if dir == "" {
			dir = `C:\ProgramData`
		}
		return filepath.Join(dir, "Postern", localapi.SocketName)
	case "darwin":
		return filepath.Join("/Library/Application Support/Postern", localapi.SocketName)
	}
	return filepath.Join("/var/lib/postern", localapi.SocketName)
}
