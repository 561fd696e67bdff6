#!/usr/bin/env python3
"""Prints the markdown tables of benches/compose.sh from the JSON lines compose_time.py wrote.

usage: compose_report.py RESULTS_DIR N_SERVICES DOCKER_VERSION COMPOSE_VERSION HOST_NOTE"""
import json, os, re, statistics, sys

res, n_services, docker_version, compose_version, host_note = sys.argv[1:6]


def load(name):
    path = os.path.join(res, name)
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []


def cpu(r):
    return r["user"] + r["sys"]


def q(values, k):  # k-th decile (1..9), or the value itself when there are too few
    return statistics.quantiles(values, n=10)[k - 1] if len(values) >= 2 else values[0]


def by_label(rows):
    out = {}
    for r in rows:
        out.setdefault(r["label"], []).append(r)
    return out


# ---- 1. the N-service project ------------------------------------------------------------------
big = by_label(load("big.jsonl"))
print(f"| {n_services}-service project, dockmaster | runs | CPU ms (user+sys), median | p10–p90 "
      "| wall ms, median | p10–p90 | min wall ms | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for label in ["big config --format json", "big plan (nothing applied)", "big apply (cold)", "big plan (first)",
              "big plan (no-op)", "big plan --format json (no-op)", "big apply (no-op)", "big down -v"]:
    rows = big.get(label, [])
    if not rows:
        continue
    c = [cpu(r) * 1e3 for r in rows]
    w = [r["wall"] * 1e3 for r in rows]
    rss = statistics.median(r["maxrss_kib"] for r in rows) / 1024
    print(f"| `{label.replace('big ', '')}` | {len(rows)} | {statistics.median(c):.1f} | {q(c, 1):.1f}–{q(c, 9):.1f} "
          f"| {statistics.median(w):.1f} | {q(w, 1):.1f}–{q(w, 9):.1f} | {min(w):.1f} | {rss:.1f} |")
print()
noop = big.get("big plan (no-op)", [])
empty = big.get("big plan (nothing applied)", [])
config = big.get("big config --format json", [])
per_obs_wall = None
if noop:
    c = statistics.median(cpu(r) for r in noop) * 1e3
    w = statistics.median(r["wall"] for r in noop) * 1e3
    print(f"- no-op `plan` of {n_services} services: **{c:.1f} ms CPU**, {w:.1f} ms wall (target < 50 ms)")
    if empty and config:
        ce = statistics.median(cpu(r) for r in empty) * 1e3
        we = statistics.median(r["wall"] for r in empty) * 1e3
        cc = statistics.median(cpu(r) for r in config) * 1e3
        wc = statistics.median(r["wall"] for r in config) * 1e3
        per_obs_wall = (w - we) / int(n_services)
        print(f"  - of which loading the project (`config`): {cc:.1f} ms CPU, {wc:.1f} ms wall; loading, "
              f"resolving images and hashing inputs (`plan` with nothing applied): {ce:.1f} ms CPU, {we:.1f} ms wall; "
              f"observing the {n_services} containers (difference): {c - ce:.1f} ms CPU, {w - we:.1f} ms wall, "
              f"{per_obs_wall * 1e3:.0f} µs wall per container")
    try:
        sc = json.load(open(os.path.join(res, "shim-cpu.json")))
        per = lambda ticks: ticks / sc["clk_tck"] / sc["plan_runs"] * 1e3
        print(f"  - the shims answering: {per(sc['during']):.1f} ms CPU per plan in total "
              f"(over the plan runs; {per(sc['idle']):.1f} ms per same stretch of idle time, healthchecks)")
    except (OSError, ValueError, KeyError):
        pass

# Where the cold apply's time went: the stderr lines dockmaster prints as it goes.
cold = big.get("big apply (cold)", [])
if cold:
    lines = cold[0]["stderr"]
    creates = [t for t, l in lines if re.match(r"creating svc\d+ #", l)]
    marks = {"first line (images resolved, plan printed)": lines[0][0] if lines else None,
             "first container created": creates[0] if creates else None,
             "last container created": creates[-1] if creates else None}
    gate = [t for t, l in lines if l.startswith("waiting for ")]
    if gate:
        marks["health gate starts"] = gate[0]
    marks["apply returns"] = cold[0]["wall"]
    print(f"- cold `apply` of {n_services} services, {len(creates)} containers: " + "; ".join(
        f"{k} at {v:.2f} s" for k, v in marks.items() if v is not None))
    if len(creates) > 20:
        gaps = [b - a for a, b in zip(creates, creates[1:])]
        print(f"  - between two container creations: median {statistics.median(gaps) * 1e3:.0f} ms; "
              f"first ten {statistics.median(gaps[:10]) * 1e3:.0f} ms, last ten {statistics.median(gaps[-10:]) * 1e3:.0f} ms")
        # Before creating a service with depends_on, apply observes every container of the
        # project (one shim request each) to check that one dependency: k-1 requests before
        # the k-th container when it has dependencies (the groups' first services have none).
        requests = sum(i for i in range(int(n_services)) if i % 10 != 0)
        if per_obs_wall is not None:
            print(f"  - dependency checks observe the whole project: {requests} shim requests in all, "
                  f"~{requests * per_obs_wall / 1e3:.1f} s at the no-op plan's {per_obs_wall * 1e3:.0f} µs per container")
print()

# ---- 2. the 10-service stack -----------------------------------------------------------------
def timeline(rows, norm):
    """The median arrival time of each progress line over the rounds, in first-seen order."""
    times, order = {}, []
    for r in rows:
        seen = set()
        for t, l in r["stderr"]:
            key = norm(l)
            if key is None or key in seen:
                continue
            seen.add(key)
            if key not in times:
                order.append(key)
            times.setdefault(key, []).append(t)
    return [(k, statistics.median(times[k]), len(times[k])) for k in order]


def dm_norm(l):
    l = l.strip()
    if not l or re.match(r"^[+~-] ", l) or l.startswith("  "):
        return None  # the plan itself, printed at once
    return l


def dk_norm(l):
    l = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", l).replace("\r", "").strip()
    return re.sub(r"\s+\.\.\.", " ...", l) or None


for variant, title in [("stack", "10-service stack from cold (db healthcheck, api waits for service_healthy)"),
                       ("plain", "the same stack without the healthcheck (api waits for service_started)")]:
    dm, dk = load(f"{variant}-dm.jsonl"), load(f"{variant}-dk.jsonl")
    if not (dm and dk):
        continue
    med = {"dm": statistics.median(r["wall"] for r in dm), "dk": statistics.median(r["wall"] for r in dk)}
    print(f"| {title} | median s | p10–p90 s | min s | max s | CLI CPU s, median | runs | tool / dockmaster |")
    print("|---|---|---|---|---|---|---|---|")
    for key, rows, name in [("dm", dm, "`dockmaster apply DIR --stabilization 0`"),
                            ("dk", dk, f"`docker-compose up -d` ({compose_version}, dockerd {docker_version})")]:
        w = [r["wall"] for r in rows]
        print(f"| {name} | {med[key]:.3f} | {q(w, 1):.3f}–{q(w, 9):.3f} | {min(w):.3f} | {max(w):.3f} "
              f"| {statistics.median(cpu(r) for r in rows):.3f} | {len(rows)} | {med[key] / med['dm']:.2f} |")
    print()
    print(f"- {variant}: docker-compose / dockmaster **{med['dk'] / med['dm']:.2f}×** (target ≥ 3×)")
    print()
    for name, rows, norm in [("dockmaster apply", dm, dm_norm), ("docker-compose up -d", dk, dk_norm)]:
        print(f"| {variant}, {name}: progress line (stderr) | median s after start |")
        print("|---|---|")
        for k, t, n in timeline(rows, norm):
            print(f"| {k}{'' if n == len(rows) else f' ({n} of {len(rows)} rounds)'} | {t:.3f} |")
        print(f"| (returns) | {statistics.median(r['wall'] for r in rows):.3f} |")
        print()

down = by_label(load("down.jsonl"))
if down:
    print("| teardown between rounds (not in the ratio) | median s | runs |")
    print("|---|---|---|")
    for label, rows in down.items():
        print(f"| `{label}` | {statistics.median(r['wall'] for r in rows):.3f} | {len(rows)} |")
    print()
print(f"- {host_note}")
