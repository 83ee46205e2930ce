// Package netstacktest is an in-memory TUN device, for tests of code that
// takes a tun.Device (netstack.New, client.TUNConfig.CreateTUN) without root
// or a kernel TUN, like wireguard-go's tuntest: the test injects the packets
// the stack reads and receives the packets it writes, or wires the device to
// a Host, a second gVisor stack that plays the applications.
package netstacktest

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
)

// ErrClosed is returned by Inject and the device's Read and Write after Close.
var ErrClosed = errors.New("in-memory TUN closed")

// TUN is an in-memory tun.Device. What the stack writes is queued on
// Outbound; when the test does not read it and the queue is full, packets are
// dropped (counted by Dropped), as a real device drops under pressure.
type TUN struct {
	name    string
	mtu     int
	in      chan []byte
	out     chan []byte
	events  chan tun.Event
	closed  chan struct{}
	once    sync.Once
	dropped atomic.Int64

	mu      sync.Mutex
	tap     func([]byte) bool // sees written packets first; true: consumed
	deliver func([]byte)      // where written packets go; nil: Outbound
}

// Queue lengths: packets waiting for the stack, and for the test.
const (
	inQueue  = 256
	outQueue = 256
)

// batchSize is what the device reads at most per call (exercising the
// stack's batched reads).
const batchSize = 8

// NewTUN returns a device called name with the given MTU, already up.
func NewTUN(name string, mtu int) *TUN {
	t := &TUN{
		name: name, mtu: mtu,
		in:     make(chan []byte, inQueue),
		out:    make(chan []byte, outQueue),
		events: make(chan tun.Event, 1),
		closed: make(chan struct{}),
	}
	t.events <- tun.EventUp
	return t
}

// Inject queues pkt (an IP packet) for the stack to read; it blocks while
// the queue is full, and fails with ErrClosed after Close.
func (t *TUN) Inject(pkt []byte) error {
	select {
	case <-t.closed:
		return ErrClosed
	default:
	}
	select {
	case t.in <- pkt:
		return nil
	case <-t.closed:
		return ErrClosed
	}
}

// Outbound delivers the packets the stack wrote, one IP packet each.
func (t *TUN) Outbound() <-chan []byte { return t.out }

// Dropped counts written packets dropped because Outbound was full.
func (t *TUN) Dropped() int64 { return t.dropped.Load() }

// File implements tun.Device; there is no file.
func (t *TUN) File() *os.File { return nil }

// SetTap makes tap see every packet the stack writes first; when it
// returns true the packet goes no further. nil removes the tap.
func (t *TUN) SetTap(tap func([]byte) bool) {
	t.mu.Lock()
	t.tap = tap
	t.mu.Unlock()
}

// Read implements tun.Device: the injected packets waiting, up to
// len(bufs), at least one.
func (t *TUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-t.in:
		sizes[0] = copy(bufs[0][offset:], p)
		n := 1
		for n < len(bufs) {
			select {
			case p := <-t.in:
				sizes[n] = copy(bufs[n][offset:], p)
				n++
				continue
			default:
			}
			break
		}
		return n, nil
	case <-t.closed:
		return 0, os.ErrClosed
	}
}

// Write implements tun.Device.
func (t *TUN) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-t.closed:
		return 0, os.ErrClosed
	default:
	}
	t.mu.Lock()
	tap, deliver := t.tap, t.deliver
	t.mu.Unlock()
	for _, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		switch {
		case tap != nil && tap(p):
		case deliver != nil:
			deliver(p)
		default:
			select {
			case t.out <- p:
			default:
				t.dropped.Add(1)
			}
		}
	}
	return len(bufs), nil
}

// MTU implements tun.Device.
func (t *TUN) MTU() (int, error) { return t.mtu, nil }

// Name implements tun.Device.
func (t *TUN) Name() (string, error) { return t.name, nil }

// Events implements tun.Device: EventUp once.
func (t *TUN) Events() <-chan tun.Event { return t.events }

// BatchSize implements tun.Device.
func (t *TUN) BatchSize() int { return batchSize }

// Close implements tun.Device; Read, Write and Inject then fail.
func (t *TUN) Close() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

var _ tun.Device = (*TUN)(nil)
