// Package stunguard drops STUN messages that would crash pion before they
// reach it.
//
// pion/stun v0.6.1, the version pion/turn/v2 is built on, reads an address
// attribute's family before it checks the attribute's length: a
// XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS of zero or one
// byte panics the goroutine that decodes it. On the relay that goroutine is
// pion's server read loop (one Send indication from a client's address is
// enough); on a client or connector it is the TURN or connectivity-check
// reader. Every place a STUN message arrives from the network calls Check
// (or reads through PacketConn or StreamConn) before pion sees it.
//
// Check is deliberately stricter than pion for address attributes (exactly
// 8 bytes for IPv4, 20 for IPv6, as RFC 8489 section 14.1 defines them) and
// otherwise only walks the attribute list; everything else pion validates
// itself.
package stunguard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/pion/stun"
	"github.com/pion/turn/v2"
)

// ErrMalformed is wrapped by every error Check returns.
var ErrMalformed = errors.New("malformed STUN message")

const (
	headerSize = 20
)

// addressAttr reports whether attribute type t carries a transport address
// (RFC 8489 section 14 and 18.3, RFC 8656 section 18, RFC 5780).
func addressAttr(t uint16) bool {
	switch t {
	case 0x0001, // MAPPED-ADDRESS
		0x0002, // RESPONSE-ADDRESS (RFC 3489)
		0x0004, // SOURCE-ADDRESS (RFC 3489)
		0x0005, // CHANGED-ADDRESS (RFC 3489)
		0x0012, // XOR-PEER-ADDRESS
		0x0016, // XOR-RELAYED-ADDRESS
		0x0020, // XOR-MAPPED-ADDRESS
		0x8020, // XOR-MAPPED-ADDRESS (pre-RFC 5389 code point)
		0x8023, // ALTERNATE-SERVER
		0x802B, // RESPONSE-ORIGIN
		0x802C: // OTHER-ADDRESS
		return true
	}
	return false
}

// IsSTUN reports whether pion would decode b as a STUN message: 20 bytes
// or more with the magic cookie (stun.IsMessage; pion does not look at the
// first two bits).
func IsSTUN(b []byte) bool { return stun.IsMessage(b) }

// CheckServer is Check for a datagram pion's TURN server reads: valid
// ChannelData goes to the server's channel handler before it looks for
// STUN, so it passes, as does anything without the magic cookie.
func CheckServer(b []byte) error {
	if isChannelData(b) || !IsSTUN(b) {
		return nil
	}
	return Check(b)
}

// isChannelData is pion/turn's test (proto.IsChannelData): a channel
// number in 0x4000-0x7FFF and a length that fits.
func isChannelData(b []byte) bool {
	_, _, ok := ChannelData(b)
	return ok
}

// ChannelData returns the channel number and payload of ChannelData b
// (RFC 8656 12.4: a number in 0x4000-0x7FFF, a length, the payload; over
// UDP, padding after the payload may be present or not), ok false when b
// is no well-formed ChannelData.
func ChannelData(b []byte) (num uint16, payload []byte, ok bool) {
	if len(b) < 4 || b[0]&0xC0 != 0x40 {
		return 0, nil, false
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if 4+n > len(b) {
		return 0, nil, false
	}
	return binary.BigEndian.Uint16(b), b[4 : 4+n], true
}

// Check returns an error wrapping ErrMalformed when STUN message b has an
// attribute that runs past the message or an address attribute of the wrong
// size. Bytes after the length the header gives are ignored, as pion does.
func Check(b []byte) error {
	if !IsSTUN(b) {
		return fmt.Errorf("%w: no STUN header", ErrMalformed)
	}
	size := int(binary.BigEndian.Uint16(b[2:4]))
	if size%4 != 0 || headerSize+size > len(b) {
		return fmt.Errorf("%w: length %d in a %d-byte message", ErrMalformed, size, len(b))
	}
	attrs := b[headerSize : headerSize+size]
	for off := 0; off < len(attrs); {
		if len(attrs)-off < 4 {
			return fmt.Errorf("%w: attribute header cut at byte %d", ErrMalformed, headerSize+off)
		}
		t := binary.BigEndian.Uint16(attrs[off:])
		l := int(binary.BigEndian.Uint16(attrs[off+2:]))
		v := attrs[off+4:]
		if l > len(v) {
			return fmt.Errorf("%w: attribute 0x%04x of %d bytes runs past the message", ErrMalformed, t, l)
		}
		v = v[:l]
		if addressAttr(t) {
			if err := checkAddress(v); err != nil {
				return fmt.Errorf("%w: attribute 0x%04x: %v", ErrMalformed, t, err)
			}
		}
		off += 4 + (l+3)&^3
	}
	return nil
}

// checkAddress checks an address attribute's value: a zero byte, the
// family, the port and 4 or 16 bytes of address.
func checkAddress(v []byte) error {
	if len(v) < 4 {
		return fmt.Errorf("%d-byte address", len(v))
	}
	switch fam := binary.BigEndian.Uint16(v); {
	case fam == 0x01 && len(v) == 4+net.IPv4len, fam == 0x02 && len(v) == 4+net.IPv6len:
		return nil
	default:
		return fmt.Errorf("%d-byte address of family %d", len(v), fam)
	}
}

// PacketConn returns pc with every STUN message that fails Check dropped
// from its reads; anything else (ChannelData, QUIC) passes as it is. For
// the frames of a TURN-over-TLS client (pion's STUNConn).
func PacketConn(pc net.PacketConn) net.PacketConn { return &packetConn{PacketConn: pc} }

type packetConn struct{ net.PacketConn }

func (c *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(b)
		if err != nil || n > len(b) || !IsSTUN(b[:n]) || Check(b[:n]) == nil {
			return n, a, err
		}
	}
}

// maxFrame is the largest TURN frame on a stream: a STUN header and a
// 65,535-byte body, or ChannelData padded to 4 bytes.
const maxFrame = headerSize + 0xFFFF + 4

// StreamConn returns c (a TURN-over-TLS stream) with every STUN frame that
// fails Check cut out of what it reads; other frames pass whole and in
// order. The framing is pion's own (turn.STUNConn), so the reader on top
// sees the stream it would have seen without the bad frames; a stream that
// is neither STUN nor ChannelData fails as it would have.
func StreamConn(c net.Conn) net.Conn {
	return &streamConn{Conn: c, frames: turn.NewSTUNConn(c)}
}

type streamConn struct {
	net.Conn
	frames  *turn.STUNConn
	buf     []byte
	pending []byte
}

func (c *streamConn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.buf == nil {
			c.buf = make([]byte, maxFrame)
		}
		n, _, err := c.frames.ReadFrom(c.buf)
		if err != nil {
			return 0, err
		}
		if f := c.buf[:n]; !IsSTUN(f) || Check(f) == nil {
			c.pending = f
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}
