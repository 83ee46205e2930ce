// Package traversal finds and keeps the best path between a client and a
// connector, both behind NATs, and runs QUIC over it.
//
// It follows ICE (RFC 8445) in spirit while keeping quic-go on a plain
// *net.UDPConn for direct paths (a wrapped PacketConn costs quic-go its GSO
// fast path): every side sends and answers its connectivity checks (STUN
// binding requests with short-term credentials exchanged over the relay's
// signaling service) on the very socket its quic.Transport owns, using
// Transport.WriteTo and Transport.ReadNonQUICPacket. Candidates are host
// addresses, server-reflexive addresses learned from STUN on the relays, and
// the client's relayed address (a TURN allocation on a relay, over UDP or, when
// UDP is blocked, over TLS). The connector needs no allocation: its checks to
// the client's relayed address open its NAT towards the relay, and the
// client's QUIC over TURN reaches the connector's ordinary socket.
//
// The client dials QUIC on the first pair that validates (direct or relayed)
// and, when a direct pair to the same connector address validates later,
// migrates the connection onto its plain socket with quic-go connection
// migration (Conn.AddPath, Path.Probe, Path.Switch) without breaking streams.
//
// Dialer is the client side, ConnectorAgent the connector side; sigwire holds
// the signaling protocol shared with the relay.
package traversal
