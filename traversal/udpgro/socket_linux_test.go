package udpgro

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"

	"postern.dev/postern/traversal/udpbatch"
)

func listen(t *testing.T) *net.UDPConn { return listenOn(t, net.IPv4(127, 0, 0, 1)) }

func listenOn(t *testing.T, ip net.IP) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// countingReader counts the system calls under a Conn.
type countingReader struct {
	batchReader
	calls int
}

func (c *countingReader) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	c.calls++
	return c.batchReader.ReadBatch(ms, flags)
}

// BatchIO reads a UDP socket through GRO, through plain recvmmsg batches
// when GRO is turned off, and gives nil for a socket that is no UDP socket;
// either batch reader delivers the socket's datagrams.
func TestBatchIOPrefersGRO(t *testing.T) {
	rx, tx := listen(t), listen(t)
	bio := BatchIO(rx)
	if _, ok := bio.(*Conn); !ok {
		t.Fatalf("BatchIO of a UDP socket: %T, want *udpgro.Conn", bio)
	}
	batchIORoundTrip(t, bio, rx, tx, "gro")

	t.Setenv(DisableEnv, "1")
	plain, tx2 := listen(t), listen(t)
	bio = BatchIO(plain)
	if _, ok := bio.(*Conn); ok || bio == nil {
		t.Fatalf("BatchIO with %s=1: %T, want the plain batch reader", DisableEnv, bio)
	}
	batchIORoundTrip(t, bio, plain, tx2, "plain")

	if bio := BatchIO(struct{ net.PacketConn }{}); bio != nil {
		t.Fatalf("BatchIO of a socket that is no *net.UDPConn: %T, want nil", bio)
	}
}

// batchIORoundTrip sends payload from tx to rx and reads it through bio.
func batchIORoundTrip(t *testing.T, bio udpbatch.BatchIO, rx, tx *net.UDPConn, payload string) {
	t.Helper()
	if _, err := tx.WriteTo([]byte(payload), rx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := rx.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	ms := []ipv4.Message{{Buffers: [][]byte{make([]byte, 1500)}, OOB: make([]byte, 64)}}
	n, err := bio.ReadBatch(ms, 0)
	if err != nil || n != 1 || string(ms[0].Buffers[0][:ms[0].N]) != payload {
		t.Fatalf("read through %T: n=%d err=%v data=%q, want %q", bio, n, err, ms[0].Buffers[0][:ms[0].N], payload)
	}
}

// On a real socket, a GSO run sent to a GRO socket arrives as one buffer
// and comes out as its datagrams, byte for byte.
func TestRealSocketReceivesRunsCoalesced(t *testing.T) {
	rx, tx := listen(t), listen(t)
	if !enable(rx) {
		t.Fatal("UDP_GRO refused on loopback (Linux 5.0 and later offer it)")
	}
	cr := &countingReader{batchReader: ipv4.NewPacketConn(rx)}
	c := newConn(rx, cr)
	w := udpbatch.NewWriter(tx)
	if !w.GSO() {
		t.Skip("no UDP GSO on this kernel: nothing to coalesce")
	}
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	const count, size = 40, 1200
	var want [][]byte
	for i := 0; i < count; i++ {
		p := datagram(i, size)
		if i == count-1 {
			p = p[:300]
		}
		want = append(want, p)
		w.Append(nil, p, to)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	ms := messages(8, 1452)
	var got [][]byte
	for len(got) < count {
		n, err := c.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got), err)
		}
		for _, m := range ms[:n] {
			got = append(got, append([]byte{}, m.Buffers[0][:m.N]...))
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d differs (%d bytes, want %d)", i, len(got[i]), len(want[i]))
		}
	}
	if cr.calls >= count/2 {
		t.Errorf("%d system calls for %d datagrams: the run was not coalesced", cr.calls, count)
	}
}

func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "udpgro"}, DNSNames: []string{"udpgro"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"udpgro-test"}}
	client = &tls.Config{RootCAs: pool, ServerName: "udpgro", NextProtos: []string{"udpgro-test"}}
	return server, client
}

// quic-go runs over wrapped sockets on both ends, IPv4 and IPv6: a 16 MiB
// stream arrives intact in each direction.
func TestQUICOverGRO(t *testing.T) {
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback} {
		t.Run(ip.String(), func(t *testing.T) { quicOverGRO(t, listenOn(t, ip), listenOn(t, ip)) })
	}
}

func quicOverGRO(t *testing.T, a, b *net.UDPConn) {
	srvConf, cliConf := tlsConfigs(t)
	srvTr := &quic.Transport{Conn: Wrap(a)}
	cliTr := &quic.Transport{Conn: Wrap(b)}
	defer srvTr.Close()
	defer cliTr.Close()
	if _, ok := srvTr.Conn.(*Conn); !ok {
		t.Fatal("Wrap did not turn GRO on for a loopback socket")
	}
	ln, err := srvTr.Listen(srvConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	payload := make([]byte, 16<<20)
	_, _ = rand.Read(payload)
	sum := sha256.Sum256(payload)
	errc := make(chan error, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			errc <- err
			return
		}
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			errc <- err
			return
		}
		got, err := io.ReadAll(s)
		if err != nil {
			errc <- err
			return
		}
		if sha256.Sum256(got) != sum {
			errc <- io.ErrUnexpectedEOF
			return
		}
		_, err = s.Write(payload) // and back
		if err == nil {
			err = s.Close()
		}
		errc <- err
	}()
	conn, err := cliTr.Dial(ctx, a.LocalAddr(), cliConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server side: %v", err)
	}
	if sha256.Sum256(back) != sum {
		t.Fatal("the echoed stream differs")
	}
}
