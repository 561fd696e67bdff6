#!/usr/bin/env bash
# Network benchmark, side by side in one run: dockmaster against Docker's engine (dockerd from
# Debian's docker.io, started by hand with --iptables=false and a bridge this script made, so
# that it publishes ports with its userland proxy, docker-proxy).
#  1. Start: time from `run -d -p 18080:80 IMAGE httpd` to the first good HTTP answer on the
#     published port, polled from the host (127.0.0.1) and from a namespace playing an outside
#     host (the host's address on a veth), with polling starting together with `run` (what a
#     waiting client sees) or once `run -d` has returned. benches/net_start.py spawns and
#     polls (a new connection every 2 ms; accepted ones are kept open until they answer).
#  2. TCP throughput (iperf3, one stream) to a container through a published port, against a
#     direct connection from the host to the container's address on the bridge (no NAT).
# Prints markdown tables for docs/BENCHMARKS.md. Needs root; installs its peers from Debian's
# packages. ROUNDS/WARMUP: launches per tool, target and mode; TP_ROUNDS/TP_SECONDS: iperf3.
#
# Safety: nothing runs in the machine's own network namespace. Each tool gets a namespace
# playing its host (dmb-PID-dm, dmb-PID-dk), each with a veth to its own "outside" namespace;
# dockmaster and dockerd run inside them (nsenter --net), so forwarding sysctls, nft tables,
# bridges and docker-proxy listeners exist only there. dockerd runs with --ip-forward=false:
# it never writes ip_forward (docker-proxy needs no forwarding: it terminates the connection
# in the host namespace and dials the container; only container egress would need it).
# dockerd and its managed containerd also run in a private mount namespace in which tmpfs
# hides /run, /var/lib, /opt and /etc/docker, so whatever they write outside their
# --data-root/--exec-root (containerd's /opt plugin dir, shim sockets in /run/containerd,
# /etc/docker/key.json) vanishes with it. The host namespace's links, routes, ip_forward and
# nft ruleset are compared before and after. A trap removes every container, stops
# dockerd/containerd/shims by PID, removes the cgroups, namespaces and the work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-10}
WARMUP=${WARMUP:-2}
TP_ROUNDS=${TP_ROUNDS:-5}
TP_SECONDS=${TP_SECONDS:-5}
IMAGE=localhost/busybox:netbench
HTTP_PORT=18080
IPERF_PORT=15201
HOST_ADDR=198.51.100.1
OUTSIDE_ADDR=198.51.100.2

export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io iperf3 skopeo python3 busybox-static nftables iproute2 util-linux; do
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

WORK=$(mktemp -d /var/tmp/dm-netbench.XXXXXX)
DM_NS=dmb-$$-dm      # plays dockmaster's host
DK_NS=dmb-$$-dk      # plays Docker's host
DM_OUT=dmb-$$-odm    # outside hosts, one per tool, on a veth to its host
DK_OUT=dmb-$$-odk
DK_BRIDGE=dmbbr$$    # Docker's bridge (--bridge), made by this script in DK_NS
DK_CGROUP=dmb-$$-docker
DM="$BIN --root $WORK/dm"
DK="/usr/bin/docker -H unix://$WORK/dk/docker.sock" # the client of the same package
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
  # dockmaster: containers (their shims release veths, rules and namespaces), then netd.
  if [ -e "/run/netns/$DM_NS" ]; then
    for d in "$WORK"/dm/containers/*/; do
      [ -d "$d" ] && in_dm $DM rm -f "$(basename "$d")" >/dev/null 2>&1
    done
  fi
  local p
  p=$(cat "$WORK/dm/networks/.netd.pid" 2>/dev/null)
  if [ -n "$p" ] && tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" | grep -q -- "--root $WORK/dm netd"; then
    kill -TERM "$p"
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  fi
  # Docker: containers, then dockerd (which stops its managed containerd), then anything left
  # in its private mount namespace (containerd, shims, docker-proxy), then the containers'
  # own processes from the cgroup parent.
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
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

# ---- namespaces: a host and an outside host per tool --------------------------------------
for pair in "$DM_NS:$DM_OUT" "$DK_NS:$DK_OUT"; do
  h=${pair%:*} o=${pair#*:}
  ip netns add "$h"; MADE_NS+=("$h")
  ip netns add "$o"; MADE_NS+=("$o")
  ip -n "$h" link set lo up
  ip -n "$o" link set lo up
  ip -n "$h" link add uplink0 type veth peer name wan0 netns "$o"
  ip -n "$h" addr add "$HOST_ADDR/24" dev uplink0
  ip -n "$o" addr add "$OUTSIDE_ADDR/24" dev wan0
  ip -n "$h" link set uplink0 up
  ip -n "$o" link set wan0 up
done
ip -n "$DK_NS" link add "$DK_BRIDGE" type bridge
ip -n "$DK_NS" addr add 172.18.0.1/16 dev "$DK_BRIDGE"
ip -n "$DK_NS" link set "$DK_BRIDGE" up

# ---- dockerd ------------------------------------------------------------------------------
echo "starting dockerd in $DK_NS..." >&2
mkdir -p "$WORK/dk"
echo '{}' > "$WORK/dk/daemon.json"
setsid nsenter --net="/run/netns/$DK_NS" unshare --mount --propagation private sh -euc '
  for d in /run /var/lib /opt /etc/docker; do
    if [ -d "$d" ]; then mount -t tmpfs dmb-netbench "$d"; fi
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

# ---- the image: busybox plus iperf3 and its libraries, the same layers for both tools -------
echo "preparing the image..." >&2
python3 benches/make_busybox_image.py "$WORK/img" >/dev/null
python3 benches/net_image.py "$WORK/img" /usr/bin/iperf3
$DM image import "$WORK/img" --tag "$IMAGE" >/dev/null
skopeo copy -q "oci:$WORK/img" "docker-archive:$WORK/img.tar:$IMAGE"
$DK load -q -i "$WORK/img.tar" >/dev/null

# ---- 1. start to first answer -------------------------------------------------------------
HTTPD=(httpd -f -p 80 -h /var/www)
EXPECT="hello from dockmaster" # the image's /var/www/index.html
start_once() { # tool target mode out_file
  local tool=$1 target=$2 mode=$3 out=$4 poll=(127.0.0.1 "$HTTP_PORT")
  local ns=$DM_NS outside=$DM_OUT cli=$DM
  if [ "$tool" = docker ]; then ns=$DK_NS outside=$DK_OUT cli=$DK; fi
  if [ "$target" = outside ]; then poll=(--netns "/run/netns/$outside" "$HOST_ADDR" "$HTTP_PORT"); fi
  if [ "$mode" = after ]; then poll=(--after-return "${poll[@]}"); fi
  step nsenter --net="/run/netns/$ns" python3 benches/net_start.py "${poll[@]}" "$EXPECT" -- \
    $cli run -d --name web -p "$HTTP_PORT:80" "$IMAGE" "${HTTPD[@]}" >> "$out"
  step nsenter --net="/run/netns/$ns" $cli rm -f web >/dev/null
}
mkdir -p "$WORK/start" "$WORK/tp"
echo "start to first answer: $WARMUP warm-up + $ROUNDS launches per tool, target and mode..." >&2
for r in $(seq $((WARMUP + ROUNDS))); do
  # Alternate which tool goes first, so load that comes and goes hits both.
  order=(dockmaster docker)
  [ $((r % 2)) -eq 0 ] && order=(docker dockmaster)
  for variant in loopback:during outside:during loopback:after outside:after; do
    for tool in "${order[@]}"; do
      out=$WORK/start/$tool-${variant/:/-}.jsonl
      [ "$r" -le "$WARMUP" ] && out=$WORK/start/warmup.jsonl
      start_once "$tool" "${variant%:*}" "${variant#*:}" "$out"
    done
  done
done

# ---- 2. throughput --------------------------------------------------------------------------
echo "throughput: $TP_ROUNDS rounds of ${TP_SECONDS}s iperf3 runs per path..." >&2
in_dm $DM run -d --name iperf -p "$IPERF_PORT:5201" "$IMAGE" iperf3 -s -p 5201 >/dev/null
in_dk $DK run -d --name iperf -p "$IPERF_PORT:5201" "$IMAGE" iperf3 -s -p 5201 >/dev/null
DM_IP=$(in_dm $DM inspect iperf | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["NetworkSettings"]["Networks"]["bridge"]["IPAddress"])')
DK_IP=$($DK inspect -f '{{.NetworkSettings.IPAddress}}' iperf)
# docker-proxy of the IPv4 published port: its CPU time per run is reported too.
PROXY_PID=
for p in /proc/[0-9]*; do
  [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$DK_MNTNS" ] || continue
  if tr '\0' ' ' 2>/dev/null < "$p/cmdline" | grep -q -- "docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port $IPERF_PORT "; then
    PROXY_PID=${p#/proc/}
  fi
done
[ -n "$PROXY_PID" ] || { echo "no docker-proxy for port $IPERF_PORT" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# name:namespace the client runs in:address:port
PATHS=(
  "dockmaster-loopback:$DM_NS:127.0.0.1:$IPERF_PORT"
  "dockmaster-outside:$DM_OUT:$HOST_ADDR:$IPERF_PORT"
  "dockmaster-direct:$DM_NS:$DM_IP:5201"
  "docker-loopback:$DK_NS:127.0.0.1:$IPERF_PORT"
  "docker-outside:$DK_OUT:$HOST_ADDR:$IPERF_PORT"
  "docker-direct:$DK_NS:$DK_IP:5201"
)
for spec in "${PATHS[@]}"; do # warm-up, and waits until both servers listen
  IFS=: read -r name ns addr port <<< "$spec"
  for i in $(seq 50); do
    nsenter --net="/run/netns/$ns" iperf3 -c "$addr" -p "$port" -t 1 >/dev/null 2>&1 && break
    [ "$i" -lt 50 ] || { echo "iperf3 to $name ($addr:$port) never answered" >&2; exit 1; }
    sleep 0.2
  done
done
for r in $(seq "$TP_ROUNDS"); do
  # Rotate the order each round.
  n=${#PATHS[@]}
  for k in $(seq 0 $((n - 1))); do
    spec=${PATHS[$(((k + r) % n))]}
    IFS=: read -r name ns addr port <<< "$spec"
    before=$(cpu_ticks "$PROXY_PID") t0=$(date +%s%N)
    step nsenter --net="/run/netns/$ns" iperf3 -c "$addr" -p "$port" -t "$TP_SECONDS" -O 1 -J \
      > "$WORK/tp/$name-$r.json"
    echo "$(( $(cpu_ticks "$PROXY_PID") - before )) $(( $(date +%s%N) - t0 ))" > "$WORK/tp/$name-$r.proxyticks"
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["end"]["sum_received"]; print("  round %s %s: %.0f MB/s" % (sys.argv[2], sys.argv[3], s["bytes"] / s["seconds"] / 1e6))' \
      "$WORK/tp/$name-$r.json" "$r" "$name" >&2
  done
done

# ---- the host namespace must be as it was ---------------------------------------------------
HOST_AFTER=$(host_state)
HOST_NOTE="host namespace unchanged (links, routes, ip_forward, nft ruleset)"
if [ "$HOST_BEFORE" != "$HOST_AFTER" ]; then
  HOST_NOTE="WARNING: the host namespace changed during the run"
  diff <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER") >&2 || true
fi
echo "$HOST_NOTE" >&2

DOCKER_VERSION=$($DK version -f '{{.Server.Version}}')
python3 - "$WORK" "$TP_ROUNDS" "$(getconf CLK_TCK)" "$DOCKER_VERSION" "$HOST_NOTE" <<'PY'
import glob, json, os, statistics, sys
work, tp_rounds, clk, docker_version, host_note = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

def load(tool, variant):
    return [json.loads(l) for l in open(f"{work}/start/{tool}-{variant}.jsonl")]

print("| tool | polled from | polling starts | first answer, median ms | p10 ms | p90 ms | min ms "
      "| `run -d` returned, median ms | runs | tool / dockmaster |")
print("|---|---|---|---|---|---|---|---|---|---|")
med = {}
for variant in ["loopback-during", "outside-during", "loopback-after", "outside-after"]:
    target, mode = variant.split("-")
    for tool in ["dockmaster", "docker"]:
        rows = load(tool, variant)
        ready = [r["ready"] * 1e3 for r in rows]
        ret = [r["returned"] * 1e3 for r in rows]
        med[tool, variant] = statistics.median(ready)
        q = statistics.quantiles(ready, n=10)
        name = "dockmaster run -d -p" if tool == "dockmaster" else f"docker run -d -p (dockerd {docker_version})"
        where = "host, 127.0.0.1" if target == "loopback" else "outside host, host address"
        when = "with `run`" if mode == "during" else "when `run -d` returned"
        print(f"| {name} | {where} | {when} | {med[tool, variant]:.1f} | {q[0]:.1f} | {q[-1]:.1f} | {min(ready):.1f} "
              f"| {statistics.median(ret):.1f} | {len(rows)} | {med[tool, variant] / med['dockmaster', variant]:.2f} |")
print()
for variant in ["loopback-during", "outside-during", "loopback-after", "outside-after"]:
    print(f"- {variant}: docker / dockmaster **{med['docker', variant] / med['dockmaster', variant]:.2f}×**")
print()

def tp(name):
    out = []
    for r in range(1, tp_rounds + 1):
        j = json.load(open(f"{work}/tp/{name}-{r}.json"))
        if "error" in j:
            sys.exit(f"iperf3 {name} round {r}: {j['error']}")
        s = j["end"]["sum_received"]
        ticks, wall_ns = map(int, open(f"{work}/tp/{name}-{r}.proxyticks").read().split())
        # docker-proxy's CPU time over the whole client run (omitted first second included).
        out.append((s["bytes"] / s["seconds"] / 1e6, j["end"]["sum_sent"].get("retransmits", 0),
                    100 * ticks / clk / (wall_ns / 1e9)))
    return out

print("| path | dockmaster MB/s | docker MB/s | dockmaster / docker | docker-proxy CPU, % of one core |")
print("|---|---|---|---|---|")
mb = {}
for path, label in [("loopback", "published port, from the host (127.0.0.1)"),
                    ("outside", "published port, from the outside host (host address)"),
                    ("direct", "container address on the bridge, from the host (no NAT)")]:
    d, k = tp(f"dockmaster-{path}"), tp(f"docker-{path}")
    mb["dockmaster", path] = statistics.median(x[0] for x in d)
    mb["docker", path] = statistics.median(x[0] for x in k)
    rng = lambda v: f"{statistics.median(x[0] for x in v):.0f} ({min(x[0] for x in v):.0f}–{max(x[0] for x in v):.0f})"
    cpu = f"{statistics.median(x[2] for x in k):.0f}" if path != "direct" else "–"
    print(f"| {label} | {rng(d)} | {rng(k)} | {mb['dockmaster', path] / mb['docker', path]:.2f} | {cpu} |")
print()
for path in ["loopback", "outside"]:
    print(f"- {path}: dockmaster / docker-proxy **{mb['dockmaster', path] / mb['docker', path]:.2f}×**, "
          f"dockmaster / direct **{mb['dockmaster', path] / mb['dockmaster', 'direct']:.2f}×**, "
          f"docker-proxy / direct {mb['docker', path] / mb['docker', 'direct']:.2f}×")
print(f"- {host_note}")
PY
