//go:build !linux

package relay

import "net"

// setDontFragment is Linux only: elsewhere the relay forwards as the
// system's defaults say.
func setDontFragment(net.PacketConn) error { return nil }
