// Package connector is Postern's connector: enrollment, self-signed identity
// and heartbeats, the QUIC server that accepts clients, and policy enforcement
// on every flow before it dials a private host.
//
// A Connector is opened from an enrolled state directory (see Enroll), binds one
// UDP socket for QUIC (Transport, shared with STUN/ICE through quic-go's
// ReadNonQUICPacket/WriteTo), and Run drives it: heartbeats that carry the
// digests of the self-signed certificates it serves, the controller's policy
// push stream (persisted for fail-static operation), certificate rotation,
// credential renewal, flow events and the optional metrics endpoint.
// ServeListener accepts client connections from any further quic.Listener (for
// example one over a relayed path).
package connector
