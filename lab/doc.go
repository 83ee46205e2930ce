// Package lab builds a whole Postern deployment on one Linux machine out of
// network namespaces, veth pairs and nftables NAT, using only the
// documentation and benchmarking address ranges (192.0.2.0/24,
// 198.51.100.0/24, 203.0.113.0/24, 198.18.0.0/15).
//
// The topology is an "internet" (a bridge in its own namespace) with the
// controller, the relay and a public DNS server; a home router with masquerade
// and the client namespaces behind it; a corporate router with masquerade that
// admits no new inbound connections, and behind it the connectors, a private
// host running real OpenSSH and PostgreSQL, an HTTP server, a corporate DNS
// server that alone knows *.corp.internal, and a subnet used as a CIDR
// resource. See docs/lab.md for the address plan.
//
// The lab deploys the Postern programs from bin/ only through the
// user-facing contract (serve, apply, connector-token, relay-token, postern
// login/up), and offers the faults the end-to-end tests use: stop or restart a
// program, block UDP or all traffic at a router, switch a router's NAT to
// symmetric, change a client's address and drop a share of packets.
//
// Everything the lab creates (namespaces, /etc/netns entries, processes) is
// removed by Close, also after a failure; on failure the logs of every program
// are kept and their location printed.
package lab
