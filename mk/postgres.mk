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
