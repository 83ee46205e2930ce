package relay

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/stunguard"
	"postern.dev/postern/traversal/udpbatch"
	"postern.dev/postern/traversal/udpgro"
)

// metadataAddrs are cloud instance metadata and host endpoints a relay never
// relays to, whatever else is allowed: AWS (IPv4 and IPv6), GCP and Azure IMDS
// (169.254.169.254), Alibaba (100.100.100.200), Azure WireServer (168.63.129.16).
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("100.100.100.200"),
	netip.MustParseAddr("168.63.129.16"),
	netip.MustParseAddr("fd00:ec2::254"),
}

// localIPs returns the addresses of this host's interfaces.
func localIPs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list local addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

func isLocal(ip net.IP) (bool, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false, nil
	}
	ls, err := localIPs()
	if err != nil {
		return false, err
	}
	for _, l := range ls {
		if l == a.Unmap() {
			return true, nil
		}
	}
	return false, nil
}

// ResolveRelayIP returns the local IP relayed sockets bind to:
//
//  1. relayIP when given: it must be an address of this host (not a wildcard)
//     of the same family as publicIP;
//  2. otherwise the IP of listenUDP when that names one;
//  3. otherwise (listenUDP is a wildcard) publicIP, if it is an address of
//     this host;
//  4. otherwise it refuses: on a host behind 1:1 NAT with a wildcard listener
//     the relay cannot know which local address the public IP maps to, so
//     --relay-ip (or a specific --listen-udp) must say it.
//
// publicIP may differ from every local address (1:1 NAT): relayed addresses
// are advertised at publicIP and bound to the returned IP, port for port.
func ResolveRelayIP(listenUDP string, publicIP, relayIP net.IP) (net.IP, error) {
	if publicIP == nil || publicIP.IsUnspecified() {
		return nil, fmt.Errorf("%w: --public-ip must be a specific IP address", ErrBadConfig)
	}
	v4 := publicIP.To4() != nil
	if relayIP != nil {
		if relayIP.IsUnspecified() {
			return nil, fmt.Errorf("%w: --relay-ip %s is a wildcard; name one address of this host", ErrBadConfig, relayIP)
		}
		if (relayIP.To4() != nil) != v4 {
			return nil, fmt.Errorf("%w: --relay-ip %s and --public-ip %s are of different IP families", ErrBadConfig, relayIP, publicIP)
		}
		local, err := isLocal(relayIP)
		if err != nil {
			return nil, fmt.Errorf("%w: --relay-ip %s: %w", ErrBadConfig, relayIP, err)
		}
		if !local {
			return nil, fmt.Errorf("%w: --relay-ip %s is not an address of this host", ErrBadConfig, relayIP)
		}
		return relayIP, nil
	}
	host, _, err := net.SplitHostPort(listenUDP)
	if err != nil {
		return nil, fmt.Errorf("%w: --listen-udp %q: %v", ErrBadConfig, listenUDP, err)
	}
	if host != "" {
		ip := net.ParseIP(host)
		if ip == nil {
			return nil, fmt.Errorf("%w: --listen-udp %q: host must be an IP address", ErrBadConfig, listenUDP)
		}
		if !ip.IsUnspecified() {
			if (ip.To4() != nil) != v4 {
				return nil, fmt.Errorf("%w: --listen-udp %s and --public-ip %s are of different IP families; pass --relay-ip", ErrBadConfig, listenUDP, publicIP)
			}
			return ip, nil
		}
	}
	local, err := isLocal(publicIP)
	if err != nil {
		return nil, fmt.Errorf("%w: --public-ip %s: %w", ErrBadConfig, publicIP, err)
	}
	if !local {
		return nil, fmt.Errorf("%w: --listen-udp %q is a wildcard and --public-ip %s is not an address of this host (1:1 NAT?): pass --relay-ip with the local address it maps to", ErrBadConfig, listenUDP, publicIP)
	}
	return publicIP, nil
}

// permit is the TURN permission handler. A peer must be an address exchanged
// in a live signaling session of the identity the TURN client authenticated
// as (hub.peerAllowed), and is refused whatever the sessions say when it is
// loopback, unspecified, link-local, multicast, a cloud metadata endpoint or
// an address of the relay itself.
func (r *Relay) permit(client net.Addr, peer net.IP) bool {
	reason := r.refusePeer(client, peer)
	if reason == "" {
		return true
	}
	r.m.refuse("peer")
	r.log.Info("TURN permission refused", "client", client.String(), "peer", peer.String(), "reason", reason)
	return false
}

func (r *Relay) refusePeer(client net.Addr, peer net.IP) string {
	a, ok := netip.AddrFromSlice(peer)
	if !ok {
		return "not an IP"
	}
	a = a.Unmap()
	switch {
	case a.IsMulticast() || a.IsInterfaceLocalMulticast() || a.IsLinkLocalMulticast():
		return "multicast"
	case a.IsLinkLocalUnicast():
		return "link-local"
	}
	for _, m := range metadataAddrs {
		if a == m {
			return "cloud metadata endpoint"
		}
	}
	if !r.cfg.AllowLoopbackPeers {
		if a.IsLoopback() || a.IsUnspecified() {
			return "loopback or unspecified"
		}
	}
	id, ok := r.auth.lookup(client)
	if !ok {
		return "no authenticated TURN client at this endpoint"
	}
	if !r.cfg.AllowLoopbackPeers && r.isOwnAddr(a) {
		// Only the advertised relayed address, and only towards the other
		// allocation of one live session (both sides behind networks that
		// block UDP): never another service of the relay host.
		if !r.isAdvertisedIP(a) || !r.hub.relayedPeerAllowed(id, a) {
			return "an address of the relay"
		}
		return ""
	}
	if !r.hub.peerAllowed(id, a) {
		return "not a candidate of a live signaling session of " + describe(id)
	}
	return ""
}

// isAdvertisedIP reports whether a is the public IP relayed addresses are
// advertised at.
func (r *Relay) isAdvertisedIP(a netip.Addr) bool {
	x, ok := netip.AddrFromSlice(r.cfg.PublicIP)
	return ok && x.Unmap() == a
}

func (r *Relay) isOwnAddr(a netip.Addr) bool {
	for _, ip := range []net.IP{r.cfg.PublicIP, r.cfg.RelayIP} {
		if x, ok := netip.AddrFromSlice(ip); ok && x.Unmap() == a {
			return true
		}
	}
	ls, err := localIPs()
	if err != nil {
		return true // cannot tell: refuse
	}
	for _, l := range ls {
		if l == a {
			return true
		}
	}
	return false
}

// SetPolicy installs what the controller's relay policy stream says: the
// connectors (and their key digests) that may register for signaling, and
// the revoked devices. Signaling connections that no longer match are closed,
// and TURN traffic of revoked devices and deleted connectors is dropped at
// once (their allocations can neither relay nor refresh).
func (r *Relay) SetPolicy(p controlapi.RelayPolicy) {
	// Snapshots come from the stream and from heartbeats; never go back.
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if p.Revision < r.policyRev.Load() {
		return
	}
	r.policyRev.Store(p.Revision)
	r.hasPolicy.Store(true)
	keys := make(map[string]string, len(p.Connectors))
	for _, c := range p.Connectors {
		keys[c.ID] = c.KeySHA256
	}
	revoked := make(map[string]bool, len(p.RevokedDevices))
	for _, d := range p.RevokedDevices {
		revoked[d] = true
	}
	r.hub.setPolicy(keys, revoked)
	blocked := r.auth.reblock()
	if len(blocked) == 0 {
		return
	}
	r.tmu.Lock()
	var cut []net.Conn
	for k, c := range r.tlsTURN {
		if _, ok := blocked[k]; ok {
			cut = append(cut, c)
		}
	}
	r.tmu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

// filterConn drops TURN packets from and to blocked client endpoints, and
// records the source of the packet the TURN server handles now (it reads and
// handles one packet at a time on its UDP socket), for udpReleaser. On a UDP
// socket it reads in batches (batch.go) and, before a read that may block,
// sends what the packets just handled queued on relayed sockets (flush).
type filterConn struct {
	net.PacketConn
	blocked func(net.Addr) bool
	current atomic.Pointer[net.Addr]
	rd      *udpbatch.Reader // nil: one datagram per read
	// clients holds, per client endpoint of a UDP allocation, the queue of
	// the ChannelData its allocation's packet handler sends it (the only
	// sender of ChannelData to that endpoint) and the bypass that learns
	// from it; replaced, never changed, under cmu.
	cmu     sync.Mutex
	clients atomic.Pointer[map[netip.AddrPort]*bypass]
	// confirm is how long pion's framing vouches for a peer in a bypass.
	confirm time.Duration
	// malformed counts a STUN message dropped before pion (stunguard).
	malformed func()
	// responded sees every STUN message pion sends (turnAuth.observe).
	responded func(b []byte, to net.Addr)
	// lastUp is the bypass whose client's ChannelData was handed to pion
	// last (upbypass.go); only the read loop's goroutine uses it.
	lastUp *bypass
}

// addClient returns the ChannelData queue and bypass of client, or nil when
// this socket does not batch.
func (c *filterConn) addClient(client net.Addr) *bypass {
	ap, ok := udpbatch.AddrPortOf(client)
	if c.rd == nil || !ok {
		return nil
	}
	uc, ok := c.PacketConn.(*net.UDPConn)
	if !ok {
		return nil
	}
	bp := newBypass(client, newBatchWriter(uc), c.blocked, c.confirm)
	c.cmu.Lock()
	defer c.cmu.Unlock()
	m := map[netip.AddrPort]*bypass{ap: bp}
	if old := c.clients.Load(); old != nil {
		for k, v := range *old {
			if k != ap {
				m[k] = v
			}
		}
	}
	c.clients.Store(&m)
	return bp
}

// dropClient forgets the queue and bypass bp of client (its allocation is
// gone).
func (c *filterConn) dropClient(client net.Addr, bp *bypass) {
	ap, ok := udpbatch.AddrPortOf(client)
	if !ok {
		return
	}
	c.cmu.Lock()
	defer c.cmu.Unlock()
	old := c.clients.Load()
	if old == nil || (*old)[ap] != bp {
		return
	}
	m := make(map[netip.AddrPort]*bypass, len(*old))
	for k, v := range *old {
		if k != ap {
			m[k] = v
		}
	}
	c.clients.Store(&m)
}

func newFilterConn(pc net.PacketConn, blocked func(net.Addr) bool, flush *flushSet) *filterConn {
	c := &filterConn{PacketConn: pc, blocked: blocked, confirm: bypassConfirm}
	if bio := udpgro.BatchIO(pc); bio != nil { // GRO: clients and connectors send GSO runs
		setSockBufs(pc)
		c.rd = udpbatch.NewReader(bio, serverBatch)
		c.rd.BeforeBlock = flush.flush
	}
	return c
}

func (c *filterConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.lastUp != nil { // pion handled the datagram handed to it last
		c.lastUp.upSettle()
		c.lastUp = nil
	}
	for {
		n, a, err := udpbatch.ReadFrom(c.rd, c.PacketConn, b)
		if err == nil && stunguard.CheckServer(b[:n]) != nil {
			// pion/stun would panic on some of these (see stunguard).
			if c.malformed != nil {
				c.malformed()
			}
			continue
		}
		if err != nil || !c.blocked(a) {
			if err == nil {
				c.current.Store(&a)
				if isChannelBind(b[:n]) {
					c.rebind(a)
				} else if n > 0 && b[0]&0xC0 == 0x40 {
					if bp := c.bypassOf(a); bp != nil {
						if bp.carryUp(b[:n]) {
							continue // written to the peer past pion
						}
						bp.upHandOff(b[:n])
						c.lastUp = bp
					}
				}
			}
			return n, a, err
		}
	}
}

// bypassOf returns the bypass of client's UDP allocation, or nil.
func (c *filterConn) bypassOf(client net.Addr) *bypass {
	m := c.clients.Load()
	if m == nil || len(*m) == 0 {
		return nil
	}
	ap, ok := udpbatch.AddrPortOf(client)
	if !ok {
		return nil
	}
	return (*m)[ap]
}

// rebind sends the peers of client's bypass through pion again: pion is
// about to handle a ChannelBind request of the client.
func (c *filterConn) rebind(client net.Addr) {
	if bp := c.bypassOf(client); bp != nil {
		bp.rebind()
	}
}

func (c *filterConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.blocked(a) {
		return len(b), nil
	}
	if len(b) > 0 && b[0]&0xC0 == 0 && c.responded != nil {
		c.responded(b, a) // pion's answer to a request (turnAuth.observe)
	}
	// ChannelData (channel numbers 0x4000-0x7FFF) comes only from the
	// packet handler of the client's allocation; STUN goes out at once.
	if len(b) >= 4 && b[0]&0xC0 == 0x40 {
		if bp := c.bypassOf(a); bp != nil && bp.w.queue(b, a) {
			bp.framed(b)
			return len(b), nil
		}
	}
	return c.PacketConn.WriteTo(b, a)
}

// trackTURN registers a TURN-over-TLS connection so SetPolicy can cut it.
func (r *Relay) trackTURN(c net.Conn) net.Conn {
	key := endpointKey(c.RemoteAddr())
	t := &trackedConn{Conn: c, observe: r.auth.observe}
	t.untrack = func() {
		r.tmu.Lock()
		if r.tlsTURN[key] == t {
			delete(r.tlsTURN, key)
		}
		r.tmu.Unlock()
		// A closed TLS endpoint is gone for good: it stops counting against
		// its principal's quota now, not after endpointIdle (clients that
		// redial through the relay would otherwise run into the quota).
		r.auth.release(key)
	}
	r.tmu.Lock()
	r.tlsTURN[key] = t
	r.tmu.Unlock()
	wait := r.cfg.turnIdleWait
	if wait <= 0 {
		wait = turnIdleWait
	}
	// Closing c ends pion's read; pion then closes t, which untracks.
	idle := time.AfterFunc(wait, func() {
		if _, ok := r.auth.lookup(c.RemoteAddr()); !ok {
			r.m.refuse("tls_no_allocation")
			r.log.Debug("TURN over TLS: no accepted request, closing", "remote", c.RemoteAddr().String(), "after", wait)
			c.Close()
		}
	})
	untrack := t.untrack
	t.untrack = func() { idle.Stop(); untrack() }
	return t
}

type trackedConn struct {
	net.Conn
	once    sync.Once
	untrack func()
	observe func(b []byte, to net.Addr) // turnAuth.observe
}

// Write passes pion's frames on; each Write is one whole STUN message or
// ChannelData (pion's STUNConn), and a STUN response settles the identity
// its request claimed (turnAuth.observe).
func (t *trackedConn) Write(b []byte) (int, error) {
	if len(b) > 0 && b[0]&0xC0 == 0 {
		t.observe(b, t.RemoteAddr())
	}
	return t.Conn.Write(b)
}

func (t *trackedConn) Close() error {
	t.once.Do(t.untrack)
	return t.Conn.Close()
}
