package tray

import (
	"fmt"

	"github.com/godbus/dbus/v5"
)

// CheckDesktop reports whether a desktop session bus is there for the tray
// icon (StatusNotifierItem over D-Bus).
func CheckDesktop() error {
	if _, err := dbus.SessionBus(); err != nil {
		return fmt.Errorf("no desktop session bus (postern-tray needs a desktop session with a system tray): %w", err)
	}
	return nil
}
