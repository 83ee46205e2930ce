package relay

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/pion/stun"
)

// FuzzRelayUDP sends each input to a real relay's UDP port from the address
// of a live allocation (so Send indications, ChannelData and requests reach
// pion's allocation handlers), then checks that the relay still answers a
// Binding request from another socket. pion's server reads one socket in one
// goroutine, in order, so that answer means the input was handled; a panic
// anywhere in the relay's or pion's handling ends the run on this input.
func FuzzRelayUDP(f *testing.F) {
	fx := newFixture(f, nil)
	u, p := creds(time.Now().Add(time.Hour), "user-fuzz", secret)
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	if _, _, err := fx.turnClientOn(f, client, u, p); err != nil {
		f.Fatalf("allocate: %v", err)
	}
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { probe.Close() })
	relay := fx.r.UDPAddr()

	f.Add([]byte(sendIndicationEmptyPeer(f)))
	peer := &stun.XORMappedAddress{IP: net.ParseIP("127.0.0.1"), Port: 9}
	for _, m := range []*stun.Message{
		mustBuild(f, stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
			setAs(peer, stun.AttrXORPeerAddress), stun.RawAttribute{Type: stun.AttrData, Value: []byte("x")}),
		mustBuild(f, stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), setAs(peer, stun.AttrXORPeerAddress)),
		mustBuild(f, stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{0x40, 0, 0, 0}}, setAs(peer, stun.AttrXORPeerAddress)),
		mustBuild(f, stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}),
	} {
		f.Add(m.Raw)
	}
	f.Add([]byte{0x40, 0x00, 0x00, 0x03, 1, 2, 3})
	f.Add([]byte{0x40, 0x00, 0xff, 0xff})

	buf := make([]byte, 1500)
	f.Fuzz(func(t *testing.T, d []byte) {
		if _, err := client.WriteTo(d, relay); err != nil {
			return // too large for a datagram
		}
		req := mustBuild(t, stun.TransactionID, stun.BindingRequest)
		if _, err := probe.WriteTo(req.Raw, relay); err != nil {
			t.Fatal(err)
		}
		_ = probe.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, _, err := probe.ReadFrom(buf)
			if err != nil {
				t.Fatalf("the relay stopped answering after a %d-byte datagram: %v", len(d), err)
			}
			if n >= 20 && bytes.Equal(buf[8:20], req.TransactionID[:]) {
				return
			}
		}
	})
}

func mustBuild(t testing.TB, setters ...stun.Setter) *stun.Message {
	t.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// setAs adds an XOR address as attribute typ.
func setAs(a *stun.XORMappedAddress, typ stun.AttrType) stun.Setter {
	return setterFunc(func(m *stun.Message) error { return a.AddToAs(m, typ) })
}

type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }
