// Package relay is Postern's relay: STUN and TURN (pion/turn) on UDP, TURN over
// TLS and the signaling service (traversal/sigwire) multiplexed by ALPN on one
// TLS listener, with TURN credentials checked against the controller-issued
// secret, per-principal quotas and Prometheus metrics. It forwards only the
// end-to-end encrypted QUIC packets of clients and connectors and never holds
// a key that could read a flow. pion/turn decides about every packet
// (allocations, permissions, channel bindings, quotas, the revocation
// filter); batch.go lets its UDP sockets move many datagrams per system
// call (recvmmsg, GSO), and bypass.go frames datagrams from a peer as
// ChannelData for the client past pion's per-allocation reader, the way
// pion framed that peer's last one (at most a second ago).
//
// Relay is the network service; Run (enroll.go) adds enrollment with a relay
// token, the state directory and the registration heartbeat with the
// controller.
package relay
