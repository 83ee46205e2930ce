package udpgro

import (
	"encoding/binary"
	"net"
	"os"
	"strconv"
	"syscall"
	"unsafe"

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

// readShared reads coalesced buffers into a shared Conn's big: they are
// taken from the pool in the poller's callback and given back there when
// the socket has nothing, before the goroutine parks until it is readable.
func (c *Conn) readShared() (int, error) {
	c.release()
	var n int
	var errno syscall.Errno
	err := c.raw.Read(func(fd uintptr) bool {
		c.acquire()
		if n, errno = c.sr.recvmmsg(fd); errno == unix.EAGAIN {
			c.release()
			return false
		}
		return true
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("recvmmsg", errno)
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// mmsgHeaders are the headers of one recvmmsg into a sharedRead's buffers.
type mmsgHeaders struct {
	hdrs  [sharedBuffers]unix.Mmsghdr
	iovs  [sharedBuffers]unix.Iovec
	names [sharedBuffers]unix.RawSockaddrInet6 // holds an IPv4 one too
}

func newSharedRead() *sharedRead {
	sr := &sharedRead{big: newBig(sharedBuffers)}
	for i := range sr.big {
		b := sr.big[i].Buffers[0]
		sr.mm.iovs[i].Base = &b[0]
		sr.mm.iovs[i].SetLen(len(b))
		h := &sr.mm.hdrs[i].Hdr
		h.Iov = &sr.mm.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&sr.mm.names[i]))
		h.Control = &sr.big[i].OOB[0]
	}
	return sr
}

// recvmmsg reads up to sharedBuffers coalesced buffers from socket fd
// without blocking (Go's sockets are non-blocking).
func (sr *sharedRead) recvmmsg(fd uintptr) (int, syscall.Errno) {
	for i := range sr.mm.hdrs {
		h := &sr.mm.hdrs[i]
		h.Hdr.Namelen = unix.SizeofSockaddrInet6
		h.Hdr.SetControllen(len(sr.big[i].OOB))
		h.Hdr.Flags, h.Len = 0, 0
	}
	r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&sr.mm.hdrs[0])), uintptr(len(sr.mm.hdrs)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	n := int(r)
	for i := range n {
		m, h := &sr.big[i], &sr.mm.hdrs[i]
		m.N, m.NN, m.Flags = int(h.Len), int(h.Hdr.Controllen), int(h.Hdr.Flags)
		m.Addr = udpAddrOf(&sr.mm.names[i])
	}
	return n, 0
}

// udpAddrOf returns the sender a recvmmsg header names.
func udpAddrOf(sa *unix.RawSockaddrInet6) *net.UDPAddr {
	switch sa.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return &net.UDPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: port(a.Port)}
	case unix.AF_INET6:
		ua := &net.UDPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: port(sa.Port)}
		if sa.Scope_id != 0 {
			ua.Zone = strconv.Itoa(int(sa.Scope_id))
		}
		return ua
	}
	return &net.UDPAddr{}
}

// port turns a port in network byte order, as the kernel stores it, into a
// number.
func port(p uint16) int {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return int(b[0])<<8 | int(b[1])
}
