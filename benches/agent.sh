#!/usr/bin/env bash
# GitOps agent benchmark, side by side in one run: `dockmaster agent` against the loop most
# people build with Docker, `git pull` + `docker-compose up -d` (Debian's docker-compose v1,
# against dockerd started by hand as in benches/compose.sh).
#  1. Commit-to-running: from `git push` returning (the commit is on the git server) to the
#     new container of the changed service running, as each tool reports it (`dockmaster ps`;
#     Docker's API, what `docker ps` asks), images stored locally. A 3-service project
#     (benches/agent_bench.py project), one service changed per commit (an environment
#     variable). (a) webhook: the agent polls hourly and gets POST /hooks/git with a valid
#     GitHub signature right after the push; Docker's side runs `git pull && docker-compose
#     up -d` right after the push (what a webhook receiver would run). (b) 1 s polling: the
#     agent with poll_interval 1s (no jitter); Docker's side a loop `git fetch`, and when
#     origin moved `git merge --ff-only && docker-compose up -d`, then `sleep 1`. The push
#     falls at a random point of the poll cycle. 1 warm-up + ROUNDS rounds per tool and mode,
#     the tools alternating. Also recorded: the container's own StartedAt, and "done" (the
#     agent's status says converged at the commit / docker-compose exited).
#  2. Idle: a fresh agent managing 20 containers (20 services, poll_interval 10s, default
#     drift interval 30 s) against dockerd + containerd + shims with the same 20 containers
#     from docker-compose and the git loop polling every 10 s, both measured over the same
#     IDLE_SECONDS window after SETTLE_SECONDS: CPU from /proc/PID/stat deltas, RSS and PSS
#     from /proc/PID/smaps_rollup (sampled every 5 s), per role. Plus the agent's memory by
#     kind of mapping and file (smaps; Referenced = touched during the window). Then the same
#     after restarting the agent on the converged host.
#  3. No-op sync: `dockmaster sync` (fetch check, 20-container drift check, image check) with
#     nothing to change, NOOP_RUNS times after 2 warm-ups (agent reloaded with hourly timers so
#     that only the triggered passes run): the agent's CPU time and its shims' from /proc
#     before/after, the reconcile thread's CPU (schedstat), the pass's wall time (until the
#     reconcile thread stops running) and dockmaster_sync_duration_seconds from /metrics.
#     Peer: `git pull && docker-compose up -d` with nothing to change: wait4 CPU of that
#     command tree + dockerd/containerd/shims CPU delta. Then `strace -c -f` of STRACE_RUNS
#     more dockmaster syncs.
# Prints markdown for docs/BENCHMARKS.md (benches/agent_report.py). Needs root; installs its
# peers from Debian's packages. KEEP_RESULTS=DIR keeps the raw JSON lines and logs.
#
# Safety: nothing runs in the machine's own network namespace. The agent, its git daemon and
# its containers run in a namespace made here (dma-PID-dm); dockerd (in a private mount
# namespace where tmpfs hides /run, /var/lib, /opt and /etc/docker, with its own bridge,
# data-root, exec-root, socket and cgroup parent, --iptables=false --ip-forward=false), its git
# daemon and the git loop in another (dma-PID-dk). Git traffic and the webhook go to 127.0.0.1
# inside those namespaces only; the services have no network. The host namespace's links,
# routes, ip_forward and nft ruleset are compared before and after. A trap (also on failure
# and CTRL-C) stops the loop and the agent, brings the projects down, removes every container,
# stops netd, dockerd, containerd, shims and git daemons by PID, removes the cgroups, unmounts
# what is left under the work dir, deletes the namespaces and the work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-20}
IDLE_SECONDS=${IDLE_SECONDS:-60}
SETTLE_SECONDS=${SETTLE_SECONDS:-15}
NOOP_RUNS=${NOOP_RUNS:-20}
STRACE_RUNS=${STRACE_RUNS:-5}
IDLE_SERVICES=20
IMAGE=localhost/busybox:bench
HTTP=127.0.0.1:9469 # the agent's /metrics and /hooks/git, inside its namespace
GIT_PORT=9418

export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker.io docker-compose skopeo python3 busybox-static iproute2 util-linux nftables curl git strace time; do
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

WORK=$(mktemp -d /var/tmp/dm-agentbench.XXXXXX)
DM_NS=dma-$$-dm     # plays dockmaster's host
DK_NS=dma-$$-dk     # plays Docker's host
DK_BRIDGE=dmabr$$   # Docker's default bridge (--bridge), made by this script in DK_NS
DK_CGROUP=dma-$$-docker
DM="$BIN --root $WORK/dm"
DK_SOCK=$WORK/dk/docker.sock
DK="/usr/bin/docker -H unix://$DK_SOCK" # the client of the same package
GIT=/usr/bin/git # Debian's (the machine also has one in /usr/local/bin)
export DOCKER_HOST=unix://$DK_SOCK COMPOSE_INTERACTIVE_NO_CLI=1
# dockmaster's CLI must not pick up /etc/dockmaster/config.yaml if the machine has one.
export DOCKMASTER_CONFIG=$WORK/dm-config.yaml
# git: no user or system configuration, a fixed identity.
export HOME=$WORK/home GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0 \
  GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.test GIT_COMMITTER_NAME=bench \
  GIT_COMMITTER_EMAIL=bench@example.test
BENCH="python3 $PWD/benches/agent_bench.py"
in_dm() { nsenter --net="/run/netns/$DM_NS" "$@"; }
in_dk() { nsenter --net="/run/netns/$DK_NS" "$@"; }
MADE_NS=()
DOCKERD_PID=
DK_MNTNS=
AGENT_PID=
LOOP_PID=
GITD_PIDS=()

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

stop_pid() { # pid [seconds]: TERM, wait, KILL
  local p=$1 n=$((${2:-10} * 10))
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq "$n"); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  return 0
}

stop_loop() {
  if [ -n "$LOOP_PID" ]; then
    kill -TERM -- "-$LOOP_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$LOOP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$LOOP_PID" 2>/dev/null || true
    LOOP_PID=
  fi
  return 0
}

stop_agent() {
  if [ -n "$AGENT_PID" ]; then
    stop_pid "$AGENT_PID" 15 # SIGTERM leaves the containers running
    AGENT_PID=
  fi
}

cleanup() {
  set +e
  if [ -n "$CHILD" ]; then
    kill -TERM -- "-$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
  fi
  stop_loop
  stop_agent
  # dockmaster: projects, then any container left (their shims remove cgroups and mounts),
  # then netd.
  local d p
  for d in "$WORK"/dm/projects/*/; do
    [ -d "$d" ] && timeout 120 $DM down "$(basename "$d")" -v >/dev/null 2>&1
  done
  for d in "$WORK"/dm/containers/*/; do
    [ -d "$d" ] && timeout 30 $DM rm -f "$(basename "$d")" >/dev/null 2>&1
  done
  for d in "$WORK"/dm/containers/*/; do # still there: shim lost; kill what runs in its cgroup
    [ -d "$d" ] || continue
    local id h
    id=$(basename "$d")
    p=$(cat "$d/shim.pid" 2>/dev/null)
    [ -n "$p" ] && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- "--root $WORK/dm shim" && kill -KILL "$p"
    for h in /sys/fs/cgroup/*/dockmaster/"$id"; do
      [ -d "$h" ] || continue
      xargs -r kill -KILL < "$h/cgroup.procs" 2>/dev/null
      sleep 0.2
      rmdir "$h" 2>/dev/null
    done
  done
  p=$(cat "$WORK/dm/networks/.netd.pid" 2>/dev/null)
  if [ -n "$p" ] && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- "--root $WORK/dm netd"; then
    stop_pid "$p" 5
  fi
  # Docker: the projects, containers, then dockerd (which stops its managed containerd), then
  # anything left in its private mount namespace, then the containers' own processes from the
  # cgroup parent.
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    for d in "$WORK"/deploy/*/; do
      [ -f "$d/compose.yaml" ] && timeout 120 docker-compose -f "$d/compose.yaml" down -v -t 1 >/dev/null 2>&1
    done
    local ids
    ids=$(timeout 20 $DK ps -aq 2>/dev/null)
    [ -z "$ids" ] || timeout 60 $DK rm -f $ids >/dev/null 2>&1
    stop_pid "$DOCKERD_PID" 20
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
  for p in "${GITD_PIDS[@]}"; do stop_pid "$p" 5; done
  # Nothing should be mounted below WORK any more; never let rm -rf cross a mount.
  findmnt -rn -o TARGET | grep -F "$WORK" | sort -r | while read -r m; do umount -l "$m"; done
  for n in "${MADE_NS[@]}"; do ip netns del "$n"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "agent.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

HOST_BEFORE=$(host_state)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$HOME" "$WORK/res" "$WORK/git" "$WORK/push" "$WORK/deploy"
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
    if [ -d "$d" ]; then mount -t tmpfs dma-agentbench "$d"; fi
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

# ---- the image, the same layers for both tools --------------------------------------------------
echo "preparing the image, the git repositories and their servers..." >&2
python3 benches/make_busybox_image.py "$WORK/img" >/dev/null
$DM image import "$WORK/img" --tag "$IMAGE" >/dev/null
skopeo copy -q "oci:$WORK/img" "docker-archive:$WORK/img.tar:$IMAGE"
$DK load -q -i "$WORK/img.tar" >/dev/null

# ---- git: one bare repository per tool and project, a git daemon in each namespace -------------
for ns in "$DM_NS" "$DK_NS"; do
  setsid nsenter --net="/run/netns/$ns" "$($GIT --exec-path)/git-daemon" --listen=127.0.0.1 \
    --port=$GIT_PORT --base-path="$WORK/git" --export-all --enable=receive-pack --reuseaddr \
    > "$WORK/gitd-$ns.log" 2>&1 < /dev/null &
  GITD_PIDS+=($!)
done
# repo(tool, project, services): the bare repository, a clone to push from with the first
# commit pushed.
repo() {
  local bare=$WORK/git/$1-$2.git clone=$WORK/push/$1-$2
  $GIT init -q --bare -b main "$bare"
  $GIT clone -q "$bare" "$clone" 2>/dev/null
  $BENCH project "$clone" "$3" initial "$IMAGE"
  $GIT -C "$clone" add compose.yaml
  $GIT -C "$clone" commit -q -m initial
  $GIT -C "$clone" push -q origin HEAD:main
  # From now on pushes go through the tool's git daemon, like a push to a real server.
  $GIT -C "$clone" remote set-url origin "git://127.0.0.1:$GIT_PORT/$1-$2.git"
}
repo dm bench 3
repo dk bench 3
repo dm idle $IDLE_SERVICES
repo dk idle $IDLE_SERVICES
for i in $(seq 50); do # both daemons answer
  in_dm $GIT ls-remote -q "git://127.0.0.1:$GIT_PORT/dm-bench.git" >/dev/null 2>&1 \
    && in_dk $GIT ls-remote -q "git://127.0.0.1:$GIT_PORT/dk-bench.git" >/dev/null 2>&1 && break
  [ "$i" -lt 50 ] || { echo "git daemon does not answer" >&2; cat "$WORK"/gitd-*.log >&2; exit 1; }
  sleep 0.1
done
# Docker's deployment clones: the project is named after the directory, like the agent names
# a repository-root project after its source.
for p in bench idle; do
  in_dk $GIT clone -q "git://127.0.0.1:$GIT_PORT/dk-$p.git" "$WORK/deploy/$p"
done

# ---- the agent ----------------------------------------------------------------------------------
echo hook-secret-for-the-bench > "$WORK/hook-secret"
agent_config() { # source poll_interval [extra YAML lines]
  cat > "$WORK/agent.yaml" <<EOF
root: $WORK/dm
sources:
  - name: $1
    url: git://127.0.0.1:$GIT_PORT/dm-$1.git
poll_interval: $2
apply: {stabilization: 0s}
listen: {http: "$HTTP", socket: "$WORK/dm/agent.sock"}
webhook: {secret_file: "$WORK/hook-secret"}
${3:-}
EOF
}
start_agent() {
  setsid nsenter --net="/run/netns/$DM_NS" $DM agent --config "$WORK/agent.yaml" \
    >> "$WORK/agent.log" 2>&1 < /dev/null &
  AGENT_PID=$! # setsid and nsenter exec: the agent's pid
  for i in $(seq 300); do
    in_dm curl -sf --max-time 1 "http://$HTTP/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$AGENT_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the agent did not start" >&2; tail -30 "$WORK/agent.log" >&2; exit 1
}
# converged(project, services): the agent reports the project converged at the source's head,
# every service running.
converged() {
  local rev
  rev=$($GIT -C "$WORK/push/dm-$1" rev-parse HEAD)
  for i in $(seq 1200); do
    if $DM status --socket "$WORK/dm/agent.sock" --format json 2>/dev/null | python3 -c '
import json, sys
s, name, rev, n = json.load(sys.stdin), sys.argv[1], sys.argv[2], int(sys.argv[3])
p = [p for p in s["projects"] if p["name"] == name]
ok = p and p[0]["state"] == "converged" and p[0]["revision"] == rev and len(p[0]["services"]) == n \
     and all(x["running"] == x["desired"] == 1 for x in p[0]["services"])
sys.exit(0 if ok else 1)' "$1" "$rev" "$2"; then return 0; fi
    kill -0 "$AGENT_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the agent did not converge $1" >&2
  $DM status --socket "$WORK/dm/agent.sock" >&2; tail -30 "$WORK/agent.log" >&2; exit 1
}
start_loop() { # project interval: Docker's GitOps loop
  setsid nsenter --net="/run/netns/$DK_NS" bash -c '
    cd "$1"
    while :; do
      if "$3" fetch -q origin && [ "$("$3" rev-parse HEAD)" != "$("$3" rev-parse origin/main)" ]; then
        "$3" merge -q --ff-only origin/main && docker-compose up -d 2>> "$4.log" \
          && echo "$(date +%s.%N) $("$3" rev-parse HEAD)" >> "$4"
      fi
      sleep "$2"
    done' loop "$WORK/deploy/$1" "$2" "$GIT" "$WORK/loop-$1.marker" > "$WORK/loop.log" 2>&1 < /dev/null &
  LOOP_PID=$!
}
write_conf() { # project services
  cat > "$WORK/conf.json" <<EOF
{"dm_bin": "$BIN", "dm_root": "$WORK/dm", "dm_socket": "$WORK/dm/agent.sock", "dm_http": "$HTTP",
 "agent_pid": ${AGENT_PID:-0}, "dockerd_pid": $DOCKERD_PID, "dk_cgroup": "$DK_CGROUP",
 "loop_pid": ${LOOP_PID:-0}, "ns": {"dm": "$DM_NS", "dk": "$DK_NS"},
 "docker_sock": "$DK_SOCK", "git": "$GIT", "hook_secret": "$(cat "$WORK/hook-secret")",
 "push": {"dm": "$WORK/push/dm-$1", "dk": "$WORK/push/dk-$1"}, "deploy_dk": "$WORK/deploy/$1",
 "deploy_idle_dk": "$WORK/deploy/idle", "project": "$1", "services": $2, "image": "$IMAGE",
 "poll_interval": 1, "dk_marker": "$WORK/loop-$1.marker", "noop_source": "idle",
 "env": {"DOCKER_HOST": "$DOCKER_HOST", "DOCKMASTER_CONFIG": "$DOCKMASTER_CONFIG"}}
EOF
}

# ---- 1. commit-to-running -----------------------------------------------------------------------
echo "1. commit-to-running, 3 services: $ROUNDS rounds per tool (+1 warm-up), webhook then 1 s poll" >&2
agent_config bench 1h 'poll_jitter: 0s'
start_agent
converged bench 3
docker-compose -f "$WORK/deploy/bench/compose.yaml" up -d 2>> "$WORK/compose.log"
write_conf bench 3
step $BENCH rounds "$WORK/conf.json" "$WORK/res/rounds.jsonl" webhook "$ROUNDS"
# 1 s polling: the agent reloads its configuration (SIGHUP), Docker's side starts its loop.
agent_config bench 1s 'poll_jitter: 0s'
kill -HUP "$AGENT_PID"
start_loop bench 1
sleep 3
write_conf bench 3
step $BENCH rounds "$WORK/conf.json" "$WORK/res/rounds.jsonl" poll "$ROUNDS"
stop_loop
stop_agent
$DM down bench -v >/dev/null
docker-compose -f "$WORK/deploy/bench/compose.yaml" down -v -t 1 2>> "$WORK/compose.log"
# The next agent must not know the first project (its drift check would bring it back).
rm -rf "$WORK/dm/agent"

# ---- 2. idle with 20 containers -------------------------------------------------------------------
echo "2. idle with $IDLE_SERVICES containers: $SETTLE_SECONDS s to settle, then $IDLE_SECONDS s measured" >&2
agent_config idle 10s
start_agent
converged idle $IDLE_SERVICES
docker-compose -f "$WORK/deploy/idle/compose.yaml" up -d 2>> "$WORK/compose.log"
start_loop idle 10
[ "$($DK ps -q | wc -l)" = "$IDLE_SERVICES" ] || { echo "docker runs $($DK ps -q | wc -l) containers" >&2; exit 1; }
[ "$($DM ps -q | wc -l)" = "$IDLE_SERVICES" ] || { echo "dockmaster runs $($DM ps -q | wc -l) containers" >&2; exit 1; }
write_conf idle $IDLE_SERVICES
sleep "$SETTLE_SECONDS"
# Referenced in smaps: what the agent touches while idle (clear_refs only resets its pages'
# accessed bits).
echo 1 > "/proc/$AGENT_PID/clear_refs"
step $BENCH idle "$WORK/conf.json" "$WORK/res/idle.jsonl" "$IDLE_SECONDS" "after converging 20 services"
$BENCH smaps "$AGENT_PID" > "$WORK/res/agent-smaps.json"
cp "/proc/$AGENT_PID/status" "$WORK/res/agent-status.txt"
# One shim for comparison: the same executable, but it never uses git, TLS or HTTP.
SHIM_PIDS=("$WORK"/dm/containers/*/shim.pid)
$BENCH smaps "$(cat "${SHIM_PIDS[0]}")" > "$WORK/res/shim-smaps.json"
# The same after a restart of the agent on the converged host (what a reboot of the agent
# alone, or an upgrade, leaves): it changes nothing, so it runs less of its code.
stop_agent
start_agent
converged idle $IDLE_SERVICES
write_conf idle $IDLE_SERVICES
sleep "$SETTLE_SECONDS"
echo 1 > "/proc/$AGENT_PID/clear_refs"
step $BENCH idle "$WORK/conf.json" "$WORK/res/idle.jsonl" "$IDLE_SECONDS" "after a restart on the converged host"
$BENCH smaps "$AGENT_PID" > "$WORK/res/agent-smaps-restart.json"
$BENCH floor "$BIN" > "$WORK/res/floor.json"

# ---- 3. no-op sync ------------------------------------------------------------------------------
echo "3. no-op sync: 2 warm-ups + $NOOP_RUNS per tool" >&2
stop_loop
agent_config idle 1h 'drift_interval: 1h
image_check_interval: 1h'
kill -HUP "$AGENT_PID"
sleep 3 # the reload's own pass
write_conf idle $IDLE_SERVICES
step $BENCH noop "$WORK/conf.json" "$WORK/res/noop.jsonl" "$NOOP_RUNS"
# Where a no-op pass spends its system calls (strace slows it: counts, not times, matter).
strace -c -f -q -o "$WORK/res/strace.txt" -p "$AGENT_PID" &
STRACE_PID=$!
sleep 1
for i in $(seq "$STRACE_RUNS"); do
  $DM sync --socket "$WORK/dm/agent.sock" >/dev/null
  sleep 1.5
done
kill -INT "$STRACE_PID"; wait "$STRACE_PID" || true
stop_agent

# ---- the host namespace must be as it was ------------------------------------------------------
HOST_AFTER=$(host_state)
HOST_NOTE="host namespace unchanged (links, routes, ip_forward, nft ruleset)"
if [ "$HOST_BEFORE" != "$HOST_AFTER" ]; then
  HOST_NOTE="WARNING: the host namespace changed during the run"
  diff <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER") >&2 || true
fi
echo "$HOST_NOTE" >&2

DOCKER_VERSION=$($DK version -f '{{.Server.Version}}')
CONTAINERD_VERSION=$(containerd --version | awk '{print $3}')
COMPOSE_VERSION=$(docker-compose version --short)
GIT_VERSION=$($GIT --version | awk '{print $3}')
cp "$WORK/agent.log" "$WORK/res/"
if [ -n "${KEEP_RESULTS:-}" ]; then
  mkdir -p "$KEEP_RESULTS"
  cp -r "$WORK/res/." "$KEEP_RESULTS"/
fi
BUILD="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || BUILD="$BUILD + uncommitted changes in src"
echo "- release build of $BUILD; $(nproc) cores, load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "- Docker $DOCKER_VERSION, containerd $CONTAINERD_VERSION, docker-compose $COMPOSE_VERSION, git $GIT_VERSION; $HOST_NOTE"
echo
python3 benches/agent_report.py "$WORK/res" "$STRACE_RUNS"
