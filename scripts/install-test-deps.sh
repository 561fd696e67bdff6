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
  git               # git daemon and git-http-backend: the agent's real git servers
  openssh-server openssh-client  # sshd on loopback for git over ssh (started by the tests)
  systemd           # systemd-analyze verify of the unit file
  prometheus        # promtool (exposition lint, alert rules) and a real server scraping the agent
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Without systemd, maintainer scripts would start sshd, prometheus and its exporters as
  # services on this machine: policy-rc.d forbids starting anything while installing.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" || { [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
for tool in cargo rustfmt; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install a Rust toolchain (rustup)" >&2; exit 1; }
done
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
