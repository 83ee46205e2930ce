// Package dnsproxy is the client's DNS server: a chain of handlers that
// answers names of the resources the user may use with stable synthetic
// addresses and forwards every other query to the resolvers the system used
// before the daemon took over.
//
// The chain (see Handler) runs, in order: limits (queries in flight, message
// sanity), synthetic answers (resource names, aliases, PTR for synthetic
// addresses), search-domain expansion of short names, and forwarding
// (EDNS kept, TCP retry on truncation, SERVFAIL after a timeout, response
// size cap).
//
// Matching follows package policy: "db.corp.internal" matches that name only;
// "*.corp.internal" matches any name with one or more labels in place of "*"
// (a.corp.internal and a.b.corp.internal) but never corp.internal itself. When
// several resources match, the exact name wins over a wildcard and a longer
// wildcard suffix over a shorter one.
//
// Synthetic addresses come from Config.V4Range (default 100.96.0.0/12) and
// Config.V6Range (default fd7a:7073:746e::/48). The first /24 of the IPv4
// range and the first /120 of the IPv6 range are reserved for Postern itself
// (the proxy listens on the ".53" address of each) and never allocated. A
// name keeps its address while the daemon runs and across restarts
// (Config.StateFile).
package dnsproxy
