// Package loadgen simulates a company's worth of Postern parts against a
// controller (or a set of replicas) to measure what the control plane
// sustains: devices that sign in (service-account keys and device keys, the
// real request), hold their client policy stream and ask for Connection
// Tokens; connectors that enroll, heartbeat, hold their policy stream and
// send flow events. Simulated parties are cheap (no TUN, no QUIC data), but
// every request is the real one, over TLS pinned to the deployment CA.
//
// Run drives one measured run and returns a Report: sign-ins per second,
// Connection Tokens per second, how long a policy change takes to reach the
// last device and the last connector, and, when the controllers' process ids
// are given, their CPU time and resident memory. postern-loadgen runs it
// against any deployment; `make bench-scale` (scale_test.go) starts the
// controllers itself on SQLite and on PostgreSQL and writes docs/scale.md.
package loadgen
