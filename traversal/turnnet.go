package traversal

import (
	"fmt"
	"net"

	"github.com/pion/transport/v2/stdnet"
)

// dualStackNet is the network pion/turn's client uses. pion/turn v2 resolves
// the STUN and TURN server addresses as "udp4", so a relay given by an IPv6
// address ("[2001:db8::20]:3478") failed with "no suitable address found";
// this resolves them in whichever family the address is.
type dualStackNet struct {
	*stdnet.Net
}

func newDualStackNet() (*dualStackNet, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("TURN client network: %w", err)
	}
	return &dualStackNet{Net: n}, nil
}

// ResolveUDPAddr resolves address in any family when asked for "udp4" or
// "udp6" alone.
func (n *dualStackNet) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	if network == "udp4" || network == "udp6" {
		network = "udp"
	}
	return n.Net.ResolveUDPAddr(network, address)
}
