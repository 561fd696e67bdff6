#!/usr/bin/env bash
# Pull benchmark, side by side in one run: dockmaster pull (download + verify + unpack) of a
# ~300 MB image of four incompressible gzip layers from a loopback registry, against
# `podman pull`, against `skopeo copy` to an OCI directory followed by a sequential
# `tar -xzf` of its layers, and against the `tar -xzf` alone. Prints a markdown table for
# docs/BENCHMARKS.md. Needs root; installs its peers from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-300}
RUNS=${RUNS:-5}

export DEBIAN_FRONTEND=noninteractive
need=()
for p in docker-registry skopeo podman hyperfine time python3 uidmap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] || { apt-get update -qq; apt-get install -y -qq --no-install-recommends "${need[@]}"; }

cargo build --release -q
BIN=$PWD/target/release/dockmaster

WORK=$(mktemp -d /var/tmp/dm-bench.XXXXXX)
REG_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
YML
docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done

echo "building a ${SIZE_MB} MB image of 4 incompressible layers..." >&2
python3 benches/make_oci_image.py "$WORK/layout" "$SIZE_MB" 4 >/dev/null
skopeo copy -q "oci:$WORK/layout:latest" "docker://127.0.0.1:$PORT/bench/big:latest" --dest-tls-verify=false
IMAGE=127.0.0.1:$PORT/bench/big:latest

# the peers' inputs, prepared once
mkdir -p "$WORK/podman-run"
cat > "$WORK/registries.conf" <<CONF
[[registry]]
location = "127.0.0.1:$PORT"
insecure = true
CONF
LAYERS=$(python3 -c "import json,sys; m=json.load(open('$WORK/layout/index.json'))['manifests'][0]['digest'].split(':')[1]; print(' '.join(l['digest'].split(':')[1] for l in json.load(open('$WORK/layout/blobs/sha256/'+m))['layers']))")

dm="rm -rf $WORK/dm && $BIN --root $WORK/dm pull -q $IMAGE"
pm="podman --root $WORK/podman --runroot $WORK/podman-run --registries-conf $WORK/registries.conf pull -q $IMAGE"
sk="rm -rf $WORK/sk $WORK/skx && skopeo copy -q docker://$IMAGE oci:$WORK/sk:latest --src-tls-verify=false && mkdir $WORK/skx && for l in $LAYERS; do tar -xzf $WORK/sk/blobs/sha256/\$l -C $WORK/skx; done"
tx="rm -rf $WORK/tx && mkdir $WORK/tx && for l in $LAYERS; do tar -xzf $WORK/layout/blobs/sha256/\$l -C $WORK/tx; done"

hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$WORK/h.json" \
  --prepare "sh -c 'sync; rm -rf $WORK/dm $WORK/podman $WORK/sk $WORK/skx $WORK/tx'" \
  -n dockmaster "sh -c '$dm'" \
  -n "podman pull" "sh -c '$pm'" \
  -n "skopeo copy + tar -xzf" "sh -c '$sk'" \
  -n "tar -xzf alone" "sh -c '$tx'" >&2

rss() { # peak RSS in MiB of one run of a shell command
  sync; rm -rf "$WORK/dm" "$WORK/podman" "$WORK/sk" "$WORK/skx" "$WORK/tx"
  /usr/bin/time -f %M sh -c "$1" 2>&1 >/dev/null | tail -1 | awk '{printf "%.1f", $1/1024}'
}
R_DM=$(rss "$dm"); R_PM=$(rss "$pm"); R_SK=$(rss "$sk"); R_TX=$(rss "$tx")

python3 - "$WORK/h.json" "$R_DM" "$R_PM" "$R_SK" "$R_TX" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
rss = dict(zip(["dockmaster", "podman pull", "skopeo copy + tar -xzf", "tar -xzf alone"], sys.argv[2:]))
dm = res["dockmaster"]["median"]
print("| tool | median s | min s | max s | dockmaster / tool | peak RSS MiB |")
print("|---|---|---|---|---|---|")
for name, r in res.items():
    print(f"| {name} | {r['median']:.3f} | {r['min']:.3f} | {r['max']:.3f} | {dm / r['median']:.2f} | {rss[name]} |")
PY
