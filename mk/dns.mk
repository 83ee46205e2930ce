# DNS proxy and platform integration (dnsproxy/, platform/). See docs/dns.md.
FUZZTIME ?= 10s

.PHONY: test-dns fuzz-dns bench-dns

# Unit, in-process and network-namespace tests (the namespace tests need root).
test-dns:
	$(GO) test -race ./dnsproxy/... ./platform/...

fuzz-dns:
	FUZZTIME=$(FUZZTIME) FUZZ_ONLY=FuzzQuery bash scripts/test.d/20-fuzz.sh

# Queries/s and p99 for resource names and forwarded names on one core,
# next to a bare miekg/dns server and the upstream queried directly.
bench-dns:
	$(GO) test -run='^$$' -bench='ResourceQuery|ForwardedQuery' -cpu 1 -benchtime=3s ./dnsproxy
