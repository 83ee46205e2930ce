//go:build unix

package connector

import (
	"errors"
	"syscall"
)

// connWaiter waits until a socket is readable (data, EOF or an error)
// without holding a read buffer, by peeking one byte once the poller says
// the socket is ready.
func connWaiter(c syscall.Conn) func() error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	// A socket error is reported by the real read that follows.
	return func() error { return rc.Read(readable) }
}

// socketDrained reports whether rc's socket has nothing to read now (no
// data, no end, no error), without blocking.
func socketDrained(rc syscall.RawConn) bool {
	ready := true
	_ = rc.Read(func(fd uintptr) bool {
		ready = readable(fd)
		return true
	})
	return !ready
}

// readable peeks one byte of socket fd without blocking: false only when
// there is nothing to read yet (data, an end or an error: true).
func readable(fd uintptr) bool {
	var b [1]byte
	for {
		_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if e == syscall.EINTR {
			continue
		}
		return e != syscall.EAGAIN && e != syscall.EWOULDBLOCK
	}
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
