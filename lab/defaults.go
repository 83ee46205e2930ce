package lab

// DefaultReachableConnectors is the default of Options.ReachableConnectors
// for `postern-lab demo`/`up` and the end-to-end suite (which also reads
// POSTERN_LAB_REACHABLE_CONNECTORS). It is false: the real topology, in which
// the corporate NAT admits nothing inbound and clients reach connectors only
// through NAT traversal (STUN and TURN on the relay, hole punching).
const DefaultReachableConnectors = false
