#!/usr/bin/env bash
# Installs the Debian packages that Postern's tests, demo and benchmarks use.
# Idempotent: does nothing when everything is present.
set -euo pipefail
pkgs=(nftables iproute2 openssh-server openssh-client dnsutils iperf3 postgresql postgresql-client curl ca-certificates procps psmisc iputils-ping util-linux hostname dbus wixl msitools osslsigncode rpm debsigs debsig-verify gnupg openssl systemd dpkg-dev oathtool)
# The console's browser tests drive headless Chromium (chromedp); under CI=true
# they fail without it.
pkgs+=(chromium)
# The connector image runs under runc (the OCI runtime) in installer's tests.
pkgs+=(runc)
# WebAuthn tests drive Chromium's virtual authenticator headless (chromedp).
pkgs+=(chromium)
# The tray runs on a virtual X display (Xvfb) with a real StatusNotifier host
# (xfce4-panel); xdotool opens its menu, ImageMagick's import takes the
# screenshots, xclip is the clipboard the tray copies to
# (tray/xvfb_linux_test.go; under CI=true it fails without them).
pkgs+=(xvfb xfce4-panel xdotool imagemagick dbus-daemon xclip)
# The lab's IPv6-only client network reaches IPv4 through NAT64 (tayga;
# lab/e2e TestIPv6OnlyClientThroughNAT64).
pkgs+=(tayga)
# Single sign-on tests run a real OIDC provider (npm oidc-provider, Node.js 20+).
# Keep an existing Node.js (e.g. from NodeSource, which bundles npm); else use Debian's.
command -v node >/dev/null && command -v npm >/dev/null || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "installing: ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v go >/dev/null || { echo "Go 1.26 is required (https://go.dev/dl/)"; exit 1; }
