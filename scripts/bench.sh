#!/usr/bin/env bash
# make bench: Postern side by side with direct TCP, wireguard-go, OpenVPN and
# ssh -L in network namespaces (package bench, docs/benchmarks.md).
#   bash scripts/bench.sh [--quick] [postern-bench flags...]
# Needs root. `make bench` has already run `make deps build`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "make bench needs root (network namespaces, nftables, tc)" >&2
  exit 1
fi
# The comparison rows need two packages beyond scripts/install-deps.sh.
missing=()
for p in openvpn wireguard-tools perf:linux-perf; do
  cmd=${p%%:*}; pkg=${p#*:}
  [ "$cmd" = openvpn ] && pkg=openvpn
  [ "$cmd" = wireguard-tools ] && { cmd=wg; pkg=wireguard-tools; }
  command -v "$cmd" >/dev/null || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { env DEBIAN_FRONTEND=noninteractive apt-get update -qq && env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    echo "could not install ${missing[*]}; those rows will be marked unavailable" >&2
fi
mkdir -p bin
go build -trimpath -o bin/postern-bench ./cmd/postern-bench
exec ./bin/postern-bench --repo . "$@"
