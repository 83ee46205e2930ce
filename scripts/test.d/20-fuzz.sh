#!/usr/bin/env bash
# Runs every fuzz target for a short while (the checked-in corpus under each
# package's testdata/fuzz is replayed first). make test gives each target a
# number of executions (its third column: about 2 s of work on 2 idle
# cores), not a duration: with a duration, Go before 1.27 can fail a clean
# run with "context deadline exceeded" when the deadline catches a worker
# mid-call, or the baseline run of a large cached corpus, on a loaded
# machine (golang/go#75804). FUZZTIME overrides every target's budget
# (make fuzz FUZZTIME=60s, or 100000x). One target: FUZZ_ONLY=FuzzQuery.
# A failure leaves the crasher in PKG/testdata/fuzz/TARGET/ (keep it: it
# becomes a regression test of `go test`).
set -euo pipefail
cd "$(dirname "$0")/../.."
targets=(
  "./dnsproxy FuzzQuery 20000x"
  "./ctoken FuzzVerify 20000x"
  "./ctoken FuzzVerifySigned 20000x"
  "./ctoken FuzzParseJWKS 20000x"
  "./policy FuzzParseAddress 50000x"
  "./policy FuzzParsePortRule 50000x"
  "./controller FuzzParseSpec 3000x"
  "./controller FuzzApply 2000x"
  "./traversal/sigwire FuzzRead 20000x"
  "./traversal FuzzTURNReceiverDispatch 20000x"
  "./traversal/stunguard FuzzCheck 50000x"
  "./relay FuzzRelayUDP 5000x"
  "./netstack FuzzTUNPacket 10000x"
  "./netstack FuzzICMPIntercept 20000x"
  "./client FuzzLocalAPI 3000x"
)
for t in "${targets[@]}"; do
  read -r pkg name budget <<<"$t"
  if [ -n "${FUZZ_ONLY:-}" ] && [ "$name" != "$FUZZ_ONLY" ] && [ "$pkg" != "./$FUZZ_ONLY" ]; then
    continue
  fi
  budget="${FUZZTIME:-$budget}"
  echo "--- fuzz $pkg $name for $budget"
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$budget" "$pkg"
done
