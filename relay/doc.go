// Package relay is Postern's relay: STUN, TURN over UDP and TLS for end-to-end encrypted QUIC packets, and the signaling service between clients and connectors.
package relay
