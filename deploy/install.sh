#!/usr/bin/env bash
# Installs a built dockmaster binary and its configuration skeleton on this host (as root).
# usage: deploy/install.sh [path/to/dockmaster]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/dockmaster}
[ -x "$bin" ] || { echo "no binary at $bin: run cargo build --release first" >&2; exit 1; }
install -D -m 0755 "$bin" /usr/local/bin/dockmaster
install -d -m 0755 /etc/dockmaster /etc/dockmaster/certs.d /var/lib/dockmaster
[ -e /etc/dockmaster/config.yaml ] || install -m 0644 "$here/config.example.yaml" /etc/dockmaster/config.yaml
echo "installed /usr/local/bin/dockmaster; configuration in /etc/dockmaster/config.yaml"
