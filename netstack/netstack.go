package netstack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Defaults.
const (
	DefaultMTU              = 65520
	DefaultMaxInFlight      = 1024
	DefaultTCPReceiveWindow = 0 // 0: the stack's default (auto-tuned)
	nicID                   = tcpip.NICID(1)
)

// Sentinel errors.
var (
	ErrClosed         = errors.New("netstack: closed")
	ErrAlreadyHandled = errors.New("netstack: connection request already answered")
)

// Handler receives the flows the stack terminates. Each method is called on
// its own goroutine and may block for as long as the flow lives.
type Handler interface {
	// HandleTCP is called for every new TCP connection request, before the
	// handshake completes. It must call exactly one of r.Accept or r.Reject;
	// if it returns without doing so, the request is rejected with a RST.
	HandleTCP(r *TCPRequest)
	// HandleUDP is called for the first datagram of every new UDP 5-tuple.
	// The handler owns c and must close it.
	HandleUDP(c *UDPConn)
	// HandleEcho is called for every ICMP or ICMPv6 echo request. Calling
	// e.Reply writes the echo reply back to the device.
	HandleEcho(e *EchoRequest)
}

// Config configures New.
type Config struct {
	// MTU of the device; 0 asks the device (and falls back to DefaultMTU).
	MTU int
	// MaxInFlight bounds TCP handshakes waiting on the handler; further SYNs
	// are dropped (the sender retransmits). 0: DefaultMaxInFlight.
	MaxInFlight int
	Logger      *slog.Logger
}

// Stack is a gVisor stack on a TUN device.
type Stack struct {
	s       *stack.Stack
	ep      *linkEndpoint
	dev     tun.Device
	handler Handler
	log     *slog.Logger

	closeOnce sync.Once
	closed    atomic.Bool
	wg        sync.WaitGroup

	timeWaitReopened, timeWaitRefused atomic.Uint64
	echoDropped                       atomic.Uint64
}

// New puts a gVisor stack on dev and starts reading from it. Close stops it
// (and closes dev).
func New(dev tun.Device, h Handler, cfg Config) (*Stack, error) {
	if dev == nil || h == nil {
		return nil, errors.New("netstack: device and handler are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mtu := cfg.MTU
	if mtu == 0 {
		if m, err := dev.MTU(); err == nil && m > 0 {
			mtu = m
		} else {
			mtu = DefaultMTU
		}
	}
	if mtu < 1280 || mtu > 65535 {
		return nil, fmt.Errorf("netstack: MTU %d out of range 1280-65535", mtu)
	}
	maxInFlight := cfg.MaxInFlight
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxInFlight
	}
	ns := &Stack{dev: dev, handler: h, log: log}
	ns.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
		HandleLocal:        false,
	})
	if err := tune(ns.s); err != nil {
		ns.s.Close()
		return nil, err
	}
	ns.ep = newLinkEndpoint(dev, uint32(mtu), log, func(p []byte) bool {
		if ns.interceptEcho(p) {
			return true
		}
		ns.reopenTimeWait(p)
		return false
	})
	ns.ep.fence = ns.fenceSynAck
	if err := ns.s.CreateNICWithOptions(nicID, ns.ep, stack.NICOptions{Name: "postern"}); err != nil {
		ns.s.Close()
		return nil, fmt.Errorf("netstack: create NIC: %v", err)
	}
	if err := ns.s.SetPromiscuousMode(nicID, true); err != nil {
		ns.s.Close()
		return nil, fmt.Errorf("netstack: promiscuous mode: %v", err)
	}
	if err := ns.s.SetSpoofing(nicID, true); err != nil {
		ns.s.Close()
		return nil, fmt.Errorf("netstack: spoofing: %v", err)
	}
	ns.s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	tf := tcp.NewForwarder(ns.s, DefaultTCPReceiveWindow, maxInFlight, ns.onTCP)
	ns.s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(ns.s, ns.onUDP)
	ns.s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	ns.ep.start()
	return ns, nil
}

// tune applies the throughput settings (SACK, wide buffer ranges, receive
// buffer moderation, reno, no Nagle delay) and the short TIME_WAIT.
func tune(s *stack.Stack) error {
	tw := tcpip.TCPTimeWaitTimeoutOption(TimeWaitTimeout)
	sack := tcpip.TCPSACKEnabled(true)
	cc := tcpip.CongestionControlOption("reno")
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	delay := tcpip.TCPDelayEnabled(false)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 8 << 20}
	opts := []tcpip.SettableTransportProtocolOption{&sack, &cc, &mod, &delay, &rcv, &snd, &tw}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("netstack: TCP option %T: %v", o, err)
		}
	}
	return nil
}

// Close stops the stack and closes the device. It waits for the read loop
// but not for flows: handlers see their connections fail.
func (ns *Stack) Close() error {
	var err error
	ns.closeOnce.Do(func() {
		ns.closed.Store(true)
		err = ns.dev.Close()
		ns.ep.closeSynAcks()
		ns.ep.Wait()
		ns.s.Close()
		ns.s.Wait()
	})
	return err
}

// Stats are counters for status and debugging.
type Stats struct {
	TCPAccepted, TCPRejected, UDPFlows, EchoRequests uint64
}

func addrFromTCPIP(a tcpip.Address) netip.Addr {
	if a.Len() == 4 {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}

// TCPRequest is a TCP connection request that has not been answered yet.
type TCPRequest struct {
	// Src is the application's address, Dst the address it connects to.
	Src, Dst netip.AddrPort

	req  *tcp.ForwarderRequest
	ns   *Stack
	mu   sync.Mutex
	done bool
}

func (ns *Stack) onTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	req := &TCPRequest{
		Src: netip.AddrPortFrom(addrFromTCPIP(id.RemoteAddress), id.RemotePort),
		Dst: netip.AddrPortFrom(addrFromTCPIP(id.LocalAddress), id.LocalPort),
		req: r,
		ns:  ns,
	}
	defer req.Reject()
	ns.handler.HandleTCP(req)
}

// Accept completes the handshake and returns the connection. The returned
// conn supports CloseWrite and CloseRead for half-close.
func (r *TCPRequest) Accept() (*TCPConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil, ErrAlreadyHandled
	}
	r.done = true
	var wq waiter.Queue
	ep, err := r.req.CreateEndpoint(&wq)
	if err != nil {
		r.req.Complete(true)
		return nil, fmt.Errorf("netstack: complete handshake %s -> %s: %v", r.Src, r.Dst, err)
	}
	r.req.Complete(false)
	ep.SocketOptions().SetKeepAlive(true)
	ep.SocketOptions().SetDelayOption(false)
	return &TCPConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep, wq: &wq}, nil
}

// Reject answers the request with a RST. It does nothing after Accept.
func (r *TCPRequest) Reject() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	r.req.Complete(true)
}

// Drop abandons the request silently (the sender retransmits or times out).
func (r *TCPRequest) Drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	r.req.Complete(false)
}

// UDPConn is one UDP 5-tuple terminated by the stack: reads return the
// application's datagrams, writes send datagrams back to it.
type UDPConn struct {
	*gonet.UDPConn
	Src, Dst netip.AddrPort
}

var _ net.Conn = (*UDPConn)(nil)

func (ns *Stack) onUDP(r *udp.ForwarderRequest) bool {
	if ns.closed.Load() {
		return false
	}
	id := r.ID()
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		ns.log.Debug("netstack: udp endpoint", "err", err)
		return false
	}
	c := &UDPConn{
		UDPConn: gonet.NewUDPConn(&wq, ep),
		Src:     netip.AddrPortFrom(addrFromTCPIP(id.RemoteAddress), id.RemotePort),
		Dst:     netip.AddrPortFrom(addrFromTCPIP(id.LocalAddress), id.LocalPort),
	}
	go ns.handler.HandleUDP(c)
	return true
}
