package udpbatch

import (
	"errors"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// supported reports whether the kernel segments UDP for conn.
func supported(conn *net.UDPConn) bool {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return false
	}
	return serr == nil
}

// segmentSizeMsg appends the UDP_SEGMENT control message for size to b.
func segmentSizeMsg(b []byte, size uint16) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[start+unix.CmsgSpace(0)])) = size
	return b
}

// isGSOError reports an error of a device that cannot segment (EIO: no
// transmit checksum offload), or of segments too large for the route
// (EINVAL: the kernel checks the segment size against the MTU; UDP_SEGMENT
// itself is known to work, see supported).
func isGSOError(err error) (noGSO, tooLarge bool) {
	var serr *os.SyscallError
	if errors.As(err, &serr) {
		return serr.Err == unix.EIO, serr.Err == unix.EINVAL
	}
	return false, false
}
