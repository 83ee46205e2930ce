package socks5

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// memDialer connects CONNECT requests to in-memory pipes that echo, refuses
// host "refused", and carries UDP as an in-memory echo.
type memDialer struct {
	mu    sync.Mutex
	hosts []string
}

var errRefused = errors.New("refused by test")

func (m *memDialer) DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	m.mu.Lock()
	m.hosts = append(m.hosts, host)
	m.mu.Unlock()
	if host == "refused" {
		return nil, errRefused
	}
	a, b := net.Pipe()
	go func() { defer b.Close(); _, _ = io.Copy(b, b) }()
	return a, nil
}

type memDatagram struct {
	ch     chan []byte
	closed chan struct{}
	once   sync.Once
}

func (d *memDatagram) WriteDatagram(p []byte) error {
	select {
	case d.ch <- append([]byte("echo:"), p...):
		return nil
	case <-d.closed:
		return io.ErrClosedPipe
	}
}

func (d *memDatagram) ReadDatagram(buf []byte) ([]byte, error) {
	select {
	case p := <-d.ch:
		return buf[:copy(buf, p)], nil
	case <-d.closed:
		return nil, io.EOF
	}
}

func (d *memDatagram) Close() error { d.once.Do(func() { close(d.closed) }); return nil }

func (m *memDialer) DialUDP(ctx context.Context, host string, port uint16) (DatagramConn, error) {
	return &memDatagram{ch: make(chan []byte, 8), closed: make(chan struct{})}, nil
}

func startServer(t *testing.T) (string, *memDialer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	md := &memDialer{}
	s := &Server{Dialer: md, Reply: func(err error) byte {
		if errors.Is(err, errRefused) {
			return ReplyConnectionRefused
		}
		return ReplyGeneralFailure
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String(), md
}

func handshake(t *testing.T, addr string, cmd byte, host string, port uint16) (net.Conn, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte{5, 2, 2, 0}) // offers user/pass and none
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("method: %v %v", m, err)
	}
	req := []byte{5, cmd, 0, 3, byte(len(host))}
	req = append(req, host...)
	req = binary.BigEndian.AppendUint16(req, port)
	_, _ = c.Write(req)
	rep := make([]byte, 10)
	if _, err := io.ReadFull(c, rep); err != nil {
		t.Fatalf("reply: %v", err)
	}
	return c, rep
}

func TestConnectPassesNames(t *testing.T) {
	addr, md := startServer(t)
	c, rep := handshake(t, addr, cmdConnect, "db.corp.internal", 5432)
	defer c.Close()
	if rep[1] != ReplySucceeded {
		t.Fatalf("reply %d", rep[1])
	}
	_, _ = c.Write([]byte("ping"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo %q %v", b, err)
	}
	md.mu.Lock()
	defer md.mu.Unlock()
	if len(md.hosts) != 1 || md.hosts[0] != "db.corp.internal" {
		t.Errorf("dialer saw %v", md.hosts)
	}
}

func TestConnectRefusedReply(t *testing.T) {
	addr, _ := startServer(t)
	c, rep := handshake(t, addr, cmdConnect, "refused", 22)
	defer c.Close()
	if rep[1] != ReplyConnectionRefused {
		t.Fatalf("reply %d, want %d", rep[1], ReplyConnectionRefused)
	}
}

func TestNoAcceptableMethod(t *testing.T) {
	addr, _ := startServer(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{5, 1, 2})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m[1] != 0xff {
		t.Fatalf("method reply %v %v", m, err)
	}
}

func TestUDPAssociate(t *testing.T) {
	addr, _ := startServer(t)
	c, rep := handshake(t, addr, cmdAssociate, "0.0.0.0", 0)
	defer c.Close()
	if rep[1] != ReplySucceeded || rep[3] != atypIPv4 {
		t.Fatalf("reply %v", rep)
	}
	relay := &net.UDPAddr{IP: net.IP(rep[4:8]), Port: int(binary.BigEndian.Uint16(rep[8:10]))}
	uc, err := net.DialUDP("udp", nil, relay)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	pkt := append(udpHeader("ns.corp.internal", 53), []byte("query")...)
	if _, err := uc.Write(pkt); err != nil {
		t.Fatal(err)
	}
	_ = uc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	n, err := uc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	host, port, payload, err := parseUDPHeader(buf[:n])
	if err != nil || host != "ns.corp.internal" || port != 53 || string(payload) != "echo:query" {
		t.Fatalf("udp reply %s:%d %q %v", host, port, payload, err)
	}
	// Fragments are dropped, not misdelivered.
	if _, _, _, err := parseUDPHeader([]byte{0, 0, 1, 1, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Error("fragment accepted")
	}
}
