//go:build !linux

package connector

import (
	"errors"
	"sync/atomic"
	"syscall"
	"time"
)

// readiness is Linux's shared epoll set (readiness_linux.go). Elsewhere
// newReadiness fails and every TCP flow keeps a goroutine per direction.
type readiness struct {
	parkAfter time.Duration
	parked    atomic.Int64
}

var errNoReadiness = errors.New("no shared readiness set on this system")

func newReadiness() (*readiness, error) { return nil, errNoReadiness }

func (r *readiness) add(syscall.RawConn, func()) (uint64, error) {
	return 0, errors.New("no shared readiness set")
}
func (r *readiness) arm(syscall.RawConn, uint64) error { return errors.New("no shared readiness set") }
func (r *readiness) remove(syscall.RawConn, uint64)    {}
func (r *readiness) registered() int                   { return 0 }
func (r *readiness) close()                            {}
