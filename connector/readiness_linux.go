package connector

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readiness is one epoll set shared by the flows of a connector. It wakes a
// TCP flow's download side (destination to client) when the destination
// socket has data, an end or an error, so that an idle flow holds no
// goroutine for that side: only its upload side waits, on its stream.
// Registrations are one-shot; a woken side re-arms when it has drained the
// socket. The sockets stay in Go's own poller too (reads go through
// net.Conn); this set only says when to start reading.
type readiness struct {
	epfd, wakefd int

	// parkAfter is how long a download side stays in its goroutine after
	// the destination went silent, before it parks here.
	parkAfter time.Duration
	parked    atomic.Int64 // download sides parked here now

	mu   sync.Mutex
	cbs  map[uint64]func()
	next uint64
	done chan struct{}
}

// defaultParkAfter: flows that pause for less keep their goroutine.
const defaultParkAfter = 2 * time.Second

// errNoReadiness is what newReadiness fails with where there is no such set
// (not on Linux).
var errNoReadiness = errors.New("no shared readiness set on this system")

const readinessEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newReadiness() (*readiness, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll for idle flows: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd for idle flows: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // id 0: stop
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll for idle flows: %w", err)
	}
	r := &readiness{epfd: epfd, wakefd: wakefd, cbs: map[uint64]func(){}, next: 1, done: make(chan struct{}), parkAfter: defaultParkAfter}
	go r.loop()
	return r, nil
}

func eventID(ev *unix.EpollEvent) uint64 { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

// loop waits for readiness and runs each woken side in a goroutine of its
// own. It ends when close writes to the eventfd.
func (r *readiness) loop() {
	defer close(r.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(r.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := 0; i < n; i++ {
			id := eventID(&events[i])
			if id == 0 {
				return
			}
			r.mu.Lock()
			cb := r.cbs[id]
			r.mu.Unlock()
			if cb != nil {
				go cb()
			}
		}
	}
}

// add registers rc's socket, armed: cb runs (once) when it is readable.
func (r *readiness) add(rc syscall.RawConn, cb func()) (uint64, error) {
	r.mu.Lock()
	id := r.next
	r.next++
	r.cbs[id] = cb
	r.mu.Unlock()
	if err := r.ctl(rc, unix.EPOLL_CTL_ADD, id); err != nil {
		r.mu.Lock()
		delete(r.cbs, id)
		r.mu.Unlock()
		return 0, err
	}
	return id, nil
}

// arm re-arms registration id: its callback runs once more when the socket
// is readable (at once if it already is).
func (r *readiness) arm(rc syscall.RawConn, id uint64) error {
	return r.ctl(rc, unix.EPOLL_CTL_MOD, id)
}

// remove ends registration id. A socket that was closed is already out of
// the set; its callback is forgotten either way.
func (r *readiness) remove(rc syscall.RawConn, id uint64) {
	_ = r.ctl(rc, unix.EPOLL_CTL_DEL, id)
	r.mu.Lock()
	delete(r.cbs, id)
	r.mu.Unlock()
}

// ctl runs op on the socket inside rc.Control, so that the descriptor is
// the socket's for the whole call: a socket closed meanwhile fails here
// instead of touching a descriptor number reused by another.
func (r *readiness) ctl(rc syscall.RawConn, op int, id uint64) error {
	var cerr error
	err := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: readinessEvents}
		setEventID(&ev, id)
		if op == unix.EPOLL_CTL_DEL {
			cerr = unix.EpollCtl(r.epfd, op, int(fd), nil)
			return
		}
		cerr = unix.EpollCtl(r.epfd, op, int(fd), &ev)
	})
	if err != nil {
		return err
	}
	return cerr
}

func (r *readiness) registered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cbs)
}

// close stops the loop and releases the set.
func (r *readiness) close() {
	var one = [8]byte{1}
	_, _ = unix.Write(r.wakefd, one[:])
	<-r.done
	unix.Close(r.epfd)
	unix.Close(r.wakefd)
}
