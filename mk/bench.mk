# Benchmark helpers (the `bench` target itself is in the Makefile and runs
# scripts/bench.sh; see docs/benchmarks.md).
.PHONY: bench-quick bench-smoke

bench-quick: deps build
	bash scripts/bench.sh --quick $(BENCHFLAGS)

# The harness's own smoke test (topology up/down, one direct-TCP cell); root.
bench-smoke:
	$(GO) test -count=1 -run TestSmoke ./bench/
