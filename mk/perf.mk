# Datapath performance (issues 4 and 10): the namespace benchmark of the
# client daemon (TUN, netstack, QUIC, connector) with direct-TCP references
# from the same run, CPU seconds per GB of the tunnel's processes and, with
# PROFILE_DIR, 10-second CPU profiles of posternd and the connector during a
# download and an upload. Root. See docs/datapath-performance.md.
PROFILE_DIR ?= /tmp/postern-profiles

.PHONY: bench-datapath

bench-datapath:
	POSTERN_BENCH_PROFILE=$(PROFILE_DIR) $(GO) test -run '^$$' -bench 'BenchmarkTUN/(throughput|upload|latency|profile)' -benchtime 3s -timeout 20m ./client/
	@echo "profiles: go tool pprof -top $(PROFILE_DIR)/posternd-down.pprof (and connector-*, *-up)"
