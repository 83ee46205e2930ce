#!/usr/bin/env bash
# Runs every fuzz target for a short time (FUZZTIME, default 2s each; the
# checked-in corpus under each package's testdata/fuzz is replayed first).
# Longer runs: make fuzz FUZZTIME=60s. One target: FUZZ_ONLY=FuzzQuery.
# A failure leaves the crasher in PKG/testdata/fuzz/TARGET/ (keep it: it
# becomes a regression test of `go test`).
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZTIME="${FUZZTIME:-2s}"
targets=(
  "./dnsproxy FuzzQuery"
  "./ctoken FuzzVerify"
  "./ctoken FuzzVerifySigned"
  "./ctoken FuzzParseJWKS"
  "./policy FuzzParseAddress"
  "./policy FuzzParsePortRule"
  "./controller FuzzParseSpec"
  "./controller FuzzApply"
  "./traversal/sigwire FuzzRead"
  "./netstack FuzzTUNPacket"
  "./netstack FuzzICMPIntercept"
  "./client FuzzLocalAPI"
)
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  if [ -n "${FUZZ_ONLY:-}" ] && [ "$name" != "$FUZZ_ONLY" ] && [ "$pkg" != "./$FUZZ_ONLY" ]; then
    continue
  fi
  echo "--- fuzz $pkg $name for $FUZZTIME"
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg"
done
