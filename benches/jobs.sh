#!/usr/bin/env bash
# Scheduled jobs, side by side in one run: how late after its fire time a job's command runs
# inside its container.
#  - dockmaster: the agent (following a local git repository) with a job `0 1-59/2 * * * *`
#    (second 0 of every odd minute).
#  - peer: cron running a container, what a host without an orchestrator does: busybox crond
#    with `*/2 * * * *` (every even minute) running `podman run --rm --network none`.
# Both containers run `mktemp -p /out` on a bind-mounted directory: the file's modification
# time (nanoseconds, set by the kernel) is when the command ran; minus the minute it was due
# is the latency. The tools alternate minutes so neither competes with the other. MINUTES
# (default 10) sets the length: MINUTES/2 samples each. Also: dockmaster alone with a job every
# 2 s for 40 s (SECONDS_RUNS samples), and the agent's CPU time and memory over the run.
# Prints markdown tables for docs/BENCHMARKS.md. Needs root; installs its peers from Debian's
# packages.
#
# Safety: podman and crond run in a private mount namespace in which tmpfs hides /var/lib and
# podman's /run directories and /sys/fs/cgroup/unified is unmounted (as in benches/runtime.sh);
# their stores are under the work dir. Containers use --network none / network_mode: none; the
# agent listens on 127.0.0.1 only. A trap stops crond and the agent by PID, removes every
# container and the work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-10}
SECONDS_RUNS=${SECONDS_RUNS:-20}
IMAGE=localhost/busybox:bench

export DEBIAN_FRONTEND=noninteractive
need=()
for p in podman crun skopeo python3 busybox-static git; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] || { apt-get update -qq; apt-get install -y -qq --no-install-recommends "${need[@]}"; }

cargo build --release -q
BIN=$PWD/target/release/dockmaster

WORK=$(mktemp -d /var/tmp/dm-jobbench.XXXXXX)
DM="$BIN --root $WORK/dm"
PM="/usr/bin/podman --cgroup-manager cgroupfs --events-backend none --root $WORK/pm/root --runroot $WORK/pm/run --tmpdir $WORK/pm/tmp --storage-driver overlay"
. benches/podman_ns.sh
export DOCKMASTER_CONFIG=$WORK/none.yaml
echo "{}" > "$DOCKMASTER_CONFIG"
CROND=
AGENT=

in_ns() { unshare --mount --propagation private sh -euc "$PODMAN_NS_SETUP; eval \"\$1\"" in_ns "$1"; }
export WORK

cleanup() {
  set +e
  [ -z "$CROND" ] || { kill -TERM -- "-$CROND" 2>/dev/null; wait "$CROND" 2>/dev/null; }
  [ -z "$AGENT" ] || { kill -TERM "$AGENT" 2>/dev/null; wait "$AGENT" 2>/dev/null; }
  $DM down bench >/dev/null 2>&1
  for d in "$WORK"/dm/containers/*/; do
    [ -d "$d" ] && $DM rm -f "$(basename "$d")" >/dev/null 2>&1
  done
  [ ! -d "$WORK/pm/root" ] || in_ns "$PM rm -a -f; $PM rmi -a -f" >/dev/null 2>&1
  podman_cgroups_cleanup
  findmnt -rn -o TARGET | grep -F "$WORK" | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "preparing the busybox image for dockmaster and podman..." >&2
python3 benches/make_busybox_image.py "$WORK/img" >/dev/null
$DM image import "$WORK/img" --tag "$IMAGE" >/dev/null
mkdir -p "$WORK/pm/xdg" "$WORK/stamps-dm" "$WORK/stamps-pm" "$WORK/stamps-dm2" "$WORK/crontabs"
echo '{}' > "$WORK/pm/auth.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$WORK/pm/policy.json"
in_ns "skopeo --policy $WORK/pm/policy.json copy -q oci:$WORK/img 'containers-storage:[overlay@$WORK/pm/root+$WORK/pm/run]$IMAGE'"

# The fleet repository: one project with the job.
job_repo() { # schedule, stamps dir
  rm -rf "$WORK/repo"
  mkdir -p "$WORK/repo/bench"
  cat > "$WORK/repo/bench/compose.yaml" <<YAML
services:
  stamp:
    image: $IMAGE
    command: ["mktemp", "-p", "/out"]
    network_mode: none
    volumes: ["$2:/out"]
    x-dockmaster: {schedule: "$1", history: 100}
YAML
  git -C "$WORK/repo" init -q -b main
  git -C "$WORK/repo" add -A
  git -C "$WORK/repo" -c user.email=b@b -c user.name=bench commit -qm job
}
start_agent() {
  cat > "$WORK/agent.yaml" <<YAML
sources: [{name: bench, url: "$WORK/repo"}]
bind_allow: ["$WORK"]
poll_interval: 5s
listen: {http: "", socket: "$WORK/agent.sock"}
YAML
  $DM agent --config "$WORK/agent.yaml" >"$WORK/agent.log" 2>&1 &
  AGENT=$!
  for _ in $(seq 300); do
    grep -q "job scheduled" "$WORK/agent.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the agent did not schedule the job:" >&2
  cat "$WORK/agent.log" >&2
  exit 1
}
stop_agent() {
  kill -TERM "$AGENT"
  wait "$AGENT" 2>/dev/null || true
  AGENT=
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# ---- 1. dockmaster alone, every 2 s ----------------------------------------------------------
echo "dockmaster alone: a job every 2 s for $SECONDS_RUNS runs..." >&2
job_repo "*/2 * * * * *" "$WORK/stamps-dm2"
start_agent
sleep $((SECONDS_RUNS * 2 + 1))
stop_agent
$DM down bench >/dev/null 2>&1
rm -rf "$WORK/dm/projects/bench"

# ---- 2. side by side, minute schedules ---------------------------------------------------------
echo "side by side for $MINUTES minutes (dockmaster odd minutes, crond + podman even ones)..." >&2
job_repo "0 1-59/2 * * * *" "$WORK/stamps-dm"
start_agent
T0=$(cpu_ticks "$AGENT")
cat > "$WORK/crontabs/root" <<CRON
*/2 * * * * PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=$WORK/pm XDG_CONFIG_HOME=$WORK/pm/xdg $PM run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -v $WORK/stamps-pm:/out $IMAGE mktemp -p /out >>$WORK/cron.log 2>&1
CRON
setsid unshare --mount --propagation private sh -euc "$PODMAN_NS_SETUP; exec busybox crond -f -L $WORK/crond.log -c $WORK/crontabs" &
CROND=$!
sleep $((MINUTES * 60 + 5))
T1=$(cpu_ticks "$AGENT")
RSS=$(awk '/^VmRSS:/{print $2}' "/proc/$AGENT/status")
kill -TERM -- "-$CROND" 2>/dev/null || true
wait "$CROND" 2>/dev/null || true
CROND=
stop_agent
HZ=$(getconf CLK_TCK)
if [ -z "$(ls "$WORK/stamps-pm")" ]; then
  echo "crond + podman left no stamp; its logs:" >&2
  tail -n 20 "$WORK/cron.log" "$WORK/crond.log" >&2 || true
fi

python3 - "$WORK" "$MINUTES" "$T0" "$T1" "$HZ" "$RSS" <<'PY'
import os, statistics, sys
work, minutes, t0, t1, hz, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def lat(d, period_ns):
    out = []
    for f in os.listdir(d):
        ns = os.stat(os.path.join(d, f)).st_mtime_ns
        out.append((ns % period_ns) / 1e6)
    return sorted(out)
rows = [("dockmaster agent, `0 1-59/2 * * * *`", lat(f"{work}/stamps-dm", 60 * 10**9)),
        ("busybox crond + podman run --rm, `*/2 * * * *`", lat(f"{work}/stamps-pm", 60 * 10**9)),
        ("dockmaster agent alone, `*/2 * * * * *`", lat(f"{work}/stamps-dm2", 2 * 10**9))]
print("| fire time to the command running in its container | runs | median ms | min ms | max ms |")
print("|---|---|---|---|---|")
for name, v in rows:
    if v:
        print(f"| {name} | {len(v)} | {statistics.median(v):.1f} | {v[0]:.1f} | {v[-1]:.1f} |")
    else:
        print(f"| {name} | 0 | - | - | - |")
dm, pm = rows[0][1], rows[1][1]
if dm and pm:
    print()
    print(f"- crond + podman / dockmaster (median latency): **{statistics.median(pm) / statistics.median(dm):.1f}×**")
cpu = (t1 - t0) / hz
print(f"- the agent over the {minutes} side-by-side minutes (one job, a git source polled every 5 s): "
      f"{cpu:.2f} s CPU ({100 * cpu / (minutes * 60):.2f} % of a core), VmRSS {rss / 1024:.1f} MiB at the end")
PY
