package lab

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Capture records every frame on every interface of one lab node (an
// AF_PACKET socket opened inside its namespace, like tcpdump -i any) and
// counts the frames that contain each of a set of byte markers.
type Capture struct {
	fd      int
	markers [][]byte
	done    chan struct{}
	stop    chan struct{}
	once    sync.Once

	mu      sync.Mutex
	packets int
	bytes   int64
	hits    []int
	err     error
}

// CaptureResult is what a capture saw.
type CaptureResult struct {
	Packets int
	Bytes   int64
	// Hits[i] is the number of frames that contained markers[i].
	Hits []int
}

// StartCapture starts capturing on node; Stop ends it. Markers are looked
// for in each whole frame (headers included), so a marker split across two
// packets is not found: keep markers short compared with a packet.
func (l *Lab) StartCapture(node string, markers ...[]byte) (*Capture, error) {
	ns := l.NS(node)
	if ns == "" {
		return nil, fmt.Errorf("capture on %s: %w", node, ErrUnknownNode)
	}
	for i, m := range markers {
		if len(m) == 0 {
			return nil, fmt.Errorf("capture on %s: marker %d is empty", node, i)
		}
	}
	fd, err := socketInNamespace(ns)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", node, err)
	}
	// A read timeout lets the reader notice Stop.
	tv := syscall.Timeval{Usec: 100_000}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("capture on %s: receive timeout: %w", node, err)
	}
	c := &Capture{fd: fd, markers: markers, done: make(chan struct{}), stop: make(chan struct{}), hits: make([]int, len(markers))}
	ready := make(chan struct{})
	go c.read(ready)
	<-ready
	return c, nil
}

// socketInNamespace opens a raw AF_PACKET socket for all protocols inside
// the named network namespace; the socket stays bound to that namespace.
func socketInNamespace(ns string) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return -1, fmt.Errorf("current namespace: %w", err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		return -1, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return -1, fmt.Errorf("enter namespace %s: %w", ns, err)
	}
	fd, serr := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
	if err := netns.Set(orig); err != nil {
		// The thread stays locked (and is discarded by the runtime) rather
		// than running other goroutines in the wrong namespace.
		runtime.LockOSThread()
		if serr == nil {
			syscall.Close(fd)
		}
		return -1, fmt.Errorf("return from namespace %s: %w", ns, err)
	}
	if serr != nil {
		return -1, fmt.Errorf("AF_PACKET socket in %s: %w", ns, serr)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) read(ready chan struct{}) {
	defer close(c.done)
	close(ready)
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				select {
				case <-c.stopCh():
					return
				default:
					continue
				}
			}
			c.mu.Lock()
			if c.err == nil && !c.stoppedLocked() {
				c.err = err
			}
			c.mu.Unlock()
			return
		}
		frame := buf[:n]
		c.mu.Lock()
		c.packets++
		c.bytes += int64(n)
		for i, m := range c.markers {
			if bytes.Contains(frame, m) {
				c.hits[i]++
			}
		}
		stopped := c.stoppedLocked()
		c.mu.Unlock()
		if stopped {
			return
		}
	}
}

func (c *Capture) stopCh() chan struct{} { return c.stop }

func (c *Capture) stoppedLocked() bool {
	select {
	case <-c.stopCh():
		return true
	default:
		return false
	}
}

// Snapshot returns what the capture has seen so far.
func (c *Capture) Snapshot() CaptureResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CaptureResult{Packets: c.packets, Bytes: c.bytes, Hits: append([]int(nil), c.hits...)}
}

// Stop ends the capture (waiting briefly for frames in flight) and returns
// what it saw.
func (c *Capture) Stop() (CaptureResult, error) {
	time.Sleep(200 * time.Millisecond)
	c.once.Do(func() { close(c.stop) })
	<-c.done
	syscall.Close(c.fd)
	c.mu.Lock()
	defer c.mu.Unlock()
	return CaptureResult{Packets: c.packets, Bytes: c.bytes, Hits: append([]int(nil), c.hits...)}, c.err
}
