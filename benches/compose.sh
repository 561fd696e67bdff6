#!/usr/bin/env bash
# Compose benchmark, in one run:
#  1. A 100-service project (benches/compose_projects.py big), dockmaster only: cold `apply`,
#     then a no-op `plan` (all services applied and running) PLAN_RUNS times after PLAN_WARMUP
#     warm-ups: CPU time (user+sys, wait4 rusage of the plan process) and wall time; then
#     no-op `apply` NOOP_RUNS times; then `down -v`. For a breakdown, `config` and `plan`
#     are also timed before anything is applied, and the shims' CPU time during the no-op
#     plans is read from /proc.
#  2. A 10-service stack from cold (compose_projects.py stack: depends_on, a published port,
#     a named volume, one healthcheck that the api waits for): `dockmaster apply DIR
#     --stabilization 0` against `docker-compose up -d` (Debian's docker-compose v1) talking to
#     dockerd started by hand, images already stored locally for both. Also the same stack
#     without the healthcheck ("plain"), which leaves only creating and starting containers.
#     1 warm-up + ROUNDS rounds, the order of the tools alternating; `down -v` (recorded, not
#     in the ratio) between rounds. The published port is checked to answer after each apply.
# N_SERVICES, PLAN_WARMUP, PLAN_RUNS, NOOP_RUNS, ROUNDS set the sizes; KEEP_RESULTS=DIR keeps
# the raw JSON lines.
# benches/compose_time.py runs each timed command: wall, wait4 CPU time and every stderr line
# with its arrival time (phase breakdowns). Prints markdown tables for docs/BENCHMARKS.md.
# Needs root; installs its peers from Debian's packages.
#
# Safety: nothing runs in the machine's own network namespace. dockmaster and dockerd each run
# inside a namespace of their own made here (dmc-PID-dm, dmc-PID-dk; nsenter --net), so their
# bridges, veths, nft tables, forwarding sysctls and proxies exist only there, and all traffic
# (the published-port checks) stays inside them. dockerd and its managed containerd also run
# in a private mount namespace in which tmpfs hides /run, /var/lib, /opt and /etc/docker (as in
# benches/network.sh). The host namespace's links, routes, ip_forward and nft ruleset are
# compared before and after. A trap brings the projects down, removes every container, stops
# netd, dockerd, containerd and shims by PID, removes the cgroups, unmounts what is left under
# the work dir, deletes the namespaces and the work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
N_SERVICES=${N_SERVICES:-100}
PLAN_WARMUP=${PLAN_WARMUP:-3}
PLAN_RUNS=${PLAN_RUNS:-30}
NOOP_RUNS=${NOOP_RUNS:-10}
ROUNDS=${ROUNDS:-7}
IMAGE=localhost/busybox:bench
STACK_PORT=18080
BIG_BASE_PORT=20000

export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io docker-compose skopeo python3 busybox-static iproute2 util-linux nftables curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -ne 0 ]; then
  # Without systemd, the packages' maintainer scripts would start dockerd and containerd in the
  # machine's own namespaces (docker0, iptables rules): policy-rc.d forbids it while installing.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" || { [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

cargo build --release -q
BIN=$PWD/target/release/dockmaster

WORK=$(mktemp -d /var/tmp/dm-composebench.XXXXXX)
DM_NS=dmc-$$-dm     # plays dockmaster's host
DK_NS=dmc-$$-dk     # plays Docker's host
DK_BRIDGE=dmcbr$$   # Docker's default bridge (--bridge), made by this script in DK_NS
DK_CGROUP=dmc-$$-docker
DM="$BIN --root $WORK/dm"
DK_SOCK=unix://$WORK/dk/docker.sock
DK="/usr/bin/docker -H $DK_SOCK" # the client of the same package
DC="docker-compose -f" # + the compose file; the project name is its directory's
# docker-compose v1 talks to the same dockerd; no TTY, so its progress is plain stderr lines.
export DOCKER_HOST=$DK_SOCK COMPOSE_INTERACTIVE_NO_CLI=1
# dockmaster must not pick up /etc/dockmaster/config.yaml if the machine has one.
export DOCKMASTER_CONFIG=$WORK/dm-config.yaml
TIME="python3 $PWD/benches/compose_time.py"
in_dm() { nsenter --net="/run/netns/$DM_NS" "$@"; }
in_dk() { nsenter --net="/run/netns/$DK_NS" "$@"; }
MADE_NS=()
DOCKERD_PID=
DK_MNTNS=

# Long steps run as their own process group (setsid) in the background, so that a TERM or
# INT to this script stops them at once (bash defers traps while a foreground child runs).
CHILD=
step() {
  setsid "$@" &
  CHILD=$!
  wait "$CHILD"
  CHILD=
}

host_state() { # what this script must never change in the machine's own namespace
  sysctl -n net.ipv4.ip_forward
  ip -o link show | awk -F': ' '{print $2}' | sort
  ip route show table all
  nft list ruleset 2>/dev/null | sha256sum
}

cleanup() {
  set +e
  if [ -n "$CHILD" ]; then
    kill -TERM -- "-$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
  fi
  # dockmaster: projects, then any container left (their shims release veths, nft rules and
  # namespaces), then netd.
  if [ -e "/run/netns/$DM_NS" ]; then
    for p in big stack plain; do
      [ -d "$WORK/dm/projects/$p" ] && timeout 120 nsenter --net="/run/netns/$DM_NS" $DM down "$p" -v >/dev/null 2>&1
    done
    for d in "$WORK"/dm/containers/*/; do
      [ -d "$d" ] && timeout 30 nsenter --net="/run/netns/$DM_NS" $DM rm -f "$(basename "$d")" >/dev/null 2>&1
    done
  fi
  local p
  p=$(cat "$WORK/dm/networks/.netd.pid" 2>/dev/null)
  if [ -n "$p" ] && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- "--root $WORK/dm netd"; then
    kill -TERM "$p"
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  fi
  # Docker: the stack, containers, then dockerd (which stops its managed containerd), then
  # anything left in its private mount namespace (containerd, shims, docker-proxy), then the
  # containers' own processes from the cgroup parent.
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    for p in stack plain; do
      [ -f "$WORK/$p/compose.yaml" ] && timeout 120 $DC "$WORK/$p/compose.yaml" down -v -t 1 >/dev/null 2>&1
    done
    local ids
    ids=$(timeout 20 $DK ps -aq 2>/dev/null)
    [ -z "$ids" ] || timeout 60 $DK rm -f $ids >/dev/null 2>&1
    kill -TERM "$DOCKERD_PID"
    for _ in $(seq 200); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DOCKERD_PID" 2>/dev/null
  fi
  if [ -n "$DK_MNTNS" ]; then
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$DK_MNTNS" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
  fi
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$DK_CGROUP" ] || continue
    find "$h$DK_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    for _ in $(seq 50); do
      find "$h$DK_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$h$DK_CGROUP" ] || break
      sleep 0.1
    done
  done
  # Nothing should be mounted below WORK any more (dockmaster's netns dir is a bind mount of
  # its own); never let rm -rf cross a mount.
  findmnt -rn -o TARGET | grep -F "$WORK" | sort -r | while read -r m; do umount -l "$m"; done
  for n in "${MADE_NS[@]}"; do ip netns del "$n"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HOST_BEFORE=$(host_state)
echo '{}' > "$DOCKMASTER_CONFIG"

# ---- namespaces -----------------------------------------------------------------------------
for n in "$DM_NS" "$DK_NS"; do
  ip netns add "$n"; MADE_NS+=("$n")
  ip -n "$n" link set lo up
done
ip -n "$DK_NS" link add "$DK_BRIDGE" type bridge
ip -n "$DK_NS" addr add 172.18.0.1/16 dev "$DK_BRIDGE"
ip -n "$DK_NS" link set "$DK_BRIDGE" up

# ---- dockerd ----------------------------------------------------------------------------------
echo "starting dockerd in $DK_NS..." >&2
mkdir -p "$WORK/dk"
echo '{}' > "$WORK/dk/daemon.json"
setsid nsenter --net="/run/netns/$DK_NS" unshare --mount --propagation private sh -euc '
  for d in /run /var/lib /opt /etc/docker; do
    if [ -d "$d" ]; then mount -t tmpfs dmc-composebench "$d"; fi
  done
  exec dockerd --config-file "$1/daemon.json" --data-root "$1/data" --exec-root "$1/exec" \
    --pidfile "$1/dockerd.pid" -H "unix://$1/docker.sock" --storage-driver overlay2 \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge "$2" \
    --cgroup-parent "/$3"' dockerd "$WORK/dk" "$DK_BRIDGE" "$DK_CGROUP" > "$WORK/dk/dockerd.log" 2>&1 &
DOCKERD_PID=$! # setsid, nsenter, unshare and sh all exec: this is dockerd's pid
for i in $(seq 300); do
  $DK version >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$WORK/dk/dockerd.log" >&2; exit 1; }
  [ "$i" -lt 300 ] || { echo "dockerd did not answer within 30 s" >&2; tail -20 "$WORK/dk/dockerd.log" >&2; exit 1; }
  sleep 0.1
done
[ "$(cat "$WORK/dk/dockerd.pid")" = "$DOCKERD_PID" ] || { echo "dockerd pid mismatch" >&2; exit 1; }
DK_MNTNS=$(readlink "/proc/$DOCKERD_PID/ns/mnt")
[ "$DK_MNTNS" != "$(readlink /proc/$$/ns/mnt)" ] || { DK_MNTNS=; echo "dockerd is not in a private mount namespace" >&2; exit 1; }

# ---- the image, the same layers for both tools, and the projects ------------------------------
echo "preparing the image and the projects..." >&2
python3 benches/make_busybox_image.py "$WORK/img" >/dev/null
$DM image import "$WORK/img" --tag "$IMAGE" >/dev/null
skopeo copy -q "oci:$WORK/img" "docker-archive:$WORK/img.tar:$IMAGE"
$DK load -q -i "$WORK/img.tar" >/dev/null
python3 benches/compose_projects.py big "$WORK/big" "$N_SERVICES" "$IMAGE" "$BIG_BASE_PORT"
python3 benches/compose_projects.py stack "$WORK/stack" "$IMAGE" "$STACK_PORT"
python3 benches/compose_projects.py stack "$WORK/plain" "$IMAGE" "$STACK_PORT" --no-healthcheck
mkdir -p "$WORK/res"

# A published port answers with the image's index.html (inside the tool's namespace).
check_port() { # namespace port
  for i in $(seq 100); do
    nsenter --net="/run/netns/$1" curl -sf --max-time 2 "http://127.0.0.1:$2/" 2>/dev/null | grep -q "hello from dockmaster" && return 0
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$2 in $1" >&2
  return 1
}

# ---- 1. 100 services: cold apply, no-op plan, no-op apply, down --------------------------------
# For the breakdown of plan's time: `config` (load and normalize only) and `plan` before
# anything is applied (load, image resolution, input hashing, no container to observe).
R=$WORK/res/big.jsonl
echo "1. $N_SERVICES services: config and plan with nothing applied, $PLAN_RUNS runs each..." >&2
for i in $(seq "$PLAN_RUNS"); do
  step nsenter --net="/run/netns/$DM_NS" $TIME "$R" "big config --format json" 0 -- $DM config -f "$WORK/big/compose.yaml" --format json
  step nsenter --net="/run/netns/$DM_NS" $TIME "$R" "big plan (nothing applied)" 2 -- $DM plan "$WORK/big"
done
echo "apply from cold..." >&2
step nsenter --net="/run/netns/$DM_NS" $TIME "$R" "big apply (cold)" 0 -- $DM apply "$WORK/big" --stabilization 0 --wait-timeout 300
step nsenter --net="/run/netns/$DM_NS" $TIME "$R" "big plan (first)" 0 -- $DM plan "$WORK/big"
running=$(in_dm $DM ps --project big --format json | grep -c '"State":"running"' || true)
echo "  $running containers running" >&2
[ "$running" = "$N_SERVICES" ] || { in_dm $DM ps -a --project big >&2; exit 1; }
check_port "$DM_NS" "$BIG_BASE_PORT"
check_port "$DM_NS" $((BIG_BASE_PORT + (N_SERVICES - 1) / 10 * 10)) # the last group's server
echo "no-op plan: $PLAN_WARMUP warm-ups + $PLAN_RUNS runs..." >&2
for i in $(seq "$PLAN_WARMUP"); do
  step nsenter --net="/run/netns/$DM_NS" $TIME "$WORK/res/warmup.jsonl" "big plan (warm-up)" 0 -- $DM plan "$WORK/big"
done
# The shims answer plan's state requests: their CPU time over the runs (utime+stime from
# /proc, clock ticks) against the same stretch of idle time right after (healthchecks run
# meanwhile: every 30 s per service).
shim_ticks() {
  local t=0 f p
  for f in "$WORK"/dm/containers/*/shim.pid; do
    p=$(cat "$f" 2>/dev/null) || continue
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
t0=$(date +%s%N) k0=$(shim_ticks)
for i in $(seq "$PLAN_RUNS"); do
  step nsenter --net="/run/netns/$DM_NS" $TIME "$R" "big plan (no-op)" 0 -- $DM plan "$WORK/big"
done
t1=$(date +%s%N) k1=$(shim_ticks)
sleep "$(( (t1 - t0) / 1000000 ))e-3"
k2=$(shim_ticks)
echo "{\"plan_runs\": $PLAN_RUNS, \"during\": $((k1 - k0)), \"idle\": $((k2 - k1)), \"clk_tck\": $(getconf CLK_TCK)}" > "$WORK/res/shim-cpu.json"
for i in $(seq "$PLAN_RUNS"); do
  step nsenter --net="/run/netns/$DM_NS" $TIME "$R" "big plan --format json (no-op)" 0 -- $DM plan "$WORK/big" --format json
done
echo "no-op apply: $NOOP_RUNS runs..." >&2
for i in $(seq "$NOOP_RUNS"); do
  step nsenter --net="/run/netns/$DM_NS" $TIME "$R" "big apply (no-op)" 0 -- $DM apply "$WORK/big" --stabilization 0
done
step nsenter --net="/run/netns/$DM_NS" $TIME "$R" "big down -v" 0 -- $DM down big -v

# ---- 2. the 10-service stack from cold: dockmaster apply vs docker-compose up -d ---------------
# Two variants, in the same rounds: "stack" as described at the top, and "plain", the same
# without the healthcheck (the api waits for the database to be started only).
echo "2. 10-service stack from cold: 1 warm-up + $ROUNDS rounds per tool and variant..." >&2
dm_round() { # project out_file
  step nsenter --net="/run/netns/$DM_NS" $TIME "$2" "dockmaster apply" 0 -- $DM apply "$WORK/$1" --stabilization 0
  check_port "$DM_NS" "$STACK_PORT"
  step nsenter --net="/run/netns/$DM_NS" $TIME "$WORK/res/down.jsonl" "dockmaster down -v" 0 -- $DM down "$1" -v
}
dk_round() { # project out_file
  step nsenter --net="/run/netns/$DK_NS" $TIME "$2" "docker-compose up -d" 0 -- $DC "$WORK/$1/compose.yaml" up -d
  check_port "$DK_NS" "$STACK_PORT"
  step nsenter --net="/run/netns/$DK_NS" $TIME "$WORK/res/down.jsonl" "docker-compose down -v" 0 -- $DC "$WORK/$1/compose.yaml" down -v
}
for r in $(seq 0 "$ROUNDS"); do
  for p in stack plain; do
    dm_out=$WORK/res/$p-dm.jsonl dk_out=$WORK/res/$p-dk.jsonl
    [ "$r" -eq 0 ] && dm_out=$WORK/res/warmup.jsonl dk_out=$WORK/res/warmup.jsonl
    # Alternate which tool goes first, so load that comes and goes hits both.
    if [ $((r % 2)) -eq 0 ]; then
      dm_round "$p" "$dm_out"; dk_round "$p" "$dk_out"
    else
      dk_round "$p" "$dk_out"; dm_round "$p" "$dm_out"
    fi
  done
done

# ---- the host namespace must be as it was ------------------------------------------------------
HOST_AFTER=$(host_state)
HOST_NOTE="host namespace unchanged (links, routes, ip_forward, nft ruleset)"
if [ "$HOST_BEFORE" != "$HOST_AFTER" ]; then
  HOST_NOTE="WARNING: the host namespace changed during the run"
  diff <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER") >&2 || true
fi
echo "$HOST_NOTE" >&2

DOCKER_VERSION=$($DK version -f '{{.Server.Version}}')
COMPOSE_VERSION=$(docker-compose version --short)
[ -z "${KEEP_RESULTS:-}" ] || cp -r "$WORK/res" "$KEEP_RESULTS"
BUILD="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || BUILD="$BUILD + uncommitted changes in src"
echo "- release build of $BUILD; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
python3 benches/compose_report.py "$WORK/res" "$N_SERVICES" "$DOCKER_VERSION" "$COMPOSE_VERSION" "$HOST_NOTE"
