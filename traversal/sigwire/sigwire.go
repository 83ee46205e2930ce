// Package sigwire is the signaling protocol spoken on a relay's TLS listener
// between clients, connectors and the relay (ALPN "postern-signal/1"), plus the
// ALPN that selects TURN over TLS on the same listener. Messages are JSON
// objects, one per line, at most MaxMessageSize bytes each.
//
// A client opens one signaling connection per connector it dials: its first
// message is a hello with role "client", the connector id and a Connection
// Token for that connector; the TLS client certificate is the device
// certificate whose key the token's cnf.jkt binds. A connector opens one
// connection per relay with its deployment-CA client certificate (CN
// "connector:<id>") and sends a hello with role "connector". The relay answers
// a hello with "welcome" (carrying the client's session id) or "error", then
// forwards offers (client to connector), answers and candidates (both ways)
// and bye, stamping the session id and, on offers, the verified principal and
// device. Ping is answered with pong.
package sigwire

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// ALPN protocol ids on the relay's TLS listener.
const (
	ALPNSignal = "postern-signal/1"
	ALPNTURN   = "stun.turn" // IANA id for TURN over (D)TLS
)

// MaxMessageSize bounds one signaling line.
const MaxMessageSize = 64 << 10

// WriteTimeout bounds one write: a peer that does not read is dropped rather
// than stalling the sender.
const WriteTimeout = 5 * time.Second

// Message types.
const (
	TypeHello     = "hello"
	TypeWelcome   = "welcome"
	TypeOffer     = "offer"
	TypeAnswer    = "answer"
	TypeCandidate = "candidate"
	TypeBye       = "bye"
	TypeError     = "error"
	TypePing      = "ping"
	TypePong      = "pong"
)

// Roles in a hello.
const (
	RoleClient    = "client"
	RoleConnector = "connector"
)

// Candidate types.
const (
	CandHost  = "host"
	CandSrflx = "srflx"
	CandRelay = "relay"
	CandPrflx = "prflx"
)

// Sentinel errors.
var (
	ErrTooLarge   = errors.New("signaling message too large")
	ErrBadMessage = errors.New("malformed signaling message")
)

// Candidate is one transport address a peer can be reached at ("ip:port", UDP).
type Candidate struct {
	Type string `json:"type"`
	Addr string `json:"addr"`
}

// Validate checks the candidate's address and type.
func (c Candidate) Validate() error {
	switch c.Type {
	case CandHost, CandSrflx, CandRelay, CandPrflx:
	default:
		return fmt.Errorf("%w: candidate type %q", ErrBadMessage, c.Type)
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("%w: candidate address %q: %v", ErrBadMessage, c.Addr, err)
	}
	if net.ParseIP(host) == nil {
		return fmt.Errorf("%w: candidate address %q is not an IP", ErrBadMessage, c.Addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("%w: candidate port %q", ErrBadMessage, port)
	}
	return nil
}

// UDPAddr parses the candidate's address.
func (c Candidate) UDPAddr() (*net.UDPAddr, error) {
	return net.ResolveUDPAddr("udp", c.Addr)
}

// Message is one signaling message.
type Message struct {
	Type      string `json:"type"`
	Role      string `json:"role,omitempty"`
	Connector string `json:"connector,omitempty"`
	Token     string `json:"token,omitempty"`
	Session   string `json:"session,omitempty"`
	// ICE-style credentials of the sender's check session (offer, answer).
	Ufrag      string      `json:"ufrag,omitempty"`
	Pwd        string      `json:"pwd,omitempty"`
	Candidates []Candidate `json:"candidates,omitempty"`
	// Set by the relay on forwarded offers.
	Principal string `json:"principal,omitempty"`
	Device    string `json:"device,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Conn reads and writes messages on a stream; Write is safe for concurrent use.
type Conn struct {
	rw  io.ReadWriteCloser
	r   *bufio.Reader
	wmu sync.Mutex
}

// NewConn wraps a stream (a TLS connection).
func NewConn(rw io.ReadWriteCloser) *Conn {
	return &Conn{rw: rw, r: bufio.NewReaderSize(rw, 4096)}
}

// Read returns the next message.
func (c *Conn) Read() (*Message, error) {
	var line []byte
	for {
		frag, isPrefix, err := c.r.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, frag...)
		if len(line) > MaxMessageSize {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, MaxMessageSize)
		}
		if !isPrefix {
			break
		}
	}
	var m Message
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if m.Type == "" {
		return nil, fmt.Errorf("%w: missing type", ErrBadMessage)
	}
	if len(m.Candidates) > 64 {
		return nil, fmt.Errorf("%w: %d candidates", ErrBadMessage, len(m.Candidates))
	}
	return &m, nil
}

// Write sends one message.
func (c *Conn) Write(m *Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode signaling message: %w", err)
	}
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	b = append(b, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d, ok := c.rw.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Now().Add(WriteTimeout))
	}
	_, err = c.rw.Write(b)
	return err
}

// SetReadDeadline sets the stream's read deadline when it has one.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if d, ok := c.rw.(interface{ SetReadDeadline(time.Time) error }); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}

// Close closes the stream.
func (c *Conn) Close() error { return c.rw.Close() }
