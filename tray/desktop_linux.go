package tray

import (
	"fmt"
	"os"

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

// itemProbe reads back, over a session bus connection of its own, what
// this process's StatusNotifierItem shows to the desktop.
type itemProbe struct {
	conn *dbus.Conn
	name string
}

// newItemProbe connects to the session bus. fyne.io/systray registers the
// item as org.kde.StatusNotifierItem-PID-1.
func newItemProbe() (*itemProbe, error) {
	conn, err := dbus.ConnectSessionBus()
	if err != nil {
		return nil, fmt.Errorf("connect to the session bus: %w", err)
	}
	return &itemProbe{conn: conn, name: fmt.Sprintf("org.kde.StatusNotifierItem-%d-1", os.Getpid())}, nil
}

// Tooltip is the tooltip text the item exports; an error while the item
// is not on the bus yet.
func (p *itemProbe) Tooltip() (string, error) {
	v, err := p.conn.Object(p.name, "/StatusNotifierItem").GetProperty("org.kde.StatusNotifierItem.ToolTip")
	if err != nil {
		return "", fmt.Errorf("read the exported tooltip: %w", err)
	}
	var tip struct {
		Icon   string
		Pixmap []struct {
			W, H int32
			Pix  []byte
		}
		Title, Text string
	}
	if err := v.Store(&tip); err != nil {
		return "", fmt.Errorf("decode the exported tooltip: %w", err)
	}
	return tip.Title, nil
}

func (p *itemProbe) Close() { p.conn.Close() }
