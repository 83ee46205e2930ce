package netstacktest

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Host is the application side of a TUN: a gVisor stack whose packets the
// device reads and which receives the packets written to the device. Dial
// from it to reach what serves behind the device (a netstack.Stack).
type Host struct {
	// Stack is the host's stack (for gonet and raw endpoints).
	Stack *stack.Stack
	// TUN is the device to hand to the code under test.
	TUN *TUN

	ep     *channel.Endpoint
	cancel context.CancelFunc
	done   chan struct{}
}

// NewHost builds a host with address addr (IPv4 or IPv6), routing
// everything of its family through a new TUN of the given MTU. Close it
// when done.
func NewHost(addr netip.Addr, mtu int) (*Host, error) {
	addr = addr.Unmap()
	if !addr.IsValid() || addr.Zone() != "" {
		return nil, fmt.Errorf("host address %s: want an IPv4 or IPv6 address without zone", addr)
	}
	proto, tcpipAddr, route := ipv6.ProtocolNumber, tcpip.AddrFrom16(addr.As16()), header.IPv6EmptySubnet
	if addr.Is4() {
		proto, tcpipAddr, route = ipv4.ProtocolNumber, tcpip.AddrFrom4(addr.As4()), header.IPv4EmptySubnet
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	ep := channel.New(inQueue, uint32(mtu), "")
	if err := s.CreateNIC(1, ep); err != nil {
		s.Close()
		return nil, fmt.Errorf("host NIC: %s", err)
	}
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpipAddr.WithPrefix()}, stack.AddressProperties{}); err != nil {
		s.Close()
		return nil, fmt.Errorf("host address %s: %s", addr, err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: route, NIC: 1}})
	dev := NewTUN("host0", mtu)
	dev.deliver = func(p []byte) {
		proto := header.IPv4ProtocolNumber
		if header.IPVersion(p) == header.IPv6Version {
			proto = header.IPv6ProtocolNumber
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		ep.InjectInbound(proto, pkt)
		pkt.DecRef()
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Host{Stack: s, TUN: dev, ep: ep, cancel: cancel, done: make(chan struct{})}
	go h.pump(ctx)
	return h, nil
}

// pump moves the host's outbound packets into the device.
func (h *Host) pump(ctx context.Context) {
	defer close(h.done)
	for {
		pkt := h.ep.ReadContext(ctx)
		if pkt == nil {
			return
		}
		v := pkt.ToView()
		b := append([]byte(nil), v.AsSlice()...)
		v.Release()
		pkt.DecRef()
		if h.TUN.Inject(b) != nil {
			return
		}
	}
}

// DialTCP connects from the host to dst through the device.
func (h *Host) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return gonet.DialContextTCP(ctx, h.Stack, fullAddr(dst), netProto(dst.Addr()))
}

// DialUDP opens a UDP socket on the host connected to dst.
func (h *Host) DialUDP(dst netip.AddrPort) (net.Conn, error) {
	fa := fullAddr(dst)
	return gonet.DialUDP(h.Stack, nil, &fa, netProto(dst.Addr()))
}

func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Unmap().Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(a.As4()), Port: ap.Port()}
	}
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom16(a.As16()), Port: ap.Port()}
}

// Close stops the host and closes its device.
func (h *Host) Close() {
	h.cancel()
	h.TUN.Close()
	<-h.done
	h.ep.Close()
	h.Stack.Close()
	h.Stack.Wait()
}
