package relay

import (
	"net"
	"sync"

	"postern.dev/postern/internal/srcaddr"
)

// Bounds on TLS connections whose handshake is still running, per source
// and in all. Each holds a goroutine and a file descriptor for up to
// handshakeTimeout; without a bound one host could take the relay's file
// descriptors from every other client. A legitimate client has one or two
// handshakes running at a time; a NAT in front of an office whose network
// blocks UDP, reconnecting all at once after a relay restart, a few dozen.
const (
	maxTLSHandshakesPerAddr = 256
	maxTLSHandshakes        = 4096
)

// tlsAdmission counts TLS handshakes in progress by source (an IPv4
// address, or the /64 of an IPv6 one).
type tlsAdmission struct {
	perAddr, total int // limits

	mu sync.Mutex
	n  srcaddr.Counts
}

func newTLSAdmission(perAddr, total int) *tlsAdmission {
	if perAddr <= 0 {
		perAddr = maxTLSHandshakesPerAddr
	}
	if total <= 0 {
		total = maxTLSHandshakes
	}
	return &tlsAdmission{perAddr: perAddr, total: total}
}

// admit counts a handshake from a unless its source or the relay is at its
// limit; done releases it.
func (t *tlsAdmission) admit(a net.Addr) (done func(), ok bool) {
	k := srcaddr.Key(a)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n.Total() >= t.total || t.n.Of(k) >= t.perAddr {
		return nil, false
	}
	t.n.Add(k)
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.n.Done(k)
		})
	}, true
}
