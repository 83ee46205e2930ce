//go:build !linux

package tray

// CheckDesktop reports whether a desktop is there for the tray icon; outside
// Linux the tray runs whenever the user has a desktop session.
func CheckDesktop() error { return nil }
