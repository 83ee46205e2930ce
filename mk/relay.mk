# Relay and NAT traversal (issue 6).
.PHONY: test-relay bench-relay nat-matrix

# Unit tests, loopback tests and the network-namespace lab (needs root;
# skipped otherwise, fatal under CI=true).
test-relay:
	$(GO) test -race -count=1 ./relay/... ./traversal/... ./cmd/postern-relay/...

# Throughput and 64-byte request/response latency on the direct and the
# relayed path (loopback, in one run).
bench-relay:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./traversal/

# The whole NAT matrix (root), rewriting docs/nat-matrix.md with its table;
# other runs of TestNATMatrix only log it.
nat-matrix:
	POSTERN_WRITE_MATRIX=1 $(GO) test -count=1 -run '^TestNATMatrix$$' -v ./traversal/
