// Package client is the Postern client daemon (posternd): sign-in state, policy subscription, one QUIC connection per connector, flow mapping from the netstack onto QUIC streams, and the local API served on DIR/posternd.sock.
package client
