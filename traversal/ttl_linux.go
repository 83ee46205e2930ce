package traversal

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"unsafe"
)

// lowTTLPrimer returns a primer writer for c: each packet carries its own
// TTL (IP_TTL, or IPV6_HOPLIMIT for IPv6 destinations) as a control message
// of that one sendmsg, so the socket's TTL, and every QUIC packet written on
// it at the same moment, is untouched.
func lowTTLPrimer(c *net.UDPConn) func(b []byte, to *net.UDPAddr) error {
	if c == nil {
		return nil
	}
	return func(b []byte, to *net.UDPAddr) error {
		var oob []byte
		if to.IP.To4() != nil {
			oob = intCmsg(syscall.IPPROTO_IP, syscall.IP_TTL, primerTTL)
		} else {
			oob = intCmsg(syscall.IPPROTO_IPV6, syscall.IPV6_HOPLIMIT, primerTTL)
		}
		if _, _, err := c.WriteMsgUDP(b, oob, to); err != nil {
			return fmt.Errorf("primer to %s: %w", to, err)
		}
		return nil
	}
}

// intCmsg is one control message carrying a C int.
func intCmsg(level, typ, v int) []byte {
	b := make([]byte, syscall.CmsgSpace(4))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = int32(level)
	h.Type = int32(typ)
	h.SetLen(syscall.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[syscall.CmsgLen(0):], uint32(v))
	return b
}
