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
# The comparison rows and the profile need packages beyond scripts/install-deps.sh.
missing=()
command -v openvpn >/dev/null || missing+=(openvpn)
command -v wg >/dev/null || missing+=(wireguard-tools)
command -v perf >/dev/null || missing+=(linux-perf)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt_install() { env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
  apt_install "${missing[@]}" ||
    { env DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt_install "${missing[@]}"; } ||
    echo "could not install ${missing[*]}; those rows (or the profile) will be marked unavailable" >&2
fi
mkdir -p bin
go build -trimpath -o bin/postern-bench ./cmd/postern-bench
exec ./bin/postern-bench --repo . "$@"
