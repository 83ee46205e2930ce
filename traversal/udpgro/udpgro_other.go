//go:build !linux

package udpgro

import "net"

func enable(*net.UDPConn) bool { return false }

func segmentSize(oob []byte) (int, []byte) { return 0, oob }
