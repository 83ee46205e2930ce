package traversal

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun"
)

// lossyServer is a packetIO whose STUN server loses the first drop requests
// and answers later ones with a binding success naming mapped.
type lossyServer struct {
	mu     sync.Mutex
	m      *mux
	drop   int
	bad    int // answers after the lost ones that carry an empty XOR-MAPPED-ADDRESS
	sent   int
	mapped *net.UDPAddr
}

func (l *lossyServer) WriteTo(b []byte, addr net.Addr) (int, error) {
	l.mu.Lock()
	l.sent++
	lost := l.sent <= l.drop
	malformed := !lost && l.sent <= l.drop+l.bad
	l.mu.Unlock()
	if lost {
		return len(b), nil
	}
	req := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := req.Decode(); err != nil {
		return 0, err
	}
	var mapped stun.Setter = &stun.XORMappedAddress{IP: l.mapped.IP, Port: l.mapped.Port}
	if malformed {
		// Last in the message: pion/stun v0.6.1 panicked reading it.
		mapped = stun.RawAttribute{Type: stun.AttrXORMappedAddress}
	}
	resp, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess, mapped)
	if err != nil {
		return 0, err
	}
	go l.m.handle(resp.Raw, addr)
	return len(b), nil
}

func (l *lossyServer) ReadNonQUICPacket(ctx context.Context, _ []byte) (int, net.Addr, error) {
	<-ctx.Done()
	return 0, nil, ctx.Err()
}

// TestProbeRetransmitsLostBindings: one lost STUN packet must not make
// netcheck report a relay's UDP port unreachable; the probe sends again
// (250 ms, then 500 ms) and reports the answered attempt's round trip.
func TestProbeRetransmitsLostBindings(t *testing.T) {
	io := &lossyServer{drop: 2, mapped: udp("192.0.2.7:40001")}
	m := newMux(io, "udp", testLogger())
	io.m = m
	resp, rtt, err := m.probe(context.Background(), udp("203.0.113.1:3478"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := mappedAddr(resp.msg); err != nil || a.String() != "192.0.2.7:40001" {
		t.Fatalf("mapped %v (%v)", a, err)
	}
	if io.sent != 3 {
		t.Fatalf("sent %d requests, want 3", io.sent)
	}
	if rtt > 200*time.Millisecond {
		t.Fatalf("rtt %v counts the lost attempts", rtt)
	}
}

// TestProbeIgnoresMalformedAnswers: an answer whose XOR-MAPPED-ADDRESS is
// empty is dropped (it used to panic the reader); the retransmission's
// good answer counts.
func TestProbeIgnoresMalformedAnswers(t *testing.T) {
	io := &lossyServer{bad: 1, mapped: udp("192.0.2.7:40001")}
	m := newMux(io, "udp", testLogger())
	io.m = m
	resp, _, err := m.probe(context.Background(), udp("203.0.113.1:3478"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := mappedAddr(resp.msg); err != nil || a.String() != "192.0.2.7:40001" {
		t.Fatalf("mapped %v (%v)", a, err)
	}
	if io.sent != 2 {
		t.Fatalf("sent %d requests, want 2 (the first answer was malformed)", io.sent)
	}
}

// TestProbeGivesUpAtTotal: a server that never answers costs the probe its
// total budget, not more, and the error says there was no response.
func TestProbeGivesUpAtTotal(t *testing.T) {
	io := &lossyServer{drop: 1 << 30, mapped: udp("192.0.2.7:40001")}
	m := newMux(io, "udp", testLogger())
	io.m = m
	start := time.Now()
	_, _, err := m.probe(context.Background(), udp("203.0.113.1:3478"), 600*time.Millisecond)
	if err == nil || !errors.Is(err, errTimeout) {
		t.Fatalf("err %v, want no response", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	if io.sent != 2 {
		t.Fatalf("sent %d requests in 600 ms, want 2 (250 ms, then the 350 ms left)", io.sent)
	}
}
