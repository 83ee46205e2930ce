#!/usr/bin/env bash
# Short fuzzing run of the DNS proxy's query path (seeded corpus in
# dnsproxy/fuzz_test.go). Longer runs: make fuzz-dns FUZZTIME=10m
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run='^$' -fuzz=FuzzQuery -fuzztime="${FUZZTIME:-10s}" ./dnsproxy
