// Package tray is postern-tray's logic, testable without a display: the
// daemon's local API client, the menu model computed from the daemon's
// status, the icons, and the binding to fyne.io/systray (App).
//
// The tray never polls: it follows the daemon's /v1/events stream and, when
// the socket is absent, shows how to start the daemon and reconnects when
// the socket reappears.
package tray

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"

	"postern.dev/postern/localapi"
	"postern.dev/postern/policy"
)

// Icon states.
const (
	IconSignedOut  = "signed_out"
	IconConnecting = "connecting"
	IconConnected  = "connected"
	IconDegraded   = "degraded"
	IconError      = "error"
)

// ResourceItem is one entry of the Resources submenu.
type ResourceItem struct {
	Label   string // "name — address"
	Address string // what a click copies
	OpenURL string // set for HTTP resources: a click opens it instead
}

// Menu is everything the tray shows for one daemon state.
type Menu struct {
	Icon    string
	Tooltip string
	// Status lines (not clickable).
	User    string
	Network string
	State   string
	// DaemonDown lines replace everything else when the daemon is absent.
	DaemonDown []string

	ShowConnect, ShowDisconnect bool
	ShowSignIn, ShowSignOut     bool
	Resources                   []ResourceItem
	// About is the About line (the tray's and the daemon's versions).
	About string
}

// StartHint tells the user how to start the daemon on this OS.
func StartHint() string {
	switch runtime.GOOS {
	case "windows":
		return "Start it with: Start-Service posternd (as administrator)"
	case "darwin":
		return "Start it with: sudo launchctl kickstart -k system/dev.postern.posternd"
	}
	return "Start it with: sudo systemctl start posternd"
}

// StateLabel is a user-facing name for a daemon state.
func StateLabel(state string) string {
	switch state {
	case localapi.StateSignedOut:
		return "Signed out"
	case localapi.StateStopped:
		return "Disconnected"
	case localapi.StateConnecting:
		return "Connecting…"
	case localapi.StateConnected:
		return "Connected"
	case localapi.StateDegraded:
		return "Degraded"
	case localapi.StateError:
		return "Error"
	}
	return state
}

// IconFor maps a daemon state to an icon state.
func IconFor(state string) string {
	switch state {
	case localapi.StateConnecting:
		return IconConnecting
	case localapi.StateConnected:
		return IconConnected
	case localapi.StateDegraded:
		return IconDegraded
	case localapi.StateError:
		return IconError
	}
	return IconSignedOut // signed out, stopped (signed in, tunnel down)
}

// Build computes the menu. st is nil when the daemon cannot be reached;
// daemonErr then says why (nil or localapi.ErrDaemonNotRunning: not running).
func Build(st *localapi.Status, resources []localapi.Resource, daemonErr error) Menu {
	if st == nil {
		if daemonErr != nil && !errors.Is(daemonErr, localapi.ErrDaemonNotRunning) {
			msg := daemonErr.Error()
			if len(msg) > 120 {
				msg = msg[:117] + "..."
			}
			return Menu{
				Icon:       IconError,
				Tooltip:    "Postern: cannot reach the daemon",
				DaemonDown: []string{"Cannot reach the Postern daemon", msg},
			}
		}
		return Menu{
			Icon:       IconError,
			Tooltip:    "Postern: daemon not running",
			DaemonDown: []string{"Postern daemon not running", StartHint()},
		}
	}
	m := Menu{Icon: IconFor(st.State), State: StateLabel(st.State)}
	if st.Message != "" && (st.State == localapi.StateError || st.State == localapi.StateDegraded) {
		m.State += ": " + st.Message
	}
	m.Tooltip = "Postern: " + m.State
	if st.State == localapi.StateSignedOut || st.Principal == nil {
		m.User = "Not signed in"
		m.ShowSignIn = true
		return m
	}
	m.User = "Signed in as " + st.Principal.Name
	if st.Network != "" {
		m.Network = "Network: " + st.Network
	} else if st.ControllerURL != "" {
		m.Network = "Network: " + hostOf(st.ControllerURL)
	}
	m.ShowSignOut = true
	switch st.State {
	case localapi.StateStopped, localapi.StateError:
		m.ShowConnect = true
	default:
		m.ShowDisconnect = true
	}
	for _, r := range resources {
		m.Resources = append(m.Resources, resourceItem(r))
	}
	return m
}

func hostOf(u string) string {
	u = strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	return u
}

// resourceItem decides what a click does: HTTP resources (a name or an IP
// with tcp/80, 443, 8080 or 8443 allowed) open in the browser; others copy
// their address.
func resourceItem(r localapi.Resource) ResourceItem {
	name := r.Name
	if r.Alias != "" {
		name = r.Alias
	}
	it := ResourceItem{Label: fmt.Sprintf("%s — %s", name, r.Address), Address: r.Address}
	if a := r.Access; a != nil && a.State != "ok" && a.State != "" {
		// Access is missing (docs/access.md): say why, and a click copies
		// the command that fixes it ("postern mfa", "postern request NAME").
		it.Label += " — " + a.Message
		it.Address = accessCommand(a.Message)
		return it
	}
	if a := r.Access; a != nil && a.ApprovedBy != "" {
		it.Label += " — " + a.Message
	}
	host := r.Address
	if r.Alias != "" {
		host = r.Alias
	}
	if strings.HasPrefix(host, "*.") || strings.Contains(host, "/") {
		return it // a wildcard or a CIDR: no single page to open
	}
	for _, c := range []struct {
		port   uint16
		scheme string
	}{{443, "https"}, {80, "http"}, {8443, "https"}, {8080, "http"}} {
		if allowsTCP(r.Ports, c.port) {
			h := host
			if strings.Contains(h, ":") {
				h = "[" + h + "]"
			}
			if c.port != 443 && c.port != 80 {
				h = net.JoinHostPort(strings.Trim(h, "[]"), strconv.Itoa(int(c.port)))
			}
			it.OpenURL = c.scheme + "://" + h + "/"
			return it
		}
	}
	return it
}

// accessCommand extracts the command of an access message, e.g.
// "postern request prod-db" from "needs approval (postern request prod-db)";
// "" when it names none.
func accessCommand(msg string) string {
	open := strings.LastIndex(msg, "(postern ")
	if open < 0 || !strings.HasSuffix(msg, ")") {
		return ""
	}
	cmd := msg[open+1 : len(msg)-1]
	if strings.HasPrefix(cmd, "postern request ") {
		cmd += " --for 1h --reason "
	}
	return cmd
}

// allowsTCP reports whether the port specs name TCP port explicitly (or in
// a range); "all ports" (an empty list, or "tcp") says nothing about a web
// app, so it does not count.
func allowsTCP(specs []string, port uint16) bool {
	for _, s := range specs {
		rule, err := policy.ParsePortRule(s)
		if err != nil || (rule.From == 0 && rule.To == 0) {
			continue
		}
		if policy.Allows([]policy.PortRule{rule}, policy.TCP, port) {
			return true
		}
	}
	return false
}
