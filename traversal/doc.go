// Package traversal finds and keeps the best path between a client and a
// connector, both behind NATs, and runs QUIC over it.
//
// It follows ICE (RFC 8445) in spirit while keeping quic-go on a plain
// *net.UDPConn for direct paths (a wrapped PacketConn costs quic-go its GSO
// fast path): every side sends and answers its connectivity checks (STUN
// binding requests with short-term credentials exchanged over the relay's
// signaling service) on the very socket its quic.Transport owns, using
// Transport.WriteTo and Transport.ReadNonQUICPacket. Candidates are host
// addresses, server-reflexive addresses learned from STUN on the relays,
// peer-reflexive addresses (the source of a valid incoming check is answered
// and checked at once) and the client's relayed address (a TURN allocation on
// a relay, over UDP or, when UDP is blocked, over TLS). The connector needs
// no allocation: its checks to the client's relayed address open its NAT
// towards the relay, and the client's QUIC over TURN reaches the connector's
// ordinary socket. A connector whose own network blocks UDP (its STUN to a
// relay goes unanswered) allocates on that relay over TLS when
// ConnectorAgentConfig has TURNCredentials and Serve: its QUIC server runs on
// the allocation too, and it offers the relayed address, which clients reach
// over UDP from their plain socket or, when their UDP is blocked as well,
// through their own allocation. QUIC over a TURN allocation over UDP takes
// the fast path of turnfast.go once the relay uses the channel binding:
// ChannelData framed here and sent in GSO runs (traversal/udpbatch), with
// path MTU discovery as on a plain socket; received ChannelData goes from
// one recvmmsg to quic-go without pion's read loop (turnrecv.go), which
// gets only the STUN messages. Host candidates leave out tunnels (point-to-point links,
// wg*, tun*, utun*, tailscale*, ...) and the synthetic ranges
// (DefaultExcludedPrefixes, plus DialerConfig.ExcludePrefixes).
//
// # Opening NATs in the right order
//
// A Linux NAT that receives a peer's packet before its own host has sent
// towards that peer keeps a conntrack entry for the unanswered packet; its
// host's own packets to the peer then leave from another port, which the
// peer's NAT drops. Either side's NAT can be hit, depending on which check
// arrives first. So each side opens its own mapping first:
//
//   - Before a check to a punchable candidate (anything but a relayed
//     address) a side sends a primer: a STUN indication with TTL 2
//     (primerTTL), which passes its own NAT and dies at the next router.
//     On Linux the TTL is a control message of that one sendmsg, so QUIC
//     packets written on the socket at the same moment keep the default TTL
//     (TestPrimerTTLIsPerPacket); elsewhere there is no primer (changing the
//     socket's TTL around one write would also cut QUIC packets short).
//   - The client learns its server-reflexive address while signaling
//     connects and puts it in the offer. The connector primes towards the
//     client's candidates, then answers, then holds its own checks to them
//     until the client's first check arrives (at most connectorHold): the
//     client's checks, which start on the answer, find the connector's NAT
//     open, and the connector's never reach the client's NAT first.
//   - A server-reflexive address learned late is trickled (both sides), and
//     the connector primes it on arrival.
//   - Reflexive pairs are checked first, then relayed, then host. Checks to
//     a target go on for the session's life: every 200 ms, every second
//     after 5 s, then with a doubling pause up to 35 s: pauses longer than
//     conntrack's 30 s let a stale entry that our own checks would refresh
//     expire, and each retry after one is primed again.
//
// The NAT matrix (TestNATMatrix, docs/nat-matrix.md) asserts the path of
// every pair of NAT kinds; the port-clash cell took the relay before this.
//
// # Paths over time
//
// The client dials QUIC on the first pair that validates (direct or relayed)
// and, when a direct pair to the same connector address validates later,
// migrates the connection onto its plain socket with quic-go connection
// migration (Conn.AddPath, Path.Probe, Path.Switch) without breaking streams.
// The reverse move exists too: when a direct path goes silent (nothing
// received for 3 s while QUIC kept sending), the connection is moved onto a
// new relayed leg (TURN over TLS when UDP is blocked), streams intact, and
// back to direct when UDP returns. Dialer.Diagnose reports relays, NAT
// behaviour and the candidate pairs of live connections (postern netcheck).
//
// # Why not pion/ice
//
// The design card names github.com/pion/ice/v2, which brings peer-reflexive
// candidates, pair ordering, nomination and consent freshness. This package
// deviates from that and keeps its own, smaller agent: pion/ice v2 owns its
// candidates' sockets or takes a UDPMux that it reads itself, and its checks
// run per Agent, one per connection; here one plain socket (the quic.Transport
// of every direct connection) must carry the checks of many sessions, be read
// only through ReadNonQUICPacket, and keep sending QUIC with GSO. pion/ice also
// has no notion of the primer ordering above (the failure seen on real
// networks), of moving an existing QUIC connection between a TURN allocation
// and the plain socket, or of TURN over TLS as a fallback raced with UDP;
// each would be code around the library rather than in it. Adopting it
// through a custom UDPMux over Transport.ReadNonQUICPacket/WriteTo was judged
// too large for the time available and was not measured, so this is a
// decision of scope, not a measured cost on the fast path. What pion/ice
// would add that this package lacks: formal nomination (the client simply
// uses the first valid pair) and STUN consent freshness (QUIC's own
// keepalives and the silent-path detector stand in for it).
//
// Dialer is the client side, ConnectorAgent the connector side; sigwire holds
// the signaling protocol shared with the relay.
package traversal
