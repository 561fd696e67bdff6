#!/usr/bin/env bash
# Installs the dockmaster agent on this host (as root):
#   /usr/local/bin/dockmaster                  the binary (replaced atomically on upgrade)
#   /etc/dockmaster/agent.yaml                 the example configuration, only if none exists (0600)
#   /var/lib/dockmaster                        the state directory
#   /etc/systemd/system/dockmaster.service     the unit, enabled (and started) when systemd runs
# Safe to run again: an unchanged file is left alone, the configuration is never overwritten,
# and an upgrade restarts the agent only (KillMode=process: containers keep running).
#
# usage: deploy/install.sh [--dry-run] [--prefix DIR] [BINARY]
#   BINARY        the dockmaster binary (default: target/release/dockmaster of this checkout)
#   --dry-run     print what would be done and change nothing
#   --prefix DIR  install below DIR (DIR/usr/local/bin, DIR/etc/dockmaster, ...) and never call
#                 systemctl: for staging an image or a package, and for tests
# Tests set DOCKMASTER_INSTALL_SYSTEMCTL to a stand-in for systemctl: it is then called as if
# systemd were running, also under --prefix.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dry_run=0
prefix=""
bin=""

die() {
	echo "install.sh: $*" >&2
	exit 1
}

usage() {
	sed -n '2,/^set -euo pipefail$/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# Runs a command that changes the system, or only shows it with --dry-run.
run() {
	echo "+ $*"
	if [ "$dry_run" = 0 ]; then
		"$@"
	fi
}

while [ $# -gt 0 ]; do
	case $1 in
	--dry-run) dry_run=1 ;;
	--prefix)
		[ $# -ge 2 ] || die "--prefix needs a directory"
		prefix=$2
		shift
		;;
	--prefix=*) prefix=${1#--prefix=} ;;
	-h | --help)
		usage
		exit 0
		;;
	-*) die "unknown option $1 (see --help)" ;;
	*)
		[ -z "$bin" ] || die "more than one binary given: $bin and $1"
		bin=$1
		;;
	esac
	shift
done

if [ -n "$prefix" ]; then
	[ "${prefix#/}" != "$prefix" ] || prefix=$PWD/$prefix
	# "/" and "/x/" both end up without a trailing slash ("/" becomes no prefix at all).
	while [ "${prefix%/}" != "$prefix" ]; do prefix=${prefix%/}; done
fi
bin=${bin:-$here/../target/release/dockmaster}
[ -f "$bin" ] && [ -x "$bin" ] || die "no executable dockmaster at $bin: run cargo build --release first, or pass the binary's path"
if [ -z "$prefix" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
	die "run as root (or use --prefix DIR / --dry-run)"
fi

bindir=$prefix/usr/local/bin
confdir=$prefix/etc/dockmaster
config=$confdir/agent.yaml
statedir=$prefix/var/lib/dockmaster
unitdir=$prefix/etc/systemd/system
unit=$unitdir/dockmaster.service
# systemd is running (sd_booted()'s test); under a prefix the host's systemd is never touched.
systemd=0
systemctl=systemctl
if [ -n "${DOCKMASTER_INSTALL_SYSTEMCTL:-}" ]; then
	systemctl=$DOCKMASTER_INSTALL_SYSTEMCTL
	systemd=1
elif [ -z "$prefix" ] && [ -d /run/systemd/system ]; then
	systemd=1
fi

[ "$dry_run" = 0 ] || echo "dry run: nothing is changed"

bin_changed=0
if [ -f "$bindir/dockmaster" ] && cmp -s "$bin" "$bindir/dockmaster"; then
	echo "= $bindir/dockmaster is up to date"
else
	bin_changed=1
	[ -d "$bindir" ] || run install -d -m 0755 "$bindir"
	# A new file renamed over the old one: a running agent keeps its binary (no ETXTBSY) and
	# nobody ever sees a half-written file.
	run install -m 0755 "$bin" "$bindir/.dockmaster.new"
	run mv -f "$bindir/.dockmaster.new" "$bindir/dockmaster"
fi

if [ ! -d "$confdir" ]; then
	# 0700: the configuration and the files next to it hold tokens and keys.
	run install -d -m 0700 "$confdir"
fi
[ -d "$confdir/certs.d" ] || run install -d -m 0755 "$confdir/certs.d"
config_new=0
if [ -e "$config" ]; then
	echo "= $config exists: kept"
else
	config_new=1
	run install -m 0600 "$here/agent.yaml" "$config"
fi

# 0711: container processes running as other users traverse it to reach their volumes.
[ -d "$statedir" ] || run install -d -m 0711 "$statedir"

unit_changed=0
if [ "$systemd" = 1 ] || [ -n "$prefix" ]; then
	if [ -f "$unit" ] && cmp -s "$here/dockmaster.service" "$unit"; then
		echo "= $unit is up to date"
	else
		unit_changed=1
		[ -d "$unitdir" ] || run install -d -m 0755 "$unitdir"
		run install -m 0644 "$here/dockmaster.service" "$unit"
	fi
fi

if [ "$systemd" = 1 ]; then
	[ "$unit_changed" = 0 ] || run "$systemctl" daemon-reload
	if [ "$config_new" = 1 ]; then
		# The example points at git.example.com: starting it would only log fetch errors.
		run "$systemctl" enable dockmaster.service
		echo "edit $config (sources, webhook secret), then: systemctl start dockmaster"
	elif ! run "$bindir/dockmaster" agent --config "$config" --check; then
		run "$systemctl" enable dockmaster.service
		echo "$config does not validate (above): fix it, then: systemctl restart dockmaster" >&2
		exit 1
	elif "$systemctl" is-active --quiet dockmaster.service; then
		if [ "$bin_changed" = 1 ] || [ "$unit_changed" = 1 ]; then
			# Only the agent restarts; shims and containers keep running.
			run "$systemctl" restart --no-block dockmaster.service
		fi
		run "$systemctl" enable dockmaster.service
	else
		run "$systemctl" enable --now --no-block dockmaster.service
	fi
	# --no-block: the agent reports ready after its first sync, which may pull images for minutes.
	echo "installed; follow the start with: systemctl status dockmaster, dockmaster status, journalctl -u dockmaster -f"
elif [ -n "$prefix" ]; then
	echo "installed below $prefix; systemctl was not called (--prefix)"
else
	cat <<EOF
installed; systemd is not running on this host, so start the agent with your init system,
in the foreground (it logs to stderr and keeps running until SIGTERM; SIGHUP reloads):
  $bindir/dockmaster agent --config $config
Stopping the agent never stops the containers.
EOF
fi
