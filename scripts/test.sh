#!/usr/bin/env bash
# Runs the whole test suite: vet/format/cross-build checks, unit tests (with the
# race detector), then every suite in scripts/test.d in name order (the
# end-to-end suites that need root and network namespaces). Under CI=true a
# missing privilege is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
make check
go test -race -timeout 12m ./...
# Postern's patched quic-go (third_party/quic-go/POSTERN.md): its own tests.
(cd third_party/quic-go && go test -race -timeout 5m .)
for s in scripts/test.d/*.sh; do
  [ -e "$s" ] || continue
  echo "=== $s"
  bash "$s"
done
