// Package bench is the instrument behind `make bench`: it builds a small
// network-namespace topology (a client host, a server host, and an
// infrastructure host that runs the Postern controller, the relay and an
// upstream DNS server), brings up every tunnel under test side by side —
// direct TCP, Postern on the direct and on the relayed path, userspace
// wireguard-go, OpenVPN 2.6 and `ssh -L` — and measures them in one run, in
// an interleaved order: iperf3 throughput (1, 4 and 64 flows, both
// directions, and under a 1 Gbit/s tbf limit), CPU seconds per GB of the
// tunnel's own processes, 64-byte request/response latency idle and under
// bulk load, connection setup time and rate, fairness across 64 flows,
// memory per idle flow and DNS queries per second. It also runs the Go
// benchmarks of the Postern packages. Results are written as JSON and as
// Markdown (docs/benchmarks.md), with the machine description and the
// commit, and compared against the targets of issue 10.
//
// Postern is deployed only through the user-facing contract: controller
// serve/apply/connector-token/relay-token, postern-relay, postern-connector,
// posternd with a TUN device, postern login and up.
//
// The load generators (echo server, request/response client, connection
// setup load, idle-flow holder, DNS load) are small Go programs run as
// `postern-bench agent ...` inside the namespaces, so that their CPU time is
// never counted as the tunnel's.
//
// Only 198.18.0.0/15 is used; every namespace, /etc/netns entry and process
// the harness creates is removed when it ends, also on failure.
package bench
