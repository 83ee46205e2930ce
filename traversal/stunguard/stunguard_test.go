package stunguard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/pion/stun"
	"github.com/pion/turn/v2"
)

func build(t testing.TB, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

var dataIndication = stun.NewType(stun.MethodData, stun.ClassIndication)

// raw is an attribute with any value, as a hostile sender writes it.
func raw(typ stun.AttrType, v []byte) stun.Setter { return stun.RawAttribute{Type: typ, Value: v} }

func TestCheck(t *testing.T) {
	v4 := &stun.XORMappedAddress{IP: net.ParseIP("192.0.2.7"), Port: 4000}
	v6 := &stun.XORMappedAddress{IP: net.ParseIP("2001:db8::7"), Port: 4000}
	good := map[string][]byte{
		"binding request":            build(t, stun.BindingRequest, stun.Fingerprint),
		"binding response, IPv4":     build(t, stun.BindingSuccess, v4, stun.Fingerprint),
		"binding response, IPv6":     build(t, stun.BindingSuccess, v6),
		"data indication":            build(t, dataIndication, xorPeer(v4), raw(stun.AttrData, []byte("hello"))),
		"unknown attribute, 3 bytes": build(t, stun.BindingRequest, raw(0x7777, []byte{1, 2, 3})),
	}
	for name, b := range good {
		if err := Check(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string][]byte{
		"empty XOR-PEER-ADDRESS":      build(t, dataIndication, raw(stun.AttrXORPeerAddress, nil), raw(stun.AttrData, []byte("x"))),
		"one-byte XOR-MAPPED-ADDRESS": build(t, stun.BindingSuccess, raw(stun.AttrXORMappedAddress, []byte{1})),
		"IPv4 family with 16 bytes":   build(t, stun.BindingSuccess, raw(stun.AttrXORMappedAddress, append([]byte{0, 1, 0, 80}, make([]byte, 16)...))),
		"unknown family":              build(t, stun.BindingSuccess, raw(stun.AttrXORRelayedAddress, []byte{0, 3, 0, 80, 1, 2, 3, 4})),
		"short MAPPED-ADDRESS":        build(t, stun.BindingSuccess, raw(stun.AttrMappedAddress, []byte{0, 1, 0})),
		"not STUN":                    []byte("GET / HTTP/1.1\r\n\r\n......"),
	}
	cut := build(t, stun.BindingRequest, raw(stun.AttrSoftware, []byte("postern")))
	binary.BigEndian.PutUint16(cut[22:24], 200) // attribute longer than the message
	bad["attribute past the end"] = cut
	long := build(t, stun.BindingRequest)
	binary.BigEndian.PutUint16(long[2:4], 8) // header says 8 more bytes than there are
	bad["length past the end"] = long
	for name, b := range bad {
		if err := Check(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Check = %v, want ErrMalformed", name, err)
		}
	}
}

func xorPeer(a *stun.XORMappedAddress) stun.Setter {
	return setterFunc(func(m *stun.Message) error { return a.AddToAs(m, stun.AttrXORPeerAddress) })
}

type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

// FuzzCheck: whatever Check lets through, every pion getter our code and
// pion/turn call decodes without a panic.
func FuzzCheck(f *testing.F) {
	f.Add(build(f, stun.BindingSuccess, &stun.XORMappedAddress{IP: net.ParseIP("192.0.2.7"), Port: 1}))
	f.Add(build(f, dataIndication, raw(stun.AttrXORPeerAddress, nil), raw(stun.AttrData, []byte("x"))))
	f.Add(build(f, stun.BindingSuccess, raw(stun.AttrErrorCode, []byte{0, 0, 4, 1}), raw(stun.AttrAlternateServer, []byte{0, 2})))
	f.Add(build(f, stun.BindingRequest, raw(stun.AttrUsername, []byte("a:b")), raw(stun.AttrMessageIntegrity, nil), raw(stun.AttrFingerprint, []byte{1})))
	f.Fuzz(func(t *testing.T, b []byte) {
		if Check(b) != nil {
			return
		}
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		if m.Decode() != nil {
			return
		}
		for _, typ := range []stun.AttrType{stun.AttrXORMappedAddress, stun.AttrXORPeerAddress, stun.AttrXORRelayedAddress,
			stun.AttrMappedAddress, stun.AttrAlternateServer, stun.AttrResponseOrigin, stun.AttrOtherAddress} {
			var xa stun.XORMappedAddress
			_ = xa.GetFromAs(m, typ)
			var ma stun.MappedAddress
			_ = ma.GetFromAs(m, typ)
		}
		var ec stun.ErrorCodeAttribute
		_ = ec.GetFrom(m)
		var ua stun.UnknownAttributes
		_ = ua.GetFrom(m)
		var u stun.Username
		_ = u.GetFrom(m)
		_ = stun.Fingerprint.Check(m)
		// The relay checks long-term, the connectivity checks short-term
		// integrity (Check rewrites the length in place and restores it).
		_ = stun.NewLongTermIntegrity("u", "realm", "p").Check(m)
		_ = stun.NewShortTermIntegrity("pwd").Check(m)
		var n stun.Nonce
		_ = n.GetFrom(m)
		var r stun.Realm
		_ = r.GetFrom(m)
	})
}

func TestStreamConnDropsOnlyBadFrames(t *testing.T) {
	good1 := build(t, stun.BindingRequest, stun.Fingerprint)
	bad := build(t, dataIndication, raw(stun.AttrXORPeerAddress, nil), raw(stun.AttrData, []byte("x")))
	chanData := []byte{0x40, 0x01, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0, 0, 0} // padded to 4 on a stream
	big := build(t, dataIndication, raw(stun.AttrData, bytes.Repeat([]byte{7}, 3000)))
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		defer b.Close()
		var all []byte
		for _, f := range [][]byte{good1, bad, chanData, big, bad, good1} {
			all = append(all, f...)
		}
		// Written in odd pieces, as TLS records cut a stream.
		for len(all) > 0 {
			n := min(len(all), 777)
			if _, err := b.Write(all[:n]); err != nil {
				return
			}
			all = all[n:]
		}
	}()
	_ = a.SetDeadline(time.Now().Add(5 * time.Second))
	r := turn.NewSTUNConn(StreamConn(a))
	buf := make([]byte, 4096)
	for i, want := range [][]byte{good1, chanData, big, good1} {
		n, _, err := r.ReadFrom(buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("frame %d: got %d bytes %x..., want %d bytes %x...", i, n, buf[:min(n, 8)], len(want), want[:8])
		}
	}
}

func TestPacketConnDropsOnlyBadSTUN(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := net.Dial("udp", l.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	good := build(t, stun.BindingRequest)
	bad := build(t, stun.BindingSuccess, raw(stun.AttrXORMappedAddress, []byte{1}))
	other := []byte{0x40, 0x01, 0x00, 0x01, 'x'}
	for _, d := range [][]byte{bad, good, bad, other} {
		if _, err := s.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	pc := PacketConn(l)
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for i, want := range [][]byte{good, other} {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: got %x, want %x", i, buf[:n], want)
		}
	}
}
