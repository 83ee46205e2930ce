# The controller's PostgreSQL backend and replica fan-out (docs/controller.md,
# "Running on PostgreSQL / several replicas"). The tests start their own
# PostgreSQL server (initdb into a temporary directory, run as the postgres
# user); they are part of `make test` and skip without root or binaries
# unless CI=true.
.PHONY: test-postgres

test-postgres:
	$(GO) test -race -count=1 -run 'Conformance|Postgres|Replicas|Migrations|RedactURL|DatabaseFlag' ./controller/store/... ./controller/ ./controller/cli/

# BenchmarkApply10kPostgres: BenchmarkApply10k on PostgreSQL, and how long a
# second replica takes to follow.
.PHONY: bench-postgres
bench-postgres:
	$(GO) test -run '^$$' -bench 'BenchmarkApply10kPostgres' -benchtime 1x ./controller/

# The control plane at company size (loadgen/scale_test.go, docs/scale.md):
# N devices and N/10 connectors against two replicas on one PostgreSQL and
# against one controller on SQLite. POSTERN_SCALE_DEVICES=1000,3000 scales
# it down. Run it on an idle machine.
.PHONY: bench-scale
bench-scale: build
	POSTERN_SCALE=1 $(GO) test -count=1 -timeout 30m -run 'TestScale$$' -v ./loadgen/
