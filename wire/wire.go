// Package wire defines Postern's client↔connector stream protocol, version 1.
//
// A client holds one QUIC connection (ALPN "postern/1") per connector. The first
// bidirectional stream the client opens is the control stream; every later stream
// carries exactly one flow (one TCP connection, one UDP 5-tuple, or one ICMP echo
// session).
//
// Every stream begins with one frame in the same envelope:
//
//	0        1        2        3        4 ...
//	+--------+--------+--------+--------+------------------+
//	| ver=1  |  kind  |  length (uint16 BE) | payload ...   |
//	+--------+--------+--------+--------+------------------+
//
// length counts the payload only and is at most MaxPayload for flow headers and
// MaxTokenPayload for token frames. A frame with another version, an unknown kind
// or an oversized length is refused with StatusBadRequest and the stream is reset;
// other streams of the connection are not affected.
//
// The connector answers the first frame of each stream with a status frame:
//
//	+--------+--------+--------+------------------+
//	| ver=1  | status | msglen | message (msglen) |
//	+--------+--------+--------+------------------+
//
// and, only when status is StatusOK, payload follows in both directions.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Version is the protocol version carried in the first byte of every frame.
const Version = 1

// ALPN is the TLS application protocol negotiated on client↔connector QUIC.
const ALPN = "postern/1"

// Frame kinds.
const (
	// KindToken (control stream): payload is a Connection Token (compact JWT).
	// Sent first on the control stream and again, before expiry, to refresh.
	// Each token frame is answered with a status frame.
	KindToken byte = 1
	// KindOpen (flow stream): payload is a flow header, see OpenHeader.
	KindOpen byte = 2
)

// Size limits.
const (
	MaxPayload      = 512      // flow header payload
	MaxTokenPayload = 8 * 1024 // token frame payload
	MaxDatagram     = 65535    // one UDP datagram or ICMP body in a flow
)

// Protocols carried in a flow header.
const (
	ProtoTCP  byte = 6
	ProtoUDP  byte = 17
	ProtoICMP byte = 1
)

// Status codes answered by the connector.
type Status byte

const (
	StatusOK              Status = 0 // flow established; payload follows
	StatusDenied          Status = 1 // policy does not allow this principal/resource/port/protocol
	StatusRefused         Status = 2 // destination actively refused (TCP RST)
	StatusUnreachable     Status = 3 // no route, name does not resolve, host unreachable
	StatusTimeout         Status = 4 // destination did not answer in time
	StatusBadRequest      Status = 5 // malformed or oversized header
	StatusUnauthenticated Status = 6 // no valid Connection Token on this connection
	// Access governance: the resource's requirements are not met; the
	// message says what to do.
	StatusMFARequired      Status = 7 // a second factor within the resource's window is needed
	StatusPosture          Status = 8 // the device does not satisfy a required posture profile
	StatusApprovalRequired Status = 9 // an approved access request is needed (or the access is locked)
	// StatusTooManyFlows: the device has as many flows open at this
	// connector as the connector allows one device; closing some lets new
	// ones through. Older clients show it as status(10) and fail the flow.
	StatusTooManyFlows Status = 10
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusDenied:
		return "denied"
	case StatusRefused:
		return "refused"
	case StatusUnreachable:
		return "unreachable"
	case StatusTimeout:
		return "timeout"
	case StatusBadRequest:
		return "bad request"
	case StatusUnauthenticated:
		return "unauthenticated"
	case StatusMFARequired:
		return "mfa required"
	case StatusPosture:
		return "posture"
	case StatusApprovalRequired:
		return "approval required"
	case StatusTooManyFlows:
		return "too many flows"
	}
	return fmt.Sprintf("status(%d)", byte(s))
}

// Sentinel errors.
var (
	ErrVersion   = errors.New("wire: unsupported protocol version")
	ErrKind      = errors.New("wire: unexpected frame kind")
	ErrTooLarge  = errors.New("wire: frame too large")
	ErrMalformed = errors.New("wire: malformed frame")
)

// OpenHeader is the payload of a KindOpen frame:
//
//	+-------+----------------+--------+-------------+--------+--------------+
//	| proto | port (u16 BE)  | ridlen | resource id | dstlen | destination  |
//	+-------+----------------+--------+-------------+--------+--------------+
//
// Destination is a DNS name (for name resources) or the textual IP address.
// Port is 0 for ICMP.
type OpenHeader struct {
	Proto       byte
	Port        uint16
	ResourceID  string
	Destination string
}

// DestinationAddr returns the destination as an IP address when it is one.
func (h OpenHeader) DestinationAddr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(h.Destination)
	return a, err == nil
}

// WriteFrame writes one frame envelope with the given kind and payload.
func WriteFrame(w io.Writer, kind byte, payload []byte) error {
	limit := MaxPayload
	if kind == KindToken {
		limit = MaxTokenPayload
	}
	if len(payload) > limit {
		return ErrTooLarge
	}
	buf := make([]byte, 4+len(payload))
	buf[0] = Version
	buf[1] = kind
	binary.BigEndian.PutUint16(buf[2:4], uint16(len(payload)))
	copy(buf[4:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame envelope and returns its kind and payload. It never
// allocates more than the limit for the kind it reads.
func ReadFrame(r io.Reader) (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	if hdr[0] != Version {
		return 0, nil, fmt.Errorf("%w: %d", ErrVersion, hdr[0])
	}
	kind := hdr[1]
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	switch kind {
	case KindToken:
		if n > MaxTokenPayload {
			return 0, nil, ErrTooLarge
		}
	case KindOpen:
		if n > MaxPayload {
			return 0, nil, ErrTooLarge
		}
	default:
		return 0, nil, fmt.Errorf("%w: %d", ErrKind, kind)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("read frame payload: %w", err)
	}
	return kind, payload, nil
}

// Marshal encodes the header as a KindOpen payload.
func (h OpenHeader) Marshal() ([]byte, error) {
	if len(h.ResourceID) > 255 || len(h.Destination) > 255 {
		return nil, ErrTooLarge
	}
	b := make([]byte, 0, 5+len(h.ResourceID)+len(h.Destination))
	b = append(b, h.Proto)
	b = binary.BigEndian.AppendUint16(b, h.Port)
	b = append(b, byte(len(h.ResourceID)))
	b = append(b, h.ResourceID...)
	b = append(b, byte(len(h.Destination)))
	b = append(b, h.Destination...)
	return b, nil
}

// ParseOpenHeader decodes a KindOpen payload.
func ParseOpenHeader(p []byte) (OpenHeader, error) {
	var h OpenHeader
	if len(p) < 5 {
		return h, ErrMalformed
	}
	h.Proto = p[0]
	switch h.Proto {
	case ProtoTCP, ProtoUDP, ProtoICMP:
	default:
		return h, fmt.Errorf("%w: protocol %d", ErrMalformed, h.Proto)
	}
	h.Port = binary.BigEndian.Uint16(p[1:3])
	rl := int(p[3])
	p = p[4:]
	if len(p) < rl+1 {
		return h, ErrMalformed
	}
	h.ResourceID = string(p[:rl])
	p = p[rl:]
	dl := int(p[0])
	p = p[1:]
	if len(p) != dl || dl == 0 {
		return h, ErrMalformed
	}
	h.Destination = string(p)
	return h, nil
}

// WriteOpen writes a KindOpen frame carrying h.
func WriteOpen(w io.Writer, h OpenHeader) error {
	p, err := h.Marshal()
	if err != nil {
		return err
	}
	return WriteFrame(w, KindOpen, p)
}

// WriteStatus writes a status frame; msg is truncated to 255 bytes.
func WriteStatus(w io.Writer, s Status, msg string) error {
	if len(msg) > 255 {
		msg = msg[:255]
	}
	buf := make([]byte, 3+len(msg))
	buf[0] = Version
	buf[1] = byte(s)
	buf[2] = byte(len(msg))
	copy(buf[3:], msg)
	_, err := w.Write(buf)
	return err
}

// ReadStatus reads a status frame.
func ReadStatus(r io.Reader) (Status, string, error) {
	var hdr [3]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, "", err
	}
	if hdr[0] != Version {
		return 0, "", fmt.Errorf("%w: %d", ErrVersion, hdr[0])
	}
	msg := make([]byte, hdr[2])
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, "", fmt.Errorf("read status message: %w", err)
	}
	return Status(hdr[1]), string(msg), nil
}

// Datagram framing for UDP and ICMP flows after StatusOK: each datagram is
//
//	+----------------+-----------------+
//	| length (u16BE) | datagram bytes  |
//	+----------------+-----------------+
//
// For ICMP flows a datagram is an echo body: identifier(2) sequence(2) data;
// the connector answers each request with the body of the real echo reply.

// WriteDatagram writes one length-prefixed datagram.
func WriteDatagram(w io.Writer, d []byte) error {
	if len(d) > MaxDatagram {
		return ErrTooLarge
	}
	buf := make([]byte, 2+len(d))
	binary.BigEndian.PutUint16(buf, uint16(len(d)))
	copy(buf[2:], d)
	_, err := w.Write(buf)
	return err
}

// ReadDatagram reads one length-prefixed datagram into buf (which must hold
// MaxDatagram bytes) and returns the datagram slice.
func ReadDatagram(r io.Reader, buf []byte) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n > len(buf) {
		return nil, ErrTooLarge
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// ServerNameSuffix ends the TLS server name a client sends to a connector.
const ServerNameSuffix = ".postern.invalid"

// ServerName is the TLS server name a client sends to a connector: the first 32
// hex characters of the certificate digest its Connection Token carries, so that
// a connector serving two certificates during a rotation presents the right one.
func ServerName(certDigest string) string {
	if len(certDigest) > 32 {
		certDigest = certDigest[:32]
	}
	return certDigest + ServerNameSuffix
}
