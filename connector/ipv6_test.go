package connector

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/wire"
)

// v6Resolver is the connector's private DNS for the IPv6 tests: AAAA only.
type v6Resolver map[string]netip.Addr

func (r v6Resolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if a, ok := r[strings.TrimSuffix(host, ".")]; ok && network != "ip4" {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

var ipv6LabYAML = testenv.CorpPolicy(testenv.AlicePassword, "corp-a") + `resources:
  - name: loop6
    address: "::1"
    network: corp
    ports: [tcp/%[1]d, udp/%[2]d, icmp]
    groups: [engineering]
  - name: net6
    address: 2001:db8:100::/64
    network: corp
    ports: [tcp/%[1]d]
    groups: [engineering]
  - name: db6
    address: db6.corp.internal
    network: corp
    ports: [tcp/%[1]d]
    groups: [engineering]
`

// TCP and UDP to IPv6 resources: an address, a CIDR and a name whose only
// answer is AAAA are matched by the connector's policy and dialed over
// IPv6; addresses outside the resource are refused.
func TestIPv6DialAndPolicy(t *testing.T) {
	_, tcpPort := testenv.EchoTCP(t, "[::1]:0")
	_, udpPort := testenv.EchoUDP(t, "[::1]:0")
	dialed := make(chan string, 8)
	l := newLab(t, fmt.Sprintf(ipv6LabYAML, tcpPort, udpPort), func(c *Config) {
		c.Resolver = v6Resolver{"db6.corp.internal": netip.MustParseAddr("2001:db8:100::20")}
		c.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			dialed <- network + " " + address
			ap := netip.MustParseAddrPort(address)
			if !ap.Addr().Is6() {
				return nil, fmt.Errorf("dialed %s over IPv4", address)
			}
			// Every IPv6 destination of the test is served on ::1.
			var d net.Dialer
			return d.DialContext(ctx, network, netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port()).String())
		}
	})
	cc := l.login("alice@example.com", "alice-password-1").connect()
	for _, tc := range []struct {
		res, dst string
		proto    byte
		port     uint16
		want     string
	}{
		{"loop6", "::1", wire.ProtoTCP, tcpPort, fmt.Sprintf("tcp [::1]:%d", tcpPort)},
		{"net6", "2001:db8:100::10", wire.ProtoTCP, tcpPort, fmt.Sprintf("tcp [2001:db8:100::10]:%d", tcpPort)},
		{"db6", "db6.corp.internal", wire.ProtoTCP, tcpPort, fmt.Sprintf("tcp [2001:db8:100::20]:%d", tcpPort)},
		{"loop6", "::1", wire.ProtoUDP, udpPort, fmt.Sprintf("udp [::1]:%d", udpPort)},
	} {
		st := cc.mustOpen(wire.OpenHeader{Proto: tc.proto, Port: tc.port, ResourceID: l.resourceID(tc.res), Destination: tc.dst}, tc.res+" "+tc.dst)
		if tc.proto == wire.ProtoTCP {
			echoRoundTrip(t, st, "over IPv6")
		} else {
			if err := wire.WriteDatagram(st, []byte("v6 datagram")); err != nil {
				t.Fatal(err)
			}
			_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, wire.MaxDatagram)
			d, err := wire.ReadDatagram(st, buf)
			if err != nil || string(d) != "v6 datagram" {
				t.Fatalf("UDP echo over IPv6: %q %v", d, err)
			}
		}
		st.Close()
		if got := <-dialed; got != tc.want {
			t.Fatalf("%s %s: connector dialed %q, want %q", tc.res, tc.dst, got, tc.want)
		}
	}
	for _, tc := range []struct {
		res, dst string
		port     uint16
		want     wire.Status
	}{
		{"net6", "2001:db8:101::10", tcpPort, wire.StatusDenied},     // outside the /64
		{"net6", "::ffff:198.51.100.1", tcpPort, wire.StatusDenied},  // an IPv4-mapped address is IPv4
		{"loop6", "::2", tcpPort, wire.StatusDenied},                 // not the address resource
		{"net6", "2001:db8:100::10", tcpPort + 1, wire.StatusDenied}, // port
		{"db6", "db7.corp.internal", tcpPort, wire.StatusDenied},     // name outside the resource
		{"db6", "2001:db8:100::20", tcpPort, wire.StatusDenied},      // a name resource is no address resource
		{"net6", "fe80::1", tcpPort, wire.StatusDenied},              // link-local, outside
	} {
		if _, status, msg := cc.open(wire.OpenHeader{Proto: wire.ProtoTCP, Port: tc.port, ResourceID: l.resourceID(tc.res), Destination: tc.dst}); status != tc.want {
			t.Errorf("%s %s:%d: status %v (%s), want %v", tc.res, tc.dst, tc.port, status, msg, tc.want)
		}
	}
	select {
	case got := <-dialed:
		t.Fatalf("a refused flow was dialed: %s", got)
	default:
	}
}

// ICMPv6 echo to an IPv6 resource, answered with the host's real echo
// reply (ping socket, or a raw socket as root).
func TestICMPv6Echo(t *testing.T) {
	if os.Geteuid() != 0 {
		b, _ := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
		testenv.Require(t, !strings.HasPrefix(string(b), "1\t0"), "ICMP test needs root or net.ipv4.ping_group_range")
	}
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		testenv.Require(t, false, "ICMPv6 test needs IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	l := newLab(t, fmt.Sprintf(ipv6LabYAML, 1, 1), nil)
	cc := l.login("alice@example.com", "alice-password-1").connect()
	st := cc.mustOpen(wire.OpenHeader{Proto: wire.ProtoICMP, ResourceID: l.resourceID("loop6"), Destination: "::1"}, "icmp ::1")
	buf := make([]byte, wire.MaxDatagram)
	for seq := uint16(1); seq <= 3; seq++ {
		body := binary.BigEndian.AppendUint16(nil, 0x6666)
		body = binary.BigEndian.AppendUint16(body, seq)
		body = append(body, "ping6 payload"...)
		if err := wire.WriteDatagram(st, body); err != nil {
			t.Fatal(err)
		}
		_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
		d, err := wire.ReadDatagram(st, buf)
		if err != nil {
			t.Fatalf("ICMPv6 echo reply: %v", err)
		}
		if !bytes.Equal(d, body) {
			t.Fatalf("ICMPv6 echo reply body %x, want %x", d, body)
		}
	}
}
