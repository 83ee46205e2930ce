# Connector targets (issue 3).
.PHONY: test-connector bench-connector

test-connector:
	$(GO) test -race -count=1 ./connector/... ./cmd/postern-connector/...

# Stream-open latency, QUIC vs TCP single-stream throughput (same run), and
# memory of 10,000 idle streams (B/stream).
bench-connector:
	$(GO) test -run '^$$' -bench 'StreamOpen|ThroughputQUICvsTCP' -benchtime 2s ./connector/
	$(GO) test -run '^$$' -bench 'IdleStreams10k' -benchtime 1x ./connector/
