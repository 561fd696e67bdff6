#!/usr/bin/env python3
"""Runs one command and appends one JSON line to OUT: wall time, the CPU time (user, sys) of
the command and the children it waited for (wait4's rusage: exactly the CLI's own CPU, not
that of daemons or of shims it detached), its exit code, and every stderr line with the time
it arrived, relative to the start (for phase breakdowns; dockmaster and docker-compose print
their progress to stderr unbuffered). stdout is discarded.

usage: compose_time.py OUT LABEL EXPECTED_RCS -- COMMAND [ARGS...]
EXPECTED_RCS: comma-separated exit codes that count as success (e.g. "0" or "0,2"); any other
code prints the captured stderr and exits 1, so the calling script stops."""
import json, os, subprocess, sys, time

out, label, expected = sys.argv[1], sys.argv[2], {int(c) for c in sys.argv[3].split(",")}
if sys.argv[4] != "--":
    sys.exit(__doc__)
cmd = sys.argv[5:]

lines = []
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
for raw in p.stderr:
    lines.append([round(time.monotonic() - t0, 6), raw.decode(errors="replace").rstrip("\n")])
_, status, ru = os.wait4(p.pid, 0)
wall = time.monotonic() - t0
rc = os.waitstatus_to_exitcode(status)
p.returncode = rc  # reaped by wait4 already
rec = {"label": label, "wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "maxrss_kib": ru.ru_maxrss,
       "rc": rc, "stderr": lines}
with open(out, "a") as f:
    f.write(json.dumps(rec) + "\n")
if rc not in expected:
    sys.stderr.write(f"{label}: {' '.join(cmd)} exited {rc}; stderr:\n")
    sys.stderr.write("".join(f"  {t:8.3f} {l}\n" for t, l in lines))
    sys.exit(1)
print(f"  {label}: wall {wall * 1e3:.1f} ms, cpu {(ru.ru_utime + ru.ru_stime) * 1e3:.1f} ms", file=sys.stderr)
