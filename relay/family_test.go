package relay

import (
	"net"
	"testing"
	"time"

	"github.com/pion/transport/v2/stdnet"
)

// A relay whose address is IPv6 answers TURN over IPv6 and allocates IPv6
// relayed addresses (relaying to peers is covered by the lab's IPv6
// underlay test). With pion's static generator every allocation failed
// ("udp4" and "::1:0").
func TestTURNOverIPv6(t *testing.T) {
	probe, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err) // not a root/netns test: a host without ::1 has nothing to test
	}
	probe.Close()
	f := newFixture(t, func(c *Config) {
		c.ListenUDP, c.ListenTLS = "[::1]:0", "[::1]:0"
		c.PublicIP, c.RelayIP = net.ParseIP("::1"), net.ParseIP("::1")
	})
	u, p := creds(time.Now().Add(time.Minute), "user-1", secret)
	_, relayed, err := f.turnClient6(t, u, p)
	if err != nil {
		t.Fatalf("allocate on an IPv6 relay: %v", err)
	}
	ra, ok := relayed.LocalAddr().(*net.UDPAddr)
	if !ok || ra.IP.To4() != nil || !ra.IP.Equal(net.ParseIP("::1")) {
		t.Fatalf("relayed address %v, want [::1]:port", relayed.LocalAddr())
	}
}

// The generator refuses a public and a relay address of different families.
func TestFamilyGeneratorValidate(t *testing.T) {
	g := &familyGenerator{publicIP: net.ParseIP("2001:db8::20"), relayIP: net.ParseIP("203.0.113.20")}
	if err := g.Validate(); err == nil {
		t.Fatal("mixed families accepted")
	}
	g = &familyGenerator{publicIP: net.ParseIP("2001:db8::20"), relayIP: net.ParseIP("2001:db8::21")}
	if err := g.Validate(); err != nil || g.network() != "udp6" {
		t.Fatalf("IPv6 generator: err %v, network %s", err, g.network())
	}
}

// anyFamilyNet is the TURN client's network with server addresses resolved
// in any family (pion/turn v2 asks for "udp4"); traversal does the same.
type anyFamily struct{ *stdnet.Net }

func (n anyFamily) ResolveUDPAddr(_, address string) (*net.UDPAddr, error) {
	return n.Net.ResolveUDPAddr("udp", address)
}

func anyFamilyNet(t testing.TB) anyFamily {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	return anyFamily{n}
}
