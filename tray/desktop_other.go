//go:build !linux

package tray

import "errors"

// CheckDesktop reports whether a desktop is there for the tray icon; outside
// Linux the tray runs whenever the user has a desktop session.
func CheckDesktop() error { return nil }

// itemProbe reads back what the tray icon shows; outside Linux the
// platform's tray API applies changes at once, so there is nothing to read.
type itemProbe struct{}

func newItemProbe() (*itemProbe, error) { return nil, errNoProbe }

func (*itemProbe) Tooltip() (string, error) { return "", errNoProbe }
func (*itemProbe) Close()                   {}

var errNoProbe = errors.New("no tray read-back on this platform")
