package udpgro

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"
)

// enable sets UDP_GRO on the socket; false if the kernel refused.
func enable(uc *net.UDPConn) bool {
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		return false
	}
	return true
}

// segmentSize finds the UDP_GRO control message in oob and returns its
// segment size (0 when the buffer holds one datagram) and oob without it,
// compacted in place. Malformed control data is returned as it is, with
// size 0, so the buffer is passed on as a single datagram.
func segmentSize(oob []byte) (int, []byte) {
	size := 0
	out := oob[:0]
	rest := oob
	for len(rest) > 0 {
		hdr, body, next, err := unix.ParseOneSocketControlMessage(rest)
		if err != nil {
			return 0, oob
		}
		whole := rest[:len(rest)-len(next)]
		if hdr.Level == unix.IPPROTO_UDP && hdr.Type == unix.UDP_GRO && len(body) >= 2 {
			if len(body) >= 4 {
				size = int(binary.NativeEndian.Uint32(body))
			} else {
				size = int(binary.NativeEndian.Uint16(body))
			}
		} else {
			out = append(out, whole...) // out never passes rest: it only drops bytes
		}
		rest = next
	}
	return size, out
}
