#!/usr/bin/env python3
"""Prints the markdown tables of benches/agent.sh from the JSON lines agent_bench.py wrote.

usage: agent_report.py RESULTS_DIR STRACE_RUNS"""
import json, os, re, statistics, sys
from datetime import datetime

res, strace_runs = sys.argv[1], int(sys.argv[2])


def load(name):
    path = os.path.join(res, name)
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []


def q(values, k):  # k-th decile (1..9), or the value itself when there are too few
    return statistics.quantiles(values, n=10)[k - 1] if len(values) >= 2 else values[0]


def cell(values, scale=1e3, fmt="{:.0f}"):
    if not values:
        return "–"
    v = [x * scale for x in values]
    return f"{fmt.format(statistics.median(v))} ({fmt.format(q(v, 1))}–{fmt.format(q(v, 9))})"


def ratio(a, b):
    return f"{statistics.median(b) / statistics.median(a):.1f}×" if a and b and statistics.median(a) > 0 else "–"


# ---- 1. commit-to-running ------------------------------------------------------------------------
rounds = [r for r in load("rounds.jsonl") if not r["warmup"]]
print("### Commit-to-running (3 services, one changed per commit)")
print()
n = {m: len([r for r in rounds if r["mode"] == m and r["tool"] == "dm"]) for m in ("webhook", "poll")}
print(f"Medians (p10–p90) in ms after `git push` returned; {n['webhook']} webhook and {n['poll']} polling "
      "rounds per tool. Ratio: the Docker loop's median over dockmaster's.")
print()
print("| trigger | measured until | dockmaster agent | git pull + docker-compose up -d | ratio |")
print("|---|---|---|---|---|")
labels = {"running": "new container reported running (`dockmaster ps` / Docker API)",
          "started": "the container's own StartedAt",
          "done": "agent status converged / docker-compose exited"}
for mode, name in (("webhook", "webhook"), ("poll", "1 s poll")):
    for key in ("running", "started", "done"):
        dm = [r[key] for r in rounds if r["mode"] == mode and r["tool"] == "dm"]
        dk = [r[key] for r in rounds if r["mode"] == mode and r["tool"] == "dk"]
        bold = "**" if key == "running" else ""
        print(f"| {name} | {labels[key]} | {bold}{cell(dm)}{bold} | {cell(dk)} | {bold}{ratio(dm, dk)}{bold} |")
pm = {t: [r["running"] for r in rounds if r["mode"] == "poll" and r["tool"] == t] for t in ("dm", "dk")}
if pm["dm"] and pm["dk"]:
    dm_m, dk_m = statistics.mean(pm["dm"]), statistics.mean(pm["dk"])
    print()
    print(f"With polling, the wait for the next poll is uniform over the interval, so the mean is the better "
          f"summary: until running, dockmaster {dm_m * 1e3:.0f} ms, the Docker loop {dk_m * 1e3:.0f} ms "
          f"({dk_m / dm_m:.1f}×); their fastest rounds (push right before a poll): {min(pm['dm']) * 1e3:.0f} ms "
          f"and {min(pm['dk']) * 1e3:.0f} ms.")
# The agent's own phases after a webhook, from its log (tracing timestamps).
log = os.path.join(res, "agent.log")
if os.path.exists(log):
    marks = [("webhook: syncing every source", "webhook received"), ("branch main is at", "remote checked, fetched"),
             ("applying commit", "commit exported, project loaded"), ("recreating app", "planned"),
             ("waiting for app to be up", "old container stopped, new one created and started"),
             ("applied as generation", "generation recorded as good")]
    phases, cur = [], None
    for line in open(log):
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
        if not m:
            continue
        at = datetime.fromisoformat(m.group(1)).timestamp()
        for i, (needle, _) in enumerate(marks):
            if needle in line:
                if i == 0:
                    cur = [at]
                elif cur is not None and len(cur) == i:
                    cur.append(at)
                    if i == len(marks) - 1:
                        phases.append(cur)
                        cur = None
    phases = phases[1:]  # the warm-up round
    if phases:
        print()
        print(f"Where the agent's time goes after a webhook (its log, medians of {len(phases)} syncs, ms):")
        print()
        print("| phase | ms |")
        print("|---|---|")
        for i in range(1, len(marks)):
            print(f"| {marks[i][1]} | {statistics.median((p[i] - p[i - 1]) * 1e3 for p in phases):.1f} |")
        print(f"| **webhook to applied** | **{statistics.median((p[-1] - p[0]) * 1e3 for p in phases):.1f}** |")
push = [r["push"] for r in rounds]
hook = [r["hook"] for r in rounds if r["mode"] == "webhook" and r["tool"] == "dm"]
if push:
    print()
    print(f"`git push` itself (not included): median {statistics.median(push) * 1e3:.0f} ms; the webhook "
          f"request (included): median {statistics.median(hook) * 1e3:.1f} ms until its 202." if hook else "")
wh = [r["running"] for r in rounds if r["mode"] == "webhook" and r["tool"] == "dm"]
if wh:
    m = statistics.median(wh)
    print()
    print(f"- target < 1 s commit-to-running with a webhook: **{'met' if m < 1 else 'missed'}** "
          f"(median {m * 1e3:.0f} ms, p90 {q(wh, 9) * 1e3:.0f} ms, max {max(wh) * 1e3:.0f} ms)")
print()

# ---- 2. idle ---------------------------------------------------------------------------------------
def idle_tables(rec, targets):
    w = rec["window"]
    print(f"#### Idle with 20 containers, {rec.get('label', '')} ({w:.0f} s window, both tools measured "
          "at the same time)")
    print()
    print("| tool | role | processes | CPU % of a core | RSS MiB | PSS MiB |")
    print("|---|---|---|---|---|---|")
    totals = {}
    for tool, name in (("dm", "dockmaster"), ("dk", "Docker")):
        t = {"cpu_s": 0, "pss_kib": 0, "rss_kib": 0}
        for role, r in rec["tools"][tool].items():
            if r["processes"] == 0:
                continue
            print(f"| {name} | {role} | {r['processes']} | {100 * r['cpu_s'] / w:.3f} | {r['rss_kib'] / 1024:.1f} "
                  f"| {r['pss_kib'] / 1024:.1f} |")
            for k in t:
                t[k] += r[k]
        print(f"| {name} | **total** | | **{100 * t['cpu_s'] / w:.3f}** | {t['rss_kib'] / 1024:.1f} "
              f"| **{t['pss_kib'] / 1024:.1f}** |")
        totals[tool] = t
    dm, dk = rec["tools"]["dm"], rec["tools"]["dk"]
    print()
    print("| ratio (Docker / dockmaster) | CPU | PSS |")
    print("|---|---|---|")

    def rat(a, b, k):
        return f"{b[k] / a[k]:.1f}×" if a[k] > 0 else "∞ (dockmaster 0)"
    agent = dm["agent"]
    dkd = [dk[r] for r in ("dockerd", "containerd") if r in dk]
    dksum = {k: sum(r[k] for r in dkd) for k in ("cpu_s", "pss_kib", "rss_kib")}
    print(f"| agent vs dockerd + containerd | {rat(agent, dksum, 'cpu_s')} | {rat(agent, dksum, 'pss_kib')} |")
    if dm["shims"]["processes"] and dk["shims"]["processes"]:
        print(f"| shims vs containerd shims | {rat(dm['shims'], dk['shims'], 'cpu_s')} "
              f"| {rat(dm['shims'], dk['shims'], 'pss_kib')} |")
    print(f"| everything | {rat(totals['dm'], totals['dk'], 'cpu_s')} | {rat(totals['dm'], totals['dk'], 'pss_kib')} |")
    print()
    rss, rss_max = agent["rss_kib"] / 1024, agent["rss_max_kib"] / 1024
    cpu = 100 * agent["cpu_s"] / w
    pre = "target " if targets else ""
    print(f"- {pre}agent RSS < 20 MiB: **{'met' if rss_max < 20 else 'missed'}** (VmRSS {rss:.1f} MiB mean, "
          f"{rss_max:.1f} MiB max; PSS {agent['pss_kib'] / 1024:.1f} MiB, of which anonymous "
          f"{agent['pss_anon_kib'] / 1024:.1f} MiB; dockerd + containerd: RSS {dksum['rss_kib'] / 1024:.1f} MiB)")
    print(f"- {pre}idle CPU < 0.5% of a core: **{'met' if cpu < 0.5 else 'missed'}** ({cpu:.3f}%; "
          f"with its {dm['shims']['processes']} shims {100 * (agent['cpu_s'] + dm['shims']['cpu_s']) / w:.3f}%)")
    print()


def smaps_tables(path, title):
    if not os.path.exists(path):
        return
    s = json.load(open(path))
    print(f"The agent's memory {title} ({s['threads']} threads), KiB. Referenced: pages accessed during "
          "the idle window, an upper bound for file pages (their referenced flag is shared with every other "
          "process mapping them: the shims map the same executable, everything maps libc):")
    print()
    print("| mapping | RSS | PSS | anonymous | Referenced |")
    print("|---|---|---|---|---|")
    for k, v in sorted(s["kinds"].items(), key=lambda kv: -kv[1]["rss"]):
        if v["rss"]:
            print(f"| {k} | {v['rss']} | {v['pss']} | {v['anonymous']} | {v['referenced']} |")
    tot = {k: sum(v[k] for v in s["kinds"].values()) for k in ("rss", "pss", "anonymous", "referenced")}
    print(f"| **total** | **{tot['rss']}** | {tot['pss']} | {tot['anonymous']} | {tot['referenced']} |")
    print()
    tp = s.get("text_pages")
    if tp and tp["windows_64k"]:
        print(f"Code pages of the executable mapped in the agent (pagemap): {tp['resident']} of {tp['mapped']} "
              f"({tp['resident'] * 4 / 1024:.1f} MiB), in {tp['windows_64k']} distinct 64 KiB windows: "
              f"{tp['resident'] / tp['windows_64k']:.1f} pages per window (16 = whole windows, the kernel's "
              "fault-around).")
        print()
    print("| file | RSS | PSS | Referenced |")
    print("|---|---|---|---|")
    for f, v in sorted(s["files"].items(), key=lambda kv: -kv[1]["rss"])[:8]:
        if v["rss"]:
            name = "the dockmaster executable" if f == s["exe"] else f"`{f}`"
            print(f"| {name} | {v['rss']} | {v['pss']} | {v['referenced']} |")
    print()


idle = load("idle.jsonl")
if idle:
    print("### Idle with 20 containers")
    print()
    print("CPU: % of one core over the window, from /proc/PID/stat. RSS and PSS: mean of samples every 5 s "
          "(smaps_rollup), summed over the role's processes (RSS sums count shared pages once per process; "
          "PSS shares them out).")
    print()
    for i, rec in enumerate(idle):
        idle_tables(rec, i == 0)
    st = open(os.path.join(res, "agent-status.txt")).read() if os.path.exists(os.path.join(res, "agent-status.txt")) else ""
    hwm = re.search(r"VmHWM:\s+(\d+)", st)
    if hwm:
        print(f"Peak RSS of the agent that converged the 20 services (VmHWM): {int(hwm.group(1)) / 1024:.1f} MiB.")
        print()
    fl = os.path.join(res, "floor.json")
    if os.path.exists(fl):
        print(f"For scale: `dockmaster --version` (loading the executable and its libraries, no work) peaks at "
              f"{json.load(open(fl))['maxrss_kib'] / 1024:.1f} MiB RSS.")
        print()
    sh = os.path.join(res, "shim-smaps.json")
    if os.path.exists(sh):
        d = json.load(open(sh))
        mib = lambda kib: f"{kib / 1024:.1f}"
        lib = lambda name: sum(v["rss"] for f, v in d["files"].items() if os.path.basename(f).startswith(name))
        anon = sum(v["anonymous"] for v in d["kinds"].values())
        tp = d["text_pages"]
        print(f"For comparison, one shim (the same executable; it never uses git, TLS or HTTP): RSS "
              f"{mib(sum(v['rss'] for v in d['kinds'].values()))} MiB, of which the executable "
              f"{mib(d['files'].get(d['exe'], {}).get('rss', 0))} MiB ({tp['resident']} code pages in "
              f"{tp['windows_64k']} windows), libcrypto {mib(lib('libcrypto'))} MiB, libssl {mib(lib('libssl'))} MiB, "
              f"anonymous {mib(anon)} MiB.")
        print()
    smaps_tables(os.path.join(res, "agent-smaps.json"), "after converging 20 services")
    smaps_tables(os.path.join(res, "agent-smaps-restart.json"), "after a restart on the converged host")

# ---- 3. no-op sync ---------------------------------------------------------------------------------
noop = [r for r in load("noop.jsonl") if not r["warmup"]]
if noop:
    dm = [r for r in noop if r["tool"] == "dm"]
    dk = [r for r in noop if r["tool"] == "dk"]
    print(f"### No-op sync (20 services, nothing changed; {len(dm)} runs per tool)")
    print()
    print("Medians (p10–p90) in ms.")
    print()
    print("| | dockmaster (`dockmaster sync`) | `git pull && docker-compose up -d` | ratio |")
    print("|---|---|---|---|")
    print(f"| wall time | **{cell([r['wall'] for r in dm])}** (pass, until the worker is idle) "
          f"| {cell([r['wall'] for r in dk])} | **{ratio([r['wall'] for r in dm], [r['wall'] for r in dk])}** |")
    print(f"| of which the source's sync (`dockmaster_sync_duration_seconds`) "
          f"| {cell([r['histogram_wall'] for r in dm], fmt='{:.1f}')} | | |")
    print(f"| CPU, everything | **{cell([r['cpu'] for r in dm], fmt='{:.1f}')}** | {cell([r['cpu'] for r in dk])} "
          f"| **{ratio([r['cpu'] for r in dm], [r['cpu'] for r in dk])}** |")
    print(f"| CPU, client (`dockmaster sync` / git + docker-compose) | {cell([r['client_cpu'] for r in dm], fmt='{:.1f}')} "
          f"| {cell([r['client_cpu'] for r in dk])} | |")
    print(f"| CPU, agent process (all threads) / dockerd + containerd + shims "
          f"| {cell([r['agent_cpu'] for r in dm], fmt='{:.1f}')} | {cell([r['daemons_cpu'] for r in dk])} | |")
    print(f"| CPU, of which the reconcile thread | {cell([r['reconcile_cpu'] for r in dm], fmt='{:.1f}')} | | |")
    print(f"| CPU, dockmaster's shims | {cell([r['shims_cpu'] for r in dm], fmt='{:.1f}')} | | |")
    print()
    print("Daemon and agent CPU: /proc/PID/task/*/schedstat (ns) before and after; clients: wait4 rusage.")
    print()

strace = os.path.join(res, "strace.txt")
if os.path.exists(strace):
    lines = [l for l in open(strace).read().splitlines() if l.strip()]
    print(f"`strace -c -f` of the agent over {strace_runs} no-op `dockmaster sync` passes (top 15 by calls; "
          "strace slows every call, so counts matter, not times):")
    print()
    rows = []
    for l in lines[2:]:
        f = l.split()
        if f[-1] == "total" or l.startswith("-"):
            continue
        # % time, seconds, usecs/call, calls, [errors], syscall
        rows.append((int(f[3]), int(f[4]) if len(f) == 6 else 0, f[-1]))
    print("| syscall | calls per sync | errors per sync |")
    print("|---|---|---|")
    for calls, errors, name in sorted(rows, reverse=True)[:15]:
        print(f"| {name} | {calls / strace_runs:.0f} | {errors / strace_runs:.0f} |")
    total = sum(r[0] for r in rows)
    print(f"| **all** | **{total / strace_runs:.0f}** | |")
    print()
