#!/usr/bin/env bash
# Installs the Debian packages needed to build dockmaster: libcontainer's seccomp support links
# the system libseccomp (found through pkg-config). Idempotent. Needs root.
set -euo pipefail

packages=(libseccomp-dev pkg-config gcc libssl-dev)  # libssl: git2 (https, ssh)
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
