package client

import (
	"errors"
	"net"
)

// listenSocket: the Windows named-pipe transport is not built yet; the local
// API is never exposed on a TCP port instead.
func listenSocket(path string, gid int) (net.Listener, error) {
	return nil, errors.New("the local API on Windows (named pipe) is not implemented yet")
}

func checkPeer(c net.Conn) error { return nil }
