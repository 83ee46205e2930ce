package lab

// DefaultReachableConnectors is the default of Options.ReachableConnectors
// for `postern-lab demo`/`up` and the end-to-end suite (which also reads
// POSTERN_LAB_REACHABLE_CONNECTORS). It is true until NAT traversal (ICE
// through the relay) lands; then it becomes false, the real topology in
// which the corporate NAT admits nothing inbound.
const DefaultReachableConnectors = true
