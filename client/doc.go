// Package client is the Postern client daemon (posternd): the composition of the session (package client/session: sign-in, policy subscription, tokens) and the flow layer: QUIC connections to connectors, flow mapping from the netstack onto QUIC streams, and the local API served on DIR/posternd.sock.
package client
