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
//
// # TIME_WAIT and reused source ports
//
// When the private server closes first, the netstack closes first and holds
// the 4-tuple in TIME_WAIT, while the application's kernel, which closed
// second, may hand the same source port to a new connection at once. A
// kernel stack accepts such a SYN (RFC 1122 4.2.2.13, RFC 6191); gVisor only
// does so towards a listening endpoint, and the forwarder used here has
// none, so gVisor dropped the SYN and the application hung in SYN
// retransmissions for up to a minute (the stall of issue 15). Two settings
// fix it without giving up what TIME_WAIT protects:
//
//   - A SYN for a tuple in TIME_WAIT reopens it (reopenTimeWait): the
//     TIME_WAIT endpoint is closed before the SYN is delivered, and the
//     forwarder sees a new connection. The one SYN refused is the one PAWS
//     refuses: both sides use timestamps and its TSval is older than the last
//     seen, i.e. an old duplicate. Without timestamps the SYN is accepted:
//     the TUN is a local in-order queue, so a SYN that arrives after the
//     previous incarnation's last segments means the application's stack
//     holds no state for it, and no delayed duplicate of the old connection
//     can follow (what the ISN rule of RFC 1122 guards against on a network).
//   - TIME_WAIT lasts TimeWaitTimeout (5 s), not 60 s: on this local link
//     2×MSL has no network to cover, and every closed flow's endpoint costs
//     memory for as long as it lasts. Five seconds still answers several
//     retransmissions of the application's FIN should our last ACK be lost.
//
// gVisor's TCPTimeWaitReuseOption is not the fix: it lets the stack's own
// outbound connections reuse a port held in TIME_WAIT, while here the new
// SYN comes in from the application.
package netstack
