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
	return func() error {
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			var b [1]byte
			for {
				_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				switch {
				case e == syscall.EINTR:
					continue
				case e == syscall.EAGAIN || e == syscall.EWOULDBLOCK:
					return false
				case e != nil:
					// Let the real read report the socket error.
					perr = nil
				}
				return true
			}
		})
		if err != nil {
			return err
		}
		return perr
	}
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
