#!/usr/bin/env bash
# Keeps third_party/quic-go, Postern's patched copy of quic-go, in step with
# upstream (see third_party/quic-go/POSTERN.md).
#
#   scripts/quic-go.sh verify      rebuild the copy from upstream's module at
#                                  go.mod's version plus third_party/quic-go.patch
#                                  and fail if the tree differs
#   scripts/quic-go.sh sync [VER]  rebuild the copy from upstream VER (default:
#                                  go.mod's) plus the patch; go.mod's require
#                                  line is set to VER
#   scripts/quic-go.sh diff        write third_party/quic-go.patch from the copy
#                                  as it is now (after editing it)
set -euo pipefail
cd "$(dirname "$0")/.."
copy=third_party/quic-go
patchfile=third_party/quic-go.patch
# Upstream parts Postern does not build or test (none is imported).
trimmed=(http3 integrationtests interop example assets metrics oss-fuzz.sh codecov.yml
	FUZZING.md AI-POLICY.md FIPS140.md SECURITY.md)

required_version() {
	awk '$1 == "github.com/quic-go/quic-go" && $2 ~ /^v/ { print $2; exit }' go.mod
}

# upstream VER DIR: upstream's module at VER, trimmed, in DIR.
upstream() {
	local src
	# Outside the module, so that nothing touches go.mod or go.sum.
	src=$(cd "$tmp" && GOFLAGS= go mod download -json "github.com/quic-go/quic-go@$1" |
		sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "quic-go $1: module download failed" >&2; exit 1; }
	cp -r "$src" "$2"
	chmod -R u+w "$2"
	(cd "$2" && rm -rf "${trimmed[@]}")
}

# build VER DIR: upstream VER with the patch applied, in DIR.
build() {
	upstream "$1" "$2"
	(cd "$2" && git apply -p1 --whitespace=nowarn) < "$patchfile" ||
		{ echo "third_party/quic-go.patch does not apply to quic-go $1" >&2; exit 1; }
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case "${1:-}" in
verify)
	v=$(required_version)
	build "$v" "$tmp/quic-go"
	if ! diff -r "$tmp/quic-go" "$copy" >"$tmp/out"; then
		cat "$tmp/out"
		echo "third_party/quic-go is not quic-go $v plus third_party/quic-go.patch:" \
			"edit the copy, then run scripts/quic-go.sh diff" >&2
		exit 1
	fi
	echo "third_party/quic-go is quic-go $v plus third_party/quic-go.patch"
	;;
sync)
	v=${2:-$(required_version)}
	build "$v" "$tmp/quic-go"
	rm -rf "$copy"
	mv "$tmp/quic-go" "$copy"
	go mod edit -require "github.com/quic-go/quic-go@$v"
	echo "third_party/quic-go is now quic-go $v plus the patch; run go mod tidy and the tests"
	;;
diff)
	v=$(required_version)
	upstream "$v" "$tmp/upstream"
	cp -r "$copy" "$tmp/postern"
	(cd "$tmp" && diff -ruN upstream postern || [ $? -eq 1 ]) |
		sed -E 's/^((---|\+\+\+) [^\t]*)\t.*/\1/' >"$patchfile"
	echo "wrote $patchfile ($(grep -c '^+++ ' "$patchfile") files)"
	;;
*)
	echo "usage: $0 verify | sync [VERSION] | diff" >&2
	exit 2
	;;
esac
