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
	s := &Server{Dialer: md, Authenticate: testAuth, Reply: func(err error) byte {
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
	if st, err := login(c, []byte{0, 2}, testUser, testPass); err != nil || st != 0 {
		t.Fatalf("login: status %d %v", st, err)
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

const testUser, testPass = "postern", "s3cret-for-tests"

func testAuth(u, p string) bool { return u == testUser && p == testPass }

// login offers methods and, when the server picks username/password, sends
// user and pass; it returns the RFC 1929 status (0xff: no method chosen).
func login(c net.Conn, methods []byte, user, pass string) (byte, error) {
	if _, err := c.Write(append([]byte{5, byte(len(methods))}, methods...)); err != nil {
		return 0, err
	}
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil {
		return 0, err
	}
	if m[1] != 2 {
		return m[1], nil
	}
	req := append([]byte{1, byte(len(user))}, user...)
	req = append(append(req, byte(len(pass))), pass...)
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	var st [2]byte
	if _, err := io.ReadFull(c, st[:]); err != nil {
		return 0, err
	}
	return st[1], nil
}

// TestAuthRequired: "no authentication" is refused, wrong credentials get
// status 1 and a closed connection, and no request reaches the dialer.
func TestAuthRequired(t *testing.T) {
	addr, md := startServer(t)
	cases := []struct {
		name       string
		methods    []byte
		user, pass string
		want       byte
	}{
		{"no authentication only", []byte{0}, "", "", 0xff},
		{"gssapi only", []byte{1}, "", "", 0xff},
		{"wrong password", []byte{0, 2}, testUser, "guess", 1},
		{"wrong user", []byte{2}, "root", testPass, 1},
		{"empty", []byte{2}, "", "", 1},
		{"password prefix", []byte{2}, testUser, testPass[:len(testPass)-1], 1},
	}
	for _, tc := range cases {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		st, err := login(c, tc.methods, tc.user, tc.pass)
		if err != nil || st != tc.want {
			t.Errorf("%s: status %#x %v, want %#x", tc.name, st, err, tc.want)
		}
		// A CONNECT sent anyway gets nothing: the server has closed.
		_, _ = c.Write([]byte{5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
		if n, err := c.Read(make([]byte, 16)); err == nil {
			t.Errorf("%s: server answered %d bytes after refusing", tc.name, n)
		}
		c.Close()
	}
	md.mu.Lock()
	defer md.mu.Unlock()
	if len(md.hosts) != 0 {
		t.Errorf("unauthenticated clients reached the dialer: %v", md.hosts)
	}
}

func TestServeNeedsAuthenticate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Server{Dialer: &memDialer{}}).Serve(context.Background(), ln); err == nil {
		t.Fatal("Serve without Authenticate started")
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

// TestUDPAssociateDeclaredPort: when the client names its UDP port in the
// request, datagrams from any other port (another local user racing for
// the relay) are ignored.
func TestUDPAssociateDeclaredPort(t *testing.T) {
	addr, _ := startServer(t)
	mine, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, rep := handshake(t, addr, cmdAssociate, "127.0.0.1", uint16(mine.LocalAddr().(*net.UDPAddr).Port))
	defer c.Close()
	if rep[1] != ReplySucceeded {
		t.Fatalf("reply %v", rep)
	}
	relay := &net.UDPAddr{IP: net.IP(rep[4:8]), Port: int(binary.BigEndian.Uint16(rep[8:10]))}
	// The intruder goes first; then the client.
	other.WriteTo(append(udpHeader("ns.corp.internal", 53), "intruder"...), relay)
	mine.WriteTo(append(udpHeader("ns.corp.internal", 53), "client"...), relay)
	buf := make([]byte, 1500)
	mine.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := mine.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, payload, _ := parseUDPHeader(buf[:n]); string(payload) != "echo:client" {
		t.Fatalf("client got %q", payload)
	}
	other.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := other.Read(buf); err == nil {
		t.Fatalf("intruder got %q", buf[:n])
	}
}
