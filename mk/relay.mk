# Relay and NAT traversal (issue 6).
.PHONY: test-relay bench-relay

# Unit tests, loopback tests and the network-namespace lab (needs root;
# skipped otherwise, fatal under CI=true).
test-relay:
	$(GO) test -race -count=1 ./relay/... ./traversal/... ./cmd/postern-relay/...

# Throughput and 64-byte request/response latency on the direct and the
# relayed path (loopback, in one run).
bench-relay:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./traversal/
