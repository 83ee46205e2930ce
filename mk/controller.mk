# Controller targets (issue 2). The repository-wide `make test` already runs
# these tests; these targets run only the controller's.
.PHONY: controller test-controller bench-controller

controller:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/postern-controller

test-controller:
	$(GO) test -race -count=1 ./controller/... ./cmd/postern-controller/...

# Connection Tokens per second on one core, apply of 10,000 resources and
# 1,000 groups (time, peak heap), fan-out of one change to 1,000 subscribers.
bench-controller:
	$(GO) test -run '^$$' -bench 'BenchmarkTokenIssue' -cpu 1 -benchtime 3s ./controller/
	$(GO) test -run '^$$' -bench 'BenchmarkApply10k' -benchtime 2x ./controller/
	$(GO) test -run '^$$' -bench 'BenchmarkFanout1000' -benchtime 5x ./controller/
