package netstack

import (
	"errors"
	"io"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// ErrWouldBlock is returned by ReadNonBlocking when nothing is buffered.
var ErrWouldBlock = errors.New("netstack: no data ready")

// TCPConn is an accepted TCP connection. Besides the blocking net.Conn
// methods it offers readiness notification and non-blocking reads, so a
// caller can serve an idle connection without parking a goroutine on it.
type TCPConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
	wq *waiter.Queue
}

const readableMask = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr

// ReadNonBlocking reads what is buffered into p: n > 0, or ErrWouldBlock
// when nothing is, or io.EOF after the application's FIN. It must not be
// used concurrently with Read.
func (c *TCPConn) ReadNonBlocking(p []byte) (int, error) {
	w := tcpip.SliceWriter(p)
	res, err := c.ep.Read(&w, tcpip.ReadOptions{})
	if err != nil {
		switch err.(type) {
		case *tcpip.ErrWouldBlock:
			return 0, ErrWouldBlock
		case *tcpip.ErrClosedForReceive:
			return 0, io.EOF
		}
		return 0, errors.New("netstack: read: " + err.String())
	}
	if res.Count > 0 {
		c.ep.ModerateRecvBuf(res.Count)
	}
	return res.Count, nil
}

// Readable reports whether a read would not block (data, FIN or an error).
func (c *TCPConn) Readable() bool { return c.ep.Readiness(readableMask) != 0 }

// NotifyReadable calls fn whenever the connection becomes readable. fn runs
// on the stack's goroutine and must not block or read; cancel unregisters.
func (c *TCPConn) NotifyReadable(fn func()) (cancel func()) {
	e := waiter.NewFunctionEntry(readableMask, func(waiter.EventMask) { fn() })
	c.wq.EventRegister(&e)
	return func() { c.wq.EventUnregister(&e) }
}
