//go:build !linux

package udpbatch

import "net"

func supported(*net.UDPConn) bool              { return false }
func segmentSizeMsg(b []byte, _ uint16) []byte { return b }
func isGSOError(error) (noGSO, tooLarge bool)  { return false, false }
