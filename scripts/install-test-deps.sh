#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages. Idempotent: does nothing when
# everything is present. Needs root.
set -euo pipefail

bash "$(dirname "$0")/install-build-deps.sh"

packages=(
  docker-registry   # real OCI registry (distribution 2.8) for integration tests
  busybox-static    # static /bin/busybox: test images are built from it, no internet needed
  apache2-utils     # htpasswd -B for the registry's basic auth mode
  openssl           # test CA and token-server keys
  python3           # external conformance runners in ../shared/conformance
  skopeo podman     # reference tools: the smoke tests check our fixtures against them
  crun              # reference OCI runtime for the runtime benchmark and bundle checks
  iproute2 util-linux ca-certificates curl
  nftables          # nft: dockmaster's table (published ports, NAT) and the network tests
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
for tool in cargo rustfmt; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install a Rust toolchain (rustup)" >&2; exit 1; }
done
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
