// Package connector is Postern's connector: enrollment, self-signed identity and heartbeats, the QUIC server that accepts clients, and policy enforcement on every flow before it dials a private host.
package connector
