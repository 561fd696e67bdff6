#!/usr/bin/env bash
# Runtime benchmark, side by side in one run: `dockmaster run --rm --network none IMAGE
# /bin/true` against `podman run --rm --network none IMAGE /bin/true` and `crun run` of a
# bundle with the same spec, plus the memory of idle dockmaster shims (smaps_rollup). Also one
# run of a scheduled job (`dockmaster job run jobs/tick` without an agent: the job's
# generation loaded, its container created, started, waited for, its log kept in the history,
# the container removed), which is what a Quadlet timer does with `podman run --rm`.
# Prints markdown tables for docs/BENCHMARKS.md. Needs root; installs its peers from Debian's
# packages. ROUNDS, RUNS (per round) and WARMUP set hyperfine's counts.
#
# The three tools are timed by the same hyperfine invocations inside a private mount namespace
# in which /sys/fs/cgroup/unified is unmounted (crun, also under podman, refuses this host's
# hybrid cgroup layout otherwise) and tmpfs hides /var/lib and podman's and crun's default
# /run directories (podman as root writes caches there). podman runs with private stores
# under the work dir: its default overlay driver, and vfs for reference. dockmaster is also
# timed in the host's own mount namespace with the hybrid layout visible, as a control.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
IMAGE=localhost/busybox:bench

export DEBIAN_FRONTEND=noninteractive
need=()
for p in podman crun skopeo hyperfine python3 busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] || { apt-get update -qq; apt-get install -y -qq --no-install-recommends "${need[@]}"; }

cargo build --release -q
BIN=$PWD/target/release/dockmaster

WORK=$(mktemp -d /var/tmp/dm-rtbench.XXXXXX)
DM="$BIN --root $WORK/dm"
PODMAN="podman --cgroup-manager cgroupfs --events-backend none"
# podman's default overlay driver, and vfs (what the project's tests use) for reference.
PM="$PODMAN --root $WORK/pm/root --runroot $WORK/pm/run --tmpdir $WORK/pm/tmp --storage-driver overlay"
PMV="$PODMAN --root $WORK/pmv/root --runroot $WORK/pmv/run --tmpdir $WORK/pmv/tmp --storage-driver vfs"
PM_RUN="run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 $IMAGE /bin/true"
CRUN_ID=dm-bench-$$
. benches/podman_ns.sh

# Long steps run as their own process group (setsid) in the background, so that a TERM or
# INT to this script stops them at once instead of after they finish (bash defers traps while
# a foreground child runs); cleanup kills the group.
CHILD=
step() {
  setsid "$@" &
  CHILD=$!
  wait "$CHILD"
  CHILD=
}

# Runs a shell script in the benchmark's private mount namespace (see the top).
in_ns() {
  step unshare --mount --propagation private sh -euc "$PODMAN_NS_SETUP; eval \"\$1\"" in_ns "$1"
}
export WORK

cleanup() {
  set +e
  if [ -n "$CHILD" ]; then
    kill -TERM -- "-$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
  fi
  for d in "$WORK"/dm/containers/*/; do
    [ -d "$d" ] && $DM rm -f "$(basename "$d")" >/dev/null 2>&1
  done
  crun --root "$WORK/crun-state" delete -f "$CRUN_ID" >/dev/null 2>&1
  if [ -d "$WORK/pm/root" ]; then
    in_ns "$PM rm -a -f; $PM rmi -a -f" >/dev/null 2>&1
  fi
  if [ -d "$WORK/pmv/root" ]; then
    in_ns "$PMV rm -a -f; $PMV rmi -a -f" >/dev/null 2>&1
  fi
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$CRUN_ID" ] && rmdir "$h$CRUN_ID"
  done
  podman_cgroups_cleanup
  # Nothing should be mounted below WORK any more; never let rm -rf cross a mount.
  findmnt -rn -o TARGET | grep -F "$WORK" | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "preparing the busybox image for dockmaster, podman and crun..." >&2
python3 benches/make_busybox_image.py "$WORK/img" >/dev/null
$DM image import "$WORK/img" --tag "$IMAGE" >/dev/null
mkdir -p "$WORK/pm/xdg" "$WORK/crun-state" "$WORK/bundle"
echo '{}' > "$WORK/pm/auth.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$WORK/pm/policy.json"
for d in overlay@pm vfs@pmv; do
  in_ns "skopeo --policy $WORK/pm/policy.json copy -q oci:$WORK/img 'containers-storage:[${d%@*}@$WORK/${d#*@}/root+$WORK/${d#*@}/run]$IMAGE'"
done
$DM image export "$IMAGE" --output "$WORK/bundle/rootfs" >/dev/null
mkdir -p "$WORK/jobs"
cat > "$WORK/jobs/compose.yaml" <<YAML
services:
  tick:
    image: $IMAGE
    command: ["/bin/true"]
    network_mode: none
    x-dockmaster: {schedule: "@yearly", history: 3}
YAML
$DM apply "$WORK/jobs" --stabilization 0 >/dev/null

# ---- idle shims: memory, and the spec that the crun bundle reuses -----------------------
rollup() { # pid -> "rss pss private_clean private_dirty" in kB
  awk '/^Rss:/{r=$2} /^Pss:/{p=$2} /^Private_Clean:/{c=$2} /^Private_Dirty:/{d=$2} END{print r, p, c, d}' "/proc/$1/smaps_rollup"
}
echo "starting idle shims (sleep 1000)..." >&2
A=$($DM run -d --network none "$IMAGE" sleep 1000)
sleep 3
A_PID=$(cat "$WORK/dm/containers/$A/shim.pid")
MEM_ALONE=$(rollup "$A_PID")
cp "/proc/$A_PID/smaps" "$WORK/smaps-alone"
B=$($DM run -d --network none "$IMAGE" sleep 1000)
sleep 3
B_PID=$(cat "$WORK/dm/containers/$B/shim.pid")
MEM_A2=$(rollup "$A_PID")
MEM_B2=$(rollup "$B_PID")
# crun gets dockmaster's own spec (same namespaces, capabilities, seccomp profile, masked
# paths, devices, mounts) with the command, a plain rootfs directory and a cgroup path of its
# own: equivalent isolation, minus the overlay mount dockmaster makes per container. The spec
# as built is spec.json (bundle/config.json is libcontainer's copy without the seccomp profile,
# which dockmaster loads from its compiled cache instead; crun compiles it at every start).
python3 - "$WORK/dm/containers/$A/spec.json" "$WORK/bundle" "$CRUN_ID" <<'PY'
import json, shutil, sys
c = json.load(open(sys.argv[1]))
assert c["linux"].get("seccomp"), "the spec for crun must carry the seccomp profile"
c["process"]["args"] = ["/bin/true"]
c["root"] = {"path": sys.argv[2] + "/rootfs", "readonly": False}
# The container's generated /etc/hosts, hostname and resolv.conf go with it: crun gets copies.
cdir = sys.argv[1].rsplit("/", 1)[0] + "/"
for m in c.get("mounts", []):
    if m.get("source", "").startswith(cdir):
        copy = sys.argv[2] + "/" + m["source"][len(cdir):].replace("/", "_")
        shutil.copyfile(m["source"], copy)
        m["source"] = copy
c["linux"]["cgroupsPath"] = "/" + sys.argv[3]
c.pop("annotations", None)
json.dump(c, open(sys.argv[2] + "/config.json", "w"), indent=1)
PY
$DM rm -f "$A" "$B" >/dev/null

# ---- start-to-exit timings ----------------------------------------------------------------
# ROUNDS hyperfine invocations of RUNS runs per tool, pooled: on a noisy machine, load that
# comes and goes then hits every tool instead of whichever one hyperfine was timing.
echo "timing (hyperfine, $ROUNDS rounds of $WARMUP warm-ups + $RUNS runs per tool)..." >&2
HF="hyperfine -N --warmup $WARMUP --runs $RUNS --style basic"
for r in $(seq "$ROUNDS"); do
  in_ns "$HF --export-json $WORK/ns-$r.json \
    -n dockmaster '$DM run --rm --network none $IMAGE /bin/true' \
    -n 'dockmaster job run' '$DM job run jobs/tick' \
    -n podman '$PM $PM_RUN' \
    -n 'podman (vfs driver)' '$PMV $PM_RUN' \
    -n crun 'crun --root $WORK/crun-state run -b $WORK/bundle $CRUN_ID'" >&2
  step $HF --export-json "$WORK/host-$r.json" \
    -n "dockmaster (host mount ns)" "$DM run --rm --network none $IMAGE /bin/true" >&2
done

python3 - "$WORK" "$ROUNDS" "$WORK/smaps-alone" "$MEM_ALONE" "$MEM_A2" "$MEM_B2" <<'PY'
import json, re, statistics, sys
times = {}  # tool -> all run times in seconds, pooled over the rounds
for r in range(1, int(sys.argv[2]) + 1):
    for f in (f"{sys.argv[1]}/ns-{r}.json", f"{sys.argv[1]}/host-{r}.json"):
        for res in json.load(open(f))["results"]:
            times.setdefault(res["command"], []).extend(res["times"])
med = {n: statistics.median(t) for n, t in times.items()}
dm = med["dockmaster"]
print("| tool | median ms | p10 ms | p90 ms | min ms | runs | tool / dockmaster |")
print("|---|---|---|---|---|---|---|")
label = {"podman": "podman run --rm --network none (overlay driver)", "crun": "crun run (same spec, plain rootfs dir)",
         "dockmaster": "dockmaster run --rm --network none"}
for n, t in times.items():
    q = statistics.quantiles(t, n=10)
    print(f"| {label.get(n, n)} | {med[n]*1e3:.1f} | {q[0]*1e3:.1f} | {q[-1]*1e3:.1f} "
          f"| {min(t)*1e3:.1f} | {len(t)} | {med[n]/dm:.2f} |")
print()
print(f"- podman / dockmaster: **{med['podman']/dm:.2f}×** (target ≥ 5×); "
      f"with podman's vfs driver {med['podman (vfs driver)']/dm:.2f}×")
print(f"- dockmaster / crun: **{dm/med['crun']:.2f}×** (target ≤ 2×)")
print(f"- one job run (`dockmaster job run`, history and log kept) against `podman run --rm`: "
      f"podman / job run **{med['podman']/med['dockmaster job run']:.2f}×**")
print()
print("| idle shim (sleep 1000, smaps_rollup) | Private_Clean + Private_Dirty KiB | Private_Clean | Private_Dirty | RSS | PSS |")
print("|---|---|---|---|---|---|")
for name, v in [("one shim alone", sys.argv[4]), ("first of two shims", sys.argv[5]), ("second of two shims", sys.argv[6])]:
    rss, pss, pc, pd = map(int, v.split())
    print(f"| {name} | {pc + pd} | {pc} | {pd} | {rss} | {pss} |")
print()
# Where the lone shim's private pages are: per mapping kind, from its smaps.
groups = {}
head = re.compile(r"^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$")
cur = None
for line in open(sys.argv[3]):
    m = head.match(line)
    if m:
        perms, path = m.groups()
        if path.endswith("/dockmaster"):
            kind = "dockmaster binary " + ("text" if "x" in perms else "data (rw)" if "w" in perms else "read-only (rodata, relro)")
        elif path.startswith("/"):
            kind = "shared libraries"
        elif path in ("[heap]", "[stack]"):
            kind = path
        else:
            kind = "other anonymous" if not path else path
        cur = groups.setdefault(kind, [0, 0])
        continue
    f = line.split()
    if f and f[0] == "Private_Clean:":
        cur[0] += int(f[1])
    elif f and f[0] == "Private_Dirty:":
        cur[1] += int(f[1])
print("| one shim alone, by mapping | Private_Clean KiB | Private_Dirty KiB |")
print("|---|---|---|")
for kind, (pc, pd) in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
    if pc or pd:
        print(f"| {kind} | {pc} | {pd} |")
PY
