//go:build !linux && !windows

package client

import "net"

// checkPeer relies on the socket's file mode (0660) where SO_PEERCRED does
// not exist.
func checkPeer(c net.Conn) error { return nil }
