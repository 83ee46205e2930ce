// Package netstack terminates the TCP, UDP and ICMP traffic a TUN device
// captures, using gVisor's tcpip stack, and hands each flow to a Handler.
//
// The stack is promiscuous and spoofing, so every destination routed to the
// TUN device is terminated locally. A new TCP connection reaches the Handler
// before its handshake completes: the handler either accepts it (the SYN-ACK is
// sent only then) or rejects it with a RST. Each UDP 5-tuple becomes one
// UDPConn. ICMP echo requests are taken off the packet path before gVisor sees
// them and handed to the Handler, which answers with the real echo reply body.
//
// The link endpoint writes packets to the device synchronously (it blocks
// instead of dropping when the device is busy) and reads them in batches; the
// stack runs with SACK, wide buffer ranges and the reno congestion control
// (cubic's window arithmetic overflows in this gVisor, as Tailscale found).
package netstack
