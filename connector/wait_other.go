//go:build !unix

package connector

import (
	"errors"
	"syscall"
)

// connWaiter is not available here: reads hold their buffer while waiting.
func connWaiter(syscall.Conn) func() error { return nil }

// socketDrained is not available here either (no flow parks).
func socketDrained(syscall.RawConn) bool { return false }

// wsaeconnrefused is Windows' WSAECONNREFUSED.
const wsaeconnrefused = syscall.Errno(10061)

func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, wsaeconnrefused)
}
