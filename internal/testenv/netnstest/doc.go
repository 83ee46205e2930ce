// Package netnstest builds the network namespaces that Postern's tests and
// harnesses (the per-package netns tests, lab and bench) run hosts in, the
// one way the project's network-safety rules allow:
//
//   - /etc/netns/NAME/resolv.conf is written before the namespace exists,
//     so "ip netns exec" bind-mounts it over /etc/resolv.conf and a program
//     that rewrites its resolver (posternd) never reaches the machine's own;
//   - a veth pair is created inside one test namespace with its peer in the
//     other, under unique temporary names, and only then renamed: no
//     interface of the machine's own namespace is ever created or changed;
//   - whatever Create made is removed again when it fails half-way, and
//     New and Add remove their namespace when the test ends, also on failure.
//
// The error-returning functions (Create, Remove, Veth, Do) serve harnesses
// that outlive a test; New, Add, Link and In wrap them for tests and fail
// the test on error. The package works on Linux only and needs root.
package netnstest
