// Package e2e is Postern's end-to-end acceptance suite: one lab (see package
// lab) shared by every test, driven by real clients (OpenSSH, psql, curl,
// dig) from the client namespaces. It needs root and the programs in bin/
// (make build); without root it is skipped, except under CI=true where that
// is a failure. The tests live in the _test.go files; run them with
// scripts/test.d/50-e2e.sh or `go test ./lab/e2e/`.
package e2e
