# Client daemon, netstack and CLI targets (issue 4). See docs/client.md.
.PHONY: test-client bench-client

test-client:
	$(GO) test -race -count=1 ./client/... ./netstack/... ./localapi/...

# In-process: one TCP flow through SOCKS5, QUIC on loopback and a real
# connector; failover time to a second connector after the first is
# killed (goal 2 s). As root, in network namespaces with a real TUN daemon:
# single-flow throughput next to direct TCP, 64-byte request/response p50/p99
# idle and under bulk, new flows per second, daemon memory per idle flow.
bench-client:
	$(GO) test -run '^$$' -bench 'BenchmarkTunnelThroughputSOCKS5' -benchtime 2000x ./client/
	$(GO) test -run '^$$' -bench 'BenchmarkFailover' -benchtime 5x ./client/
	$(GO) test -run '^$$' -bench 'BenchmarkTUN' -benchtime 3s -timeout 20m ./client/
