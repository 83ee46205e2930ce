package relay

import (
	"fmt"
	"net"
	"strconv"

	"github.com/pion/turn/v2"
)

// familyGenerator allocates relayed sockets in the family of the relay's own
// address. pion/turn v2 always asks for "udp4" and its static generator
// joins address and port with a bare colon, so a relay whose address is
// IPv6 could not allocate at all ("2001:db8::20:0" is no address). This one
// binds relayIP with net.JoinHostPort in the matching family ("udp6" for an
// IPv6 relay) and reports publicIP as the relayed address; clients reach
// an IPv6 relay and get IPv6 relayed addresses (RFC 6156), and an IPv4 relay
// behaves as before.
type familyGenerator struct {
	publicIP net.IP
	relayIP  net.IP
}

var _ turn.RelayAddressGenerator = (*familyGenerator)(nil)

// network is the socket family of the relayed sockets.
func (g *familyGenerator) network() string {
	if g.relayIP.To4() != nil {
		return "udp4"
	}
	return "udp6"
}

// Validate is called when the TURN server starts.
func (g *familyGenerator) Validate() error {
	switch {
	case g.publicIP == nil:
		return fmt.Errorf("%w: relayed address generator without a public IP", ErrBadConfig)
	case g.relayIP == nil:
		return fmt.Errorf("%w: relayed address generator without a relay IP", ErrBadConfig)
	case (g.publicIP.To4() != nil) != (g.relayIP.To4() != nil):
		return fmt.Errorf("%w: public IP %s and relay IP %s are of different families", ErrBadConfig, g.publicIP, g.relayIP)
	}
	return nil
}

// AllocatePacketConn binds a relayed UDP socket. The network pion asks for
// ("udp4" in v2) is ignored: the relay's address decides the family.
func (g *familyGenerator) AllocatePacketConn(_ string, requestedPort int) (net.PacketConn, net.Addr, error) {
	conn, err := net.ListenPacket(g.network(), net.JoinHostPort(g.relayIP.String(), strconv.Itoa(requestedPort)))
	if err != nil {
		return nil, nil, fmt.Errorf("relayed socket on %s: %w", g.relayIP, err)
	}
	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		conn.Close()
		return nil, nil, fmt.Errorf("relayed socket on %s: local address %v is not UDP", g.relayIP, conn.LocalAddr())
	}
	return conn, &net.UDPAddr{IP: g.publicIP, Port: ua.Port}, nil
}

// AllocateConn is for TCP allocations (RFC 6062), which the relay does not offer.
func (g *familyGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, fmt.Errorf("%w: TCP allocations are not offered", ErrBadConfig)
}
