#!/usr/bin/env python3
"""Times one container start for the network benchmark: runs a `run -d -p ...` command and
polls a published port with HTTP GETs until the expected body comes back. Prints one JSON
line: {"returned": seconds until the command exited, "ready": seconds until the first good
answer}, both from just before the command was spawned.

usage: net_start.py [--netns PATH] [--after-return] HOST PORT EXPECT -- COMMAND...
The command runs in this process's network namespace; with --netns the polling thread enters
PATH's network namespace first (setns is per thread), e.g. a namespace playing an outside host.
Polling starts together with the command, or with --after-return once it has exited.

A new connection is opened every POLL_GAP while fewer than MAX_IN_FLIGHT are open, and one
that was accepted but has not answered yet is kept open (up to ATTEMPT_TIMEOUT) rather than
given up: a userland proxy accepts connections before the container can answer them, and a
poller that gave up on those after a fixed timeout would measure its own timeout. "ready" is
when any connection first gets the expected answer. NET_START_TRACE=1 logs every attempt.
"""
import ctypes, errno, json, os, selectors, socket, subprocess, sys, threading, time

CLONE_NEWNET = 0x40000000
POLL_GAP = 0.002
MAX_IN_FLIGHT = 32
ATTEMPT_TIMEOUT = 5.0
DEADLINE = 30.0
TRACE = os.environ.get("NET_START_TRACE") == "1"

args = sys.argv[1:]
netns, after_return = None, False
while args and args[0].startswith("--") and args[0] != "--":
    if args[0] == "--netns":
        netns, args = args[1], args[2:]
    elif args[0] == "--after-return":
        after_return, args = True, args[1:]
    else:
        sys.exit(f"unknown option {args[0]}")
host, port, expect = args[0], int(args[1]), args[2].encode()
assert args[3] == "--", "usage: net_start.py [--netns PATH] [--after-return] HOST PORT EXPECT -- COMMAND..."
command = args[4:]
REQUEST = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"

result = {}


def trace(t0, a, what):
    if TRACE:
        now = time.monotonic()
        print(f"{a['start'] - t0:.4f} +{now - a['start']:.4f} {what}", file=sys.stderr)


def poll(t0: float, started: threading.Event) -> None:
    if netns:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            result["error"] = f"setns {netns}: {os.strerror(ctypes.get_errno())}"
            return
        os.close(fd)
    started.wait()
    sel = selectors.DefaultSelector()
    open_attempts = {}  # socket -> attempt
    next_at = time.monotonic()

    def close(s):
        sel.unregister(s)
        del open_attempts[s]
        s.close()

    while time.monotonic() - t0 < DEADLINE:
        now = time.monotonic()
        if now >= next_at and len(open_attempts) < MAX_IN_FLIGHT:
            next_at = now + POLL_GAP
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            a = {"start": now, "body": b"", "sent": False}
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                trace(t0, a, os.strerror(rc))
                s.close()
            else:
                open_attempts[s] = a
                sel.register(s, selectors.EVENT_WRITE)
        timeout = max(0.0, next_at - time.monotonic())
        for key, ev in sel.select(timeout):
            s, a = key.fileobj, open_attempts[key.fileobj]
            if not a["sent"]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    trace(t0, a, os.strerror(err))
                    close(s)
                    continue
                try:
                    s.send(REQUEST)  # tiny: fits in the send buffer of a fresh socket
                except OSError as e:
                    trace(t0, a, f"send: {e}")
                    close(s)
                    continue
                a["sent"] = True
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                chunk = s.recv(4096)
            except OSError as e:
                trace(t0, a, f"recv: {e}")
                close(s)
                continue
            a["body"] += chunk
            if chunk and len(a["body"]) < 65536:
                continue
            trace(t0, a, f"closed after {len(a['body'])} bytes")
            if expect in a["body"]:
                result["ready"] = time.monotonic() - t0
                for other in list(open_attempts):
                    close(other)
                return
            close(s)
        for s, a in list(open_attempts.items()):
            if time.monotonic() - a["start"] > ATTEMPT_TIMEOUT:
                trace(t0, a, "timed out")
                close(s)
    result["error"] = f"no answer on {host}:{port} within {DEADLINE} s"


started = threading.Event()
t0 = time.monotonic()
proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
poller = threading.Thread(target=poll, args=(t0, started))
poller.start()
if not after_return:
    started.set()
try:
    _, err = proc.communicate()
finally:
    result["returned"] = time.monotonic() - t0
    started.set()
poller.join()
if proc.returncode != 0:
    sys.exit(f"{command} failed ({proc.returncode}): {err.decode(errors='replace')}")
if "error" in result:
    sys.exit(result["error"])
print(json.dumps(result))
