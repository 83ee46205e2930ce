package traversal

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
)

// plainTURN starts a pion TURN server on loopback that lets every peer in
// and counts the ChannelData and other datagrams it reads.
func plainTURN(t testing.TB) (controlapi.RelayInfo, controlapi.TURNCredentials, *countingPC) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Bursts in the tests must not overflow the server's socket.
	if err := pc.(*net.UDPConn).SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	cpc := &countingPC{PacketConn: pc}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	const realm, user, pass = "postern.test", "u", "p"
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:         realm,
		LoggerFactory: lf,
		AuthHandler: func(u, r string, _ net.Addr) ([]byte, bool) {
			return turn.GenerateAuthKey(u, r, pass), u == user
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            cpc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return controlapi.RelayInfo{Name: "plain", UDPAddr: pc.LocalAddr().String()},
		controlapi.TURNCredentials{Username: user, Password: pass, Realm: realm}, cpc
}

// plainAllocation allocates over UDP on a fresh plainTURN server; the
// allocation is closed when the test ends.
func plainAllocation(t *testing.T, ctx context.Context) (*allocation, *countingPC) {
	t.Helper()
	ri, creds, srv := plainTURN(t)
	al, err := allocate(ctx, ri, TransportUDP, creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.close() })
	return al, srv
}

// countingPC counts ChannelData datagrams read by the TURN server.
type countingPC struct {
	net.PacketConn
	chanData, other int64
}

func (c *countingPC) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil && n >= 4 {
		if b[0]&0xC0 == 0x40 {
			atomicAdd(&c.chanData)
		} else {
			atomicAdd(&c.other)
		}
	}
	return n, a, err
}

// fastPathFixture is an allocation on a fresh plainTURN server whose fast
// path to a UDP peer on loopback is confirmed.
type fastPathFixture struct {
	al   *allocation
	rc   *relayPacketConn
	srv  *countingPC
	peer *net.UDPConn
	buf  []byte
}

// msg is the i-th 1200-byte test datagram.
func (fastPathFixture) msg(i int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, 1200)
	copy(b, fmt.Sprintf("up %d.", i))
	return b
}

// recv reads the next datagram at the peer and checks that it is want.
func (f *fastPathFixture) recv(t *testing.T, want []byte) {
	t.Helper()
	_ = f.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := f.peer.ReadFrom(f.buf)
	if err != nil {
		t.Fatalf("datagram %q… at the peer: %v", want[:min(10, len(want))], err)
	}
	if !bytes.Equal(f.buf[:n], want) {
		t.Fatalf("datagram %q… (%d bytes) at the peer, want %q… (%d bytes)", f.buf[:min(10, n)], n, want[:min(10, len(want))], len(want))
	}
}

// confirmedFastPath allocates, lets a peer in, checks that packets go
// through pion until the relay uses the channel, and returns once the
// channel to the peer is confirmed.
func confirmedFastPath(t *testing.T, ctx context.Context) *fastPathFixture {
	t.Helper()
	al, srv := plainAllocation(t, ctx)
	urc, ok := al.conn.(*udpRelayPacketConn)
	if !ok {
		t.Fatalf("relayed socket of an allocation over UDP is a %T", al.conn)
	}
	rc := urc.relayPacketConn
	if rc.fast == nil {
		t.Fatal("no fast path on a TURN allocation over UDP")
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	_ = peer.SetReadBuffer(4 << 20)
	if err := al.permit([]*net.UDPAddr{peer.LocalAddr().(*net.UDPAddr)}); err != nil {
		t.Fatal(err)
	}
	f := &fastPathFixture{al: al, rc: rc, srv: srv, peer: peer, buf: make([]byte, 2048)}
	// Before any ChannelData came back: everything through pion.
	if _, err := rc.WriteTo(f.msg(0), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	f.recv(t, f.msg(0))
	if c, _ := rc.fast.route(peer.LocalAddr()); c != nil {
		t.Fatal("fast path before the relay used the channel")
	}
	// The peer answers until the reply arrives as ChannelData (pion binds
	// the channel in the background after its first write).
	relayed := al.conn.LocalAddr()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := peer.WriteTo([]byte("down"), relayed); err != nil {
			t.Fatal(err)
		}
		_ = rc.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := rc.ReadFrom(f.buf); err != nil {
			t.Fatal(err)
		}
		if c, _ := rc.fast.route(peer.LocalAddr()); c != nil {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatal("the channel was never confirmed")
		}
		// pion binds on write: keep writing so it does.
		if _, err := rc.WriteTo(f.msg(0), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		f.recv(t, f.msg(0))
	}
}

// The client's relayed socket switches to the fast path once the relay
// sends ChannelData on the channel pion bound (the peer answered), and
// from then on sends every packet to the peer as ChannelData, complete and
// in order, except one per slowEvery through pion (which refreshes the
// binding); a channel pion no longer has leaves the fast path.
func TestTURNFastPathAfterTheChannelIsConfirmed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := confirmedFastPath(t, ctx)
	rc, srv, peer, relayed := f.rc, f.srv, f.peer, f.al.conn.LocalAddr()
	before := atomicLoad(&srv.chanData)
	const n = 200
	// In bursts of 40, which a socket with the default buffer holds.
	for i := 1; i <= n; i += 40 {
		for j := i; j < i+40; j++ {
			if _, err := rc.WriteTo(f.msg(j), peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		for j := i; j < i+40; j++ {
			f.recv(t, f.msg(j))
		}
	}
	if got := atomicLoad(&srv.chanData) - before; got < n {
		t.Fatalf("%d of %d datagrams reached the relay as ChannelData", got, n)
	}
	// Its turn to go through pion: route says so once, then fast again.
	c, _ := rc.fast.route(peer.LocalAddr())
	c.slowAt.Store(0)
	if x, check := rc.fast.route(peer.LocalAddr()); x != nil || check == nil {
		t.Fatal("a due packet did not go through pion")
	} else {
		check() // pion still has the channel: it stays
	}
	if x, _ := rc.fast.route(peer.LocalAddr()); x != c {
		t.Fatal("the channel left the fast path though pion still has it")
	}
	// A channel pion does not know (as after a failed refresh) is dropped.
	// ChannelData not from the relay is dropped and confirms nothing.
	if p, _ := rc.rcv.dispatch([]byte{0x4f, 0xfe, 0, 0}, relayed); p != nil || rc.rcv.n.foreign.Load() != 1 {
		t.Fatal("ChannelData from elsewhere than the relay was not dropped")
	}
	stale := &fastChan{num: 0x4fff, peer: c.peer}
	rc.fast.cmu.Lock()
	chans, byNum := copyChans(*rc.fast.chans.Load())
	chans[c.peer], byNum[stale.num] = stale, stale
	rc.fast.chans.Store(&chans)
	rc.fast.byNum.Store(&byNum)
	rc.fast.cmu.Unlock()
	if x, check := rc.fast.route(peer.LocalAddr()); x != nil || check == nil {
		t.Fatal("a new channel's first packet did not go through pion")
	} else {
		check()
	}
	if x, _ := rc.fast.route(peer.LocalAddr()); x != nil {
		t.Fatal("a channel pion does not have stayed on the fast path")
	}
}

func atomicAdd(p *int64)        { atomic.AddInt64(p, 1) }
func atomicLoad(p *int64) int64 { return atomic.LoadInt64(p) }

// QUIC through an allocation over UDP runs path MTU discovery (quic-go sets
// the don't-fragment bit on the socket to the relay): packets grow past the
// initial 1200 bytes, and data still arrives intact. Before, the relayed
// socket offered quic-go no UDP socket and every packet stayed at 1200.
func TestRelayedQUICFindsALargerPacketSize(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	al, _ := plainAllocation(t, ctx)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := al.permit([]*net.UDPAddr{peer.LocalAddr().(*net.UDPAddr)}); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := pki.SelfSigned(key, "peer", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	str := &quic.Transport{Conn: peer}
	defer str.Close()
	ln, err := str.Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"t"}, MinVersion: tls.VersionTLS13}, nil)
	if err != nil {
		t.Fatal(err)
	}
	go serveEcho(ctx, ln)
	ctr := &quic.Transport{Conn: al.conn}
	al.tr = ctr // closed after the relayed socket, whose reads block until then
	conn, err := ctr.Dial(ctx, peer.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}, MinVersion: tls.VersionTLS13},
		&quic.Config{InitialPacketSize: InitialPacketSize})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fast := al.conn.(*udpRelayPacketConn).fast
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	back := make([]byte, len(chunk))
	for i := 0; ; i++ {
		if _, err := s.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, back); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, chunk) {
			t.Fatal("echo through the relay differs")
		}
		if fast.largest.Load() > channelHeader+InitialPacketSize {
			t.Logf("largest datagram to the relay %d bytes after %d KiB, %d segmented bursts", fast.largest.Load(), (i+1)*64, fast.bursts.Load())
			if runtime.GOOS == "linux" && fast.gso() && fast.bursts.Load() == 0 {
				t.Fatal("quic-go never handed the relayed socket a segmented burst (it did not see a UDP socket)")
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("packets to the relay stayed at %d bytes", fast.largest.Load())
		}
	}
}
