//go:build !linux

package udpgro

import (
	"errors"
	"net"
)

func enable(*net.UDPConn) bool { return false }

func segmentSize(oob []byte) (int, []byte) { return 0, oob }

// readShared is never called: For returns no Conn here.
func (c *Conn) readShared() (int, error) { return 0, errors.ErrUnsupported }

// mmsgHeaders are Linux's.
type mmsgHeaders struct{}

func newSharedRead() *sharedRead { return &sharedRead{big: newBig(sharedBuffers)} }
