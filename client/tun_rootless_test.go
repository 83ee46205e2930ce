package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"postern.dev/postern/connector"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/netstack/netstacktest"
	"postern.dev/postern/platform"
)

// A resource address no machine has: flows to it reach the servers only
// through the connector's Dial hook.
var rootlessYAML = testenv.CorpPolicy(testenv.AlicePassword, "corp-a") + `resources:
  - name: db
    address: 198.18.7.7
    network: corp
    ports: [tcp/5432, udp/5353]
    groups: [engineering]
`

// noRoutes and noDNS stand in for the OS: nothing on the machine changes.
type noRoutes struct{}

func (noRoutes) Set([]netip.Prefix, []netip.Prefix) error { return nil }
func (noRoutes) Close() error                             { return nil }

type noDNS struct{}

func (noDNS) OriginalResolvers() ([]netip.AddrPort, []string, error) { return nil, nil, nil }
func (noDNS) SupportsSplitDNS() bool                                 { return true }
func (noDNS) Set(platform.DNSConfig) error                           { return nil }
func (noDNS) Close() error                                           { return nil }

// loopbackDNS listens for the DNS proxy on free loopback ports.
func loopbackDNS(context.Context, netip.AddrPort, string) (net.PacketConn, net.Listener, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return pc, ln, nil
}

// rootlessTUN is a TUN front-end on an in-memory device whose other side is
// host, with the DNS proxy on loopback: no root, no kernel TUN.
func rootlessTUN(t *testing.T, host *netstacktest.Host) *TUNFrontend {
	t.Helper()
	fe, err := NewTUNFrontend(TUNConfig{
		Name: "mem0", StateDir: t.TempDir(), Logger: testenv.Logger(t),
		CreateTUN:           func(string, int) (tun.Device, error) { return host.TUN, nil },
		NewRouter:           func(string) (platform.Router, error) { return noRoutes{}, nil },
		NewOSConfigurator:   func(string, string) (platform.OSConfigurator, error) { return noDNS{}, nil },
		RestoreAfterCrash:   func(string) error { return nil },
		CheckRangeConflicts: func([]netip.Prefix, string) error { return nil },
		ListenDNS:           loopbackDNS,
	})
	if err != nil {
		t.Fatal(err)
	}
	return fe
}

// TestRootlessTUNThroughConnector drives a TCP and a UDP flow from an
// application (a gVisor host stack) through the in-memory TUN, the client's
// netstack front-end, real QUIC and the real connector, to in-process
// servers reached through the connector's Dial hook: the whole data path,
// as any user, in go test.
func TestRootlessTUNThroughConnector(t *testing.T) {
	_, tcpPort := testenv.EchoTCP(t, "127.0.0.1:0")
	_, udpPort := testenv.EchoUDP(t, "127.0.0.1:0")
	// The connector's view: 198.18.7.7 is served by the loopback echoes.
	local := map[string]string{"tcp 198.18.7.7:5432": net.JoinHostPort("127.0.0.1", itoa(int(tcpPort))),
		"udp 198.18.7.7:5353": net.JoinHostPort("127.0.0.1", itoa(int(udpPort)))}
	dialed := make(chan string, 4)
	l := newLab(t, rootlessYAML)
	l.startConnectorWith("corp-a", nil, func(c *connector.Config) {
		c.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			dialed <- network + " " + address
			var d net.Dialer
			return d.DialContext(ctx, network, local[network+" "+address])
		}
	})

	host, err := netstacktest.NewHost(netip.MustParseAddr("10.9.0.2"), 1280)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Close)
	fe := rootlessTUN(t, host)
	d := newTestDaemon(t, fe)
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(t, d, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := host.DialTCP(ctx, netip.MustParseAddrPort("198.18.7.7:5432"))
	if err != nil {
		t.Fatalf("TCP through the TUN: %v", err)
	}
	payload := make([]byte, 256<<10)
	_, _ = rand.Read(payload)
	go func() {
		_, _ = c.Write(payload)
		_ = c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("TCP echo through the TUN: %d of %d bytes, %v", len(got), len(payload), err)
	}

	udpEcho(t, host, "198.18.7.7:5353", "datagram", "a UDP echo through the TUN")
	for _, want := range []string{"tcp 198.18.7.7:5432", "udp 198.18.7.7:5353"} {
		select {
		case got := <-dialed:
			if got != want {
				t.Fatalf("connector dialed %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("connector did not dial %s", want)
		}
	}
}

// udpEcho sends msg from host to dst until the same datagram comes back,
// failing the test when none does within 15 s. The first datagram opens
// the flow; UDP may drop, so it asks until the answer comes.
func udpEcho(t *testing.T, host *netstacktest.Host, dst, msg, what string) {
	t.Helper()
	u, err := host.DialUDP(netip.MustParseAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	buf := make([]byte, 2048)
	testenv.Poll(t, 15*time.Second, what, func() error {
		if _, err := u.Write([]byte(msg)); err != nil {
			return err
		}
		_ = u.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := u.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != msg {
			t.Fatalf("UDP echo %q", buf[:n])
		}
		return nil
	})
}
