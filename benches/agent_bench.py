#!/usr/bin/env python3
"""The measurements of benches/agent.sh (dockmaster's GitOps agent against `git pull` +
`docker-compose up -d`). Every subcommand reads the run's settings from CONF (a JSON file the
script writes) and appends JSON lines to OUT.

usage: agent_bench.py project DIR N MESSAGE IMAGE   writes DIR/compose.yaml: service `app`
                                                     (environment MESSAGE) + N-1 others
       agent_bench.py rounds CONF OUT MODE ROUNDS   commit-to-running, MODE webhook or poll,
                                                     1 warm-up + ROUNDS per tool, alternating
       agent_bench.py idle CONF OUT SECONDS LABEL   CPU and memory of both tools' processes
       agent_bench.py noop CONF OUT RUNS            the cost of a sync that changes nothing
       agent_bench.py smaps PID                     where a process's memory is (one JSON)
       agent_bench.py floor BINARY                  peak RSS of BINARY --version (one JSON)

Time is CLOCK_MONOTONIC in this process, except the containers' StartedAt which each tool
reports in wall-clock time (compared with time.time() taken at the same moment as the
monotonic reading)."""
import ctypes, glob, hashlib, hmac, http.client, json, os, random, re, socket, statistics
import subprocess, sys, time, urllib.parse
from datetime import datetime

CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.01  # how often the watchers look (s)


# ---- small helpers -------------------------------------------------------------------------------
def enter_netns(name):
    """Moves this (single-threaded) process into network namespace `name`: the agent's
    listener and git daemon are on 127.0.0.1 there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), f"setns {name}")
    os.close(fd)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def unix_get_json(path, url):
    c = UnixHTTP(path)
    try:
        c.request("GET", url)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {url} on {path}: {r.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        c.close()


def rfc3339(s):
    """Seconds since the epoch of an RFC 3339 time with up to nanoseconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", s)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {s}")
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def ticks(pid):
    """utime + stime (+ cutime + cstime: children it waited for) of a process, in seconds."""
    try:
        f = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = f[f.rindex(")") + 2:].split()
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def thread_ns(pid, tid):
    """CPU time of one thread in ns (schedstat: nanosecond resolution)."""
    try:
        return int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
    except OSError:
        return None


def proc_ns(pids):
    """CPU time in ns of processes, summed over their live threads (schedstat). Threads that
    exited in between are not counted: the callers check the thread counts."""
    total, threads = 0, 0
    for pid in pids:
        for t in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                total += int(open(t).read().split()[0])
                threads += 1
            except OSError:
                pass
    return total, threads


def rollup(pid):
    """smaps_rollup in KiB (Rss, Pss, Pss_Anon, Pss_File, ...), or None if gone."""
    try:
        text = open(f"/proc/{pid}/smaps_rollup").read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines()[1:]:
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])
    return out


def q(values, k):  # k-th decile, or the value itself when there are too few
    return statistics.quantiles(values, n=10)[k - 1] if len(values) >= 2 else values[0]


# ---- the project -------------------------------------------------------------------------------
def project(d, n, message, image):
    """`app` (the one changed per commit, through MESSAGE) and n-1 others, all without a
    network (the measurement is about the GitOps loop, not networking) and all stopping at
    once on SIGTERM (busybox sleep as PID 1 would ignore it: both tools would wait 10 s)."""
    os.makedirs(d, exist_ok=True)
    forever = "[\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 2147483647 & wait\"]"
    out = ["services:"]
    for i in range(n):
        name = "app" if i == 0 else f"svc{i:02d}"
        out += [f"  {name}:", f"    image: {image}", f"    command: {forever}",
                "    network_mode: none"]
        if i == 0:
            out += ["    environment:", f"      MESSAGE: \"{message}\""]
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write("\n".join(out) + "\n")


# ---- the two tools, as the rounds see them -------------------------------------------------------
class Tools:
    def __init__(self, conf):
        self.c = conf
        self.env = dict(os.environ, **conf["env"])

    def git(self, tool, *args, netns=False):
        cmd = [self.c["git"], "-C", self.c["push"][tool], *args]
        if netns:
            cmd = ["nsenter", f"--net=/run/netns/{self.c['ns'][tool]}", *cmd]
        subprocess.run(cmd, check=True, env=self.env, stdout=subprocess.DEVNULL)

    # Current `app` container: (id, running?) or None.
    def dm_app(self):
        out = subprocess.run([self.c["dm_bin"], "--root", self.c["dm_root"], "ps", "-a", "--format", "json",
                              "--project", self.c["project"]], check=True, env=self.env,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.strip():
                c = json.loads(line)
                if c.get("Service") == "app":
                    return c["ID"], c["State"] == "running"
        return None

    def dk_app(self):
        f = json.dumps({"label": [f"com.docker.compose.project={self.c['project']}",
                                  "com.docker.compose.service=app"]})
        lst = unix_get_json(self.c["docker_sock"], "/containers/json?all=1&filters=" + urllib.parse.quote(f))
        for c in lst:
            return c["Id"], c["State"] == "running"
        return None

    def app(self, tool):
        return self.dm_app() if tool == "dm" else self.dk_app()

    def started_at(self, tool, cid):
        if tool == "dm":
            out = subprocess.run([self.c["dm_bin"], "--root", self.c["dm_root"], "inspect", cid], check=True,
                                 env=self.env, capture_output=True, text=True).stdout
            return rfc3339(json.loads(out)[0]["State"]["StartedAt"])
        return rfc3339(unix_get_json(self.c["docker_sock"], f"/containers/{cid}/json")["State"]["StartedAt"])

    def dm_status(self):
        return unix_get_json(self.c["dm_socket"], "/v1/status")

    def dm_converged(self, rev):
        for p in self.dm_status().get("projects", []):
            if p["name"] == self.c["project"]:
                return (p["state"] == "converged" and p.get("revision") == rev
                        and all(s["running"] == s["desired"] for s in p["services"]))
        return False

    def webhook(self):
        body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "bench/fleet"}}).encode()
        sig = "sha256=" + hmac.new(self.c["hook_secret"].encode(), body, hashlib.sha256).hexdigest()
        host, port = self.c["dm_http"].rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            c.request("POST", "/hooks/git", body, {"X-GitHub-Event": "push", "X-Hub-Signature-256": sig,
                                                   "Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 202:
                raise RuntimeError(f"webhook: HTTP {r.status}")
        finally:
            c.close()

    def dk_trigger(self):
        """The webhook receiver's job for the Docker loop: pull, then up -d."""
        d = self.c["deploy_dk"]
        script = f'{self.c["git"]} -C "$1" pull -q --ff-only && docker-compose -f "$1/compose.yaml" up -d'
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{self.c['ns']['dk']}", "bash", "-c", script,
                                 "trigger", d], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)


def one_round(t, tool, mode, label):
    c = t.c
    old = t.app(tool)
    if old is None or not old[1]:
        raise RuntimeError(f"{tool}: no running app container before the round: {old}")
    project(c["push"][tool], c["services"], label, c["image"])
    t.git(tool, "commit", "-q", "-am", label)
    rev = subprocess.run([c["git"], "-C", c["push"][tool], "rev-parse", "HEAD"], check=True,
                         capture_output=True, text=True).stdout.strip()
    if mode == "poll":
        # Where the push falls in the poll cycle must be random (for both tools).
        time.sleep(random.uniform(0, c["poll_interval"]))
    t0 = time.monotonic()
    t.git(tool, "push", "-q", "origin", "HEAD:main", netns=True)
    t_pushed, wall_pushed = time.monotonic(), time.time()
    trigger = None
    if mode == "webhook":
        if tool == "dm":
            t.webhook()
        else:
            trigger = t.dk_trigger()
    t_hook = time.monotonic()
    deadline = t_pushed + 120
    new = None
    while True:
        a = t.app(tool)
        now = time.monotonic()
        if a and a[0] != old[0] and a[1]:
            new, t_running = a[0], now
            break
        if now > deadline:
            raise RuntimeError(f"{tool} {mode}: the new app container did not run within 120 s ({a})")
        if trigger and trigger.poll() not in (None, 0):
            raise RuntimeError(f"dk trigger failed: {trigger.stderr.read().decode()}")
        time.sleep(POLL)
    # Done: the agent reports the project converged at the commit / docker-compose exited.
    if tool == "dm":
        while not t.dm_converged(rev):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dm: not converged at {rev} within 120 s: {t.dm_status()}")
            time.sleep(POLL)
        t_done = time.monotonic()
    elif trigger:
        err = trigger.communicate()[1]
        t_done = time.monotonic()
        if trigger.returncode != 0:
            raise RuntimeError(f"dk trigger exited {trigger.returncode}: {err.decode()}")
    else:
        t_done = None
        marker = c["dk_marker"]
        while t_done is None:
            for line in open(marker).read().splitlines() if os.path.exists(marker) else []:
                at, r = line.split()
                if r == rev:
                    t_done = t_pushed + (float(at) - wall_pushed)
            if t_done is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dk loop did not finish {rev} within 120 s")
                time.sleep(POLL)
    started = t.started_at(tool, new) - wall_pushed
    return {"tool": tool, "mode": mode, "push": t_pushed - t0, "hook": t_hook - t_pushed,
            "running": t_running - t_pushed, "done": t_done - t_pushed, "started": started}


def rounds(conf, out, mode, n):
    c = json.load(open(conf))
    enter_netns(c["ns"]["dm"])
    t = Tools(c)
    for r in range(n + 1):
        order = ["dm", "dk"] if r % 2 == 0 else ["dk", "dm"]
        for tool in order:
            rec = one_round(t, tool, mode, f"{mode}-{r}-{tool}")
            rec["round"] = r
            rec["warmup"] = r == 0
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"  {mode} round {r} {tool}: running after {rec['running'] * 1e3:.0f} ms "
                  f"(started {rec['started'] * 1e3:.0f} ms, done {rec['done'] * 1e3:.0f} ms)", file=sys.stderr)
            time.sleep(0.5)


# ---- idle ---------------------------------------------------------------------------------------
def groups(c):
    """The processes of each tool, by role: {role: [pid, ...]}."""
    dm_root = c["dm_root"]
    shims = []
    for f in glob.glob(f"{dm_root}/containers/*/shim.pid"):
        try:
            shims.append(int(open(f).read().strip()))
        except (OSError, ValueError):
            pass
    dm = {"agent": [c["agent_pid"]], "shims": shims}
    try:
        dm["netd"] = [int(open(f"{dm_root}/networks/.netd.pid").read().strip())]
    except (OSError, ValueError):
        pass
    dk = {"dockerd": [c["dockerd_pid"]], "containerd": [], "shims": [], "other": []}
    mntns = os.readlink(f"/proc/{c['dockerd_pid']}/ns/mnt")
    for p in glob.glob("/proc/[0-9]*"):
        pid = int(p[6:])
        try:
            if pid == c["dockerd_pid"] or os.readlink(f"{p}/ns/mnt") != mntns:
                continue
            comm = open(f"{p}/comm").read().strip()
            cg = open(f"{p}/cgroup").read()
        except OSError:
            continue
        if c["dk_cgroup"] in cg:  # a container's own processes
            continue
        if comm == "containerd":
            dk["containerd"].append(pid)
        elif comm.startswith("containerd-shim"):
            dk["shims"].append(pid)
        else:
            dk["other"].append(pid)
    if c.get("loop_pid"):
        dk["git poll loop"] = [c["loop_pid"]]
    return {"dm": dm, "dk": dk}


def idle(conf, out, seconds, label):
    c = json.load(open(conf))
    g = groups(c)
    pids = {pid for t in g.values() for ps in t.values() for pid in ps}
    t0 = time.monotonic()
    cpu0 = {p: ticks(p) for p in pids}
    mem = {p: [] for p in pids}
    while True:
        for p in pids:
            r = rollup(p)
            if r:
                mem[p].append(r)
        if time.monotonic() - t0 >= seconds:
            break
        time.sleep(min(5, max(0, seconds - (time.monotonic() - t0))))
    wall = time.monotonic() - t0
    cpu1 = {p: ticks(p) for p in pids}
    rec = {"label": label, "window": wall, "tools": {}}
    for tool, roles in g.items():
        rec["tools"][tool] = {}
        for role, ps in roles.items():
            alive = [p for p in ps if cpu0[p] is not None and cpu1[p] is not None and mem[p]]
            rec["tools"][tool][role] = {
                "processes": len(alive),
                "cpu_s": sum(cpu1[p] - cpu0[p] for p in alive),
                # per process: mean over the samples, then summed over the role's processes
                "rss_kib": sum(statistics.mean(m["Rss"] for m in mem[p]) for p in alive),
                "rss_max_kib": sum(max(m["Rss"] for m in mem[p]) for p in alive),
                "pss_kib": sum(statistics.mean(m["Pss"] for m in mem[p]) for p in alive),
                "pss_anon_kib": sum(statistics.mean(m.get("Pss_Anon", 0) for m in mem[p]) for p in alive),
                "pss_file_kib": sum(statistics.mean(m.get("Pss_File", 0) for m in mem[p]) for p in alive),
            }
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    for tool, roles in rec["tools"].items():
        for role, r in roles.items():
            print(f"  {tool} {role}: {r['processes']} processes, CPU {100 * r['cpu_s'] / wall:.3f}% of a core, "
                  f"RSS {r['rss_kib'] / 1024:.1f} MiB, PSS {r['pss_kib'] / 1024:.1f} MiB", file=sys.stderr)


# ---- no-op sync ----------------------------------------------------------------------------------
def metrics(c):
    host, port = c["dm_http"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    src = c["noop_source"]
    get = lambda name: sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                           if l.startswith(name + "{") and f'source="{src}"' in l)
    return get("dockmaster_sync_duration_seconds_count"), get("dockmaster_sync_duration_seconds_sum")


def reconcile_tid(pid):
    for t in glob.glob(f"/proc/{pid}/task/*"):
        if open(f"{t}/comm").read().strip() == "reconcile":
            return int(t.rsplit("/", 1)[1])
    raise RuntimeError(f"no reconcile thread in {pid}")


def dm_noop(c, t, quiet=0.3):
    pid = c["agent_pid"]
    tid = reconcile_tid(pid)
    count0, sum0 = metrics(c)
    shims = groups(c)["dm"]["shims"]
    (a0, at0), (s0, st0), th0 = proc_ns([pid]), proc_ns(shims), thread_ns(pid, tid)
    t0 = time.monotonic()
    p = subprocess.Popen([c["dm_bin"], "--root", c["dm_root"], "sync", "--socket", c["dm_socket"]],
                         env=t.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"dockmaster sync exited {p.returncode}: {err.decode()}")
    client = ru.ru_utime + ru.ru_stime
    # The pass ends when the reconcile thread has not run for `quiet` s: the last time its
    # CPU time moved (sampled every 2 ms) is the end.
    last, last_ns = time.monotonic(), th0
    while time.monotonic() - last < quiet:
        ns = thread_ns(pid, tid)
        if ns != last_ns:
            last, last_ns = time.monotonic(), ns
        time.sleep(0.002)
        if time.monotonic() - t0 > 60:
            raise RuntimeError("the sync pass did not end within 60 s")
    (a1, at1), (s1, st1), th1 = proc_ns([pid]), proc_ns(shims), thread_ns(pid, tid)
    count1, sum1 = metrics(c)
    if count1 != count0 + 1:
        raise RuntimeError(f"sync runs of {c['noop_source']}: {count0} -> {count1}, expected one more")
    return {"tool": "dm", "wall": last - t0, "histogram_wall": sum1 - sum0, "client_cpu": client,
            "agent_cpu": (a1 - a0) / 1e9, "reconcile_cpu": (th1 - th0) / 1e9, "shims_cpu": (s1 - s0) / 1e9,
            "cpu": client + (a1 - a0 + s1 - s0) / 1e9, "threads": [at0, at1, st0, st1]}


def dk_noop(c, t):
    g = groups(c)["dk"]
    daemons = g["dockerd"] + g["containerd"] + g["shims"]
    d0, dt0 = proc_ns(daemons)
    d = c["deploy_idle_dk"]
    script = f'{c["git"]} -C "$1" pull -q --ff-only && docker-compose -f "$1/compose.yaml" up -d'
    t0 = time.monotonic()
    p = subprocess.Popen(["nsenter", f"--net=/run/netns/{c['ns']['dk']}", "bash", "-c", script, "noop", d],
                         env=t.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"git pull && docker-compose up -d exited {p.returncode}: {err.decode()}")
    if b"Recreating" in err or b"Creating" in err or b"Starting" in err:
        raise RuntimeError(f"the no-op up -d changed something: {err.decode()}")
    d1, dt1 = proc_ns(daemons)
    client = ru.ru_utime + ru.ru_stime
    return {"tool": "dk", "wall": wall, "client_cpu": client, "daemons_cpu": (d1 - d0) / 1e9,
            "cpu": client + (d1 - d0) / 1e9, "threads": [dt0, dt1]}


def noop(conf, out, runs):
    c = json.load(open(conf))
    enter_netns(c["ns"]["dm"])
    t = Tools(c)
    for r in range(runs + 2):  # 2 warm-ups
        order = ["dm", "dk"] if r % 2 == 0 else ["dk", "dm"]
        for tool in order:
            rec = dm_noop(c, t) if tool == "dm" else dk_noop(c, t)
            rec["warmup"] = r < 2
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"  no-op {tool}: wall {rec['wall'] * 1e3:.1f} ms, CPU {rec['cpu'] * 1e3:.1f} ms", file=sys.stderr)
            time.sleep(0.3)


# ---- memory breakdown ----------------------------------------------------------------------------
def smaps(pid):
    """Rss, Pss and Referenced (KiB; Referenced: touched since the last write of 1 to
    /proc/PID/clear_refs) of a process, by kind of mapping (the executable's text and data,
    shared libraries, heap, other anonymous memory) and by file."""
    exe = os.readlink(f"/proc/{pid}/exe")
    kinds, files, cur = {}, {}, None
    for line in open(f"/proc/{pid}/smaps"):
        head = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            path = head[5] if len(head) > 5 else ""
            perms = head[1]
            if path == exe:
                kind = "executable " + ("text" if "x" in perms else "read-only data" if "w" not in perms else "data")
            elif path == "[heap]":
                kind = "heap (brk)"
            elif path.startswith("[stack"):
                kind = "main thread stack"
            elif path.startswith("/"):
                kind = "shared libraries"
            elif path in ("[vdso]", "[vvar]", "[vsyscall]"):
                kind = "kernel (vdso)"
            else:
                kind = "anonymous mmap (allocator, thread stacks)"
            cur = [kinds.setdefault(kind, {"rss": 0, "pss": 0, "referenced": 0, "anonymous": 0})]
            if path.startswith("/"):
                cur.append(files.setdefault(path, {"rss": 0, "pss": 0, "referenced": 0, "anonymous": 0}))
        elif head[0] in ("Rss:", "Pss:", "Referenced:", "Anonymous:"):
            for c in cur:
                c[head[0][:-1].lower()] += int(head[1])
    threads = len(glob.glob(f"/proc/{pid}/task/*"))
    print(json.dumps({"pid": pid, "exe": exe, "threads": threads, "kinds": kinds, "files": files,
                      "text_pages": text_pages(pid, exe)}))


def text_pages(pid, exe):
    """How the executable's resident code pages are spread: pages mapped in the process
    (pagemap's present bit) against the 64 KiB-aligned windows holding at least one of them.
    A page fault on file-backed code maps the whole surrounding window (the kernel's
    fault-around, 64 KiB by default) when it is in the page cache: pages = 16 x windows means
    the resident code is that granularity times the places touched, not code run."""
    size = os.sysconf("SC_PAGE_SIZE")
    pages, windows, total = 0, set(), 0
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for line in open(f"/proc/{pid}/maps"):
            f = line.split()
            if len(f) < 6 or f[5] != exe or "x" not in f[1]:
                continue
            start, end = (int(x, 16) for x in f[0].split("-"))
            pm.seek(start // size * 8)
            data = pm.read((end - start) // size * 8)
            total += (end - start) // size
            for i in range(len(data) // 8):
                if int.from_bytes(data[i * 8:i * 8 + 8], "little") >> 63:
                    pages += 1
                    windows.add((start + i * size) >> 16)
    return {"mapped": total, "resident": pages, "windows_64k": len(windows)}


def floor(binary):
    """Peak RSS (KiB) of `BINARY --version`: what loading the executable and its shared
    libraries costs before any work (median of 5). Measured by GNU time: a child forked from
    this Python process would report Python's RSS (the peak survives exec), time's own is
    smaller than the binary's."""
    peaks = []
    for _ in range(5):
        r = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "--version"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peaks.append(int(r.stderr.split()[-1]))
    print(json.dumps({"binary": binary, "maxrss_kib": statistics.median(peaks)}))


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) == 5 and a[0] == "project":
        project(a[1], int(a[2]), a[3], a[4])
    elif len(a) == 5 and a[0] == "rounds" and a[3] in ("webhook", "poll"):
        rounds(a[1], a[2], a[3], int(a[4]))
    elif len(a) == 5 and a[0] == "idle":
        idle(a[1], a[2], float(a[3]), a[4])
    elif len(a) == 4 and a[0] == "noop":
        noop(a[1], a[2], int(a[3]))
    elif len(a) == 2 and a[0] == "smaps":
        smaps(int(a[1]))
    elif len(a) == 2 and a[0] == "floor":
        floor(a[1])
    else:
        sys.exit(__doc__)
