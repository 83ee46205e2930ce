package connector

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// downSide is a TCP flow's download (destination to client). It runs in a
// goroutine of its own while the destination sends; once the destination
// has been silent for parkAfter it parks in the connector's readiness set
// (readiness_linux.go) and its goroutine ends, until the destination sends
// again. An idle flow then holds one goroutine (its upload side, waiting on
// the stream), not two.
type downSide struct {
	f  *flow
	tc net.Conn
	rc syscall.RawConn
	w  io.Writer // the flow's bulkWriter
	r  *readiness
	// waiter waits in Go's poller until tc is readable (connWaiter).
	waiter func() error

	mu    sync.Mutex
	state int    // sideParked, sideRunning, sideEnded
	id    uint64 // registration in r; 0 until the first park
	once  sync.Once
	done  chan struct{}
}

// startDown starts the download side of f in a goroutine of its own; it
// parks in r once the destination has been silent for r.parkAfter. nil when
// tc is not a socket or there is no r (then the caller pumps as before).
// Short flows never touch r: they end before they would park.
func startDown(f *flow, tc net.Conn, w io.Writer, r *readiness) *downSide {
	if r == nil {
		return nil
	}
	sc, ok := tc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	waiter := connWaiter(sc)
	if waiter == nil {
		return nil
	}
	d := &downSide{f: f, tc: tc, rc: rc, w: w, r: r, done: make(chan struct{}), waiter: waiter, state: sideRunning}
	go d.run()
	return d
}

// wake runs when a parked side's destination is readable.
func (d *downSide) wake() {
	if d.move(sideParked, sideRunning) {
		d.run()
	} // else ended meanwhile, or a stale event
}

// run copies until the destination stays silent for parkAfter, then parks,
// or ends the side.
func (d *downSide) run() {
	// Park only after the destination stayed silent for parkAfter: a busy
	// flow keeps its goroutine and Go's own poller (a park costs an
	// epoll_ctl and a wake-up on another thread). No read is started
	// before the socket is readable, so none blocks.
	n, err := pump(d.w, d.tc, func() error {
		if d.readableWithin(d.r.parkAfter) {
			return nil
		}
		return errPark
	})
	d.f.down.Add(n)
	if err != errPark {
		d.finish(err) // nil: the destination's end
		return
	}
	d.park()
}

// park leaves the side to the readiness set: registered the first time,
// re-armed after that. A registration may fire at once; its wake waits for
// d.mu, so the state and id are set first.
func (d *downSide) park() {
	d.mu.Lock()
	if d.state != sideRunning {
		d.mu.Unlock()
		return // cancelled while running: cancel finished it
	}
	d.state = sideParked
	d.r.parked.Add(1)
	if d.id == 0 {
		id, err := d.r.add(d.rc, d.wake)
		if err == nil {
			d.id = id
		}
		d.mu.Unlock()
		if err != nil {
			d.finish(err)
		}
		return
	}
	id := d.id
	d.mu.Unlock()
	if err := d.r.arm(d.rc, id); err != nil {
		d.finish(err) // the socket was closed (the flow was killed)
	}
}

// Download side states.
const (
	sideParked  = iota // registered and armed, no goroutine
	sideRunning        // copying in a goroutine of its own
	sideEnded
)

// move changes the state from one to another, and reports whether it was
// in from; the readiness set counts parked sides.
func (d *downSide) move(from, to int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != from {
		return false
	}
	d.state = to
	if from == sideParked {
		d.r.parked.Add(-1)
	}
	if to == sideParked {
		d.r.parked.Add(1)
	}
	return true
}

// readableWithin waits up to wait for the destination to become readable
// (data, an end or an error) and reports whether it did. A busy flow's
// socket usually has more already: one peek, no deadline.
func (d *downSide) readableWithin(wait time.Duration) bool {
	if !socketDrained(d.rc) {
		return true
	}
	if wait <= 0 || d.waiter == nil {
		return false
	}
	_ = d.tc.SetReadDeadline(time.Now().Add(wait))
	err := d.waiter()
	_ = d.tc.SetReadDeadline(time.Time{})
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// finish ends the side once: the client's stream gets the destination's
// end (EOF) or is reset (an error), as the goroutine pump does.
func (d *downSide) finish(err error) {
	d.once.Do(func() {
		if !d.move(sideRunning, sideEnded) {
			d.move(sideParked, sideEnded)
		}
		d.mu.Lock()
		id := d.id
		d.mu.Unlock()
		if id != 0 {
			d.r.remove(d.rc, id)
		}
		d.f.endDownload(d.tc, err)
		close(d.done)
	})
}

// cancel ends a parked side at once (the flow was killed or its upload
// failed, and the socket is closed, so no readiness will come); a running
// one ends by itself on the closed socket or stream.
func (d *downSide) cancel() {
	d.mu.Lock()
	parked := d.state == sideParked
	d.mu.Unlock()
	if parked {
		d.finish(errFlowCancelled)
	}
}

// errPark stops pump when the destination has been silent for parkAfter.
var errPark = errors.New("destination silent: park")

// errFlowCancelled ends a parked download side whose flow ended elsewhere.
var errFlowCancelled = errors.New("flow ended")
