#!/usr/bin/python3
"""The memcached tier: a cluster that was fully stopped starts again with
its sessions, and a memcached server that goes away costs the nodes
nothing but a bounded, counted loss of backups.

    test_tier.py --sessnode PATH --sessctl PATH [--sessions N]

Two memcached servers (Debian's memcached, started here on loopback) form
the tier. Phase 1: three daemons with --tier (B and C joined through A)
take N sessions (10,000 by default) written round-robin through the three,
with expiries of one hour and, for every tenth, two hours; 100 of them are
then deleted. memcached holds a copy of each live session (each node keeps
its own, under "sn:NODE:ID") with the session's remaining lifetime as
expiry, and of a deleted session at most its tombstone. Every daemon is stopped (SIGTERM;
each writes what it has queued first). Phase 2: one new daemon D with the
tier and no peer loads every session from it: every session with its data,
no deleted one, each with its remaining lifetime (TTL from `mg KEY t`
within the time elapsed since the write). Phase 3: with --tier-queue 1000,
one memcached server is killed while D takes 5,000 more writes: every
write is served, the queue never holds more than 1,000, and the stats
count failures and dropped backups. The server restarts on its port:
backups resume (tier_writes grows, the queue drains to 0). Phase 4: D
takes 2,000 writes and is stopped at once (SIGTERM): a new daemon E alone
with the tier holds all of them (the queue is written before exit).
Phase 5: H (--tier-queue-mb 1) takes 1,200 writes of 4 KiB while one
server is away: the queued copies stay within 1 MiB while more sessions
wait, the queue drains once the server is back, and a new daemon I alone with the
tier holds every one with its data (those past the bound were read from
the store when written). Phase 6: F (--max-memory 4 --tier-read-through) and G (the same without
read-through) each take 4,000 sessions of 2 KiB, and evict most: F
serves every one (from the tier, counted in tier_read_hits), G misses
those it evicted, and a key never written is a miss on F after one
lookup in the tier. Phase 7: one memcached server is stopped (SIGSTOP:
its connections stay open and take nothing once the sockets' buffers are
full) while J takes 600 writes of 64 KiB: every write is served without
waiting, the stall is counted as a failure, and once the server runs
again (SIGCONT) J's queue drains with nothing dropped and a new daemon K
alone with the tier holds every one.

The harness (time limit, cleanup by PID, sanitizer checks of the
daemons' logs, the summary) is test_cluster.py's.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cluster as tc  # noqa: E402

HOUR = 3600


class Memcached:
    def __init__(self, port):
        self.port = port
        args = [shutil.which("memcached") or "/usr/bin/memcached", "-l", "127.0.0.1",
                "-p", str(port), "-U", "0", "-m", "256", "-c", "1024"]
        if os.geteuid() == 0:
            args += ["-u", "memcache" if _user_exists("memcache") else "nobody"]
        tc.log("start memcached on %d" % port)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("memcached on %d did not start" % port)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self, on):
        """SIGSTOP (on) or SIGCONT: a server that takes no more bytes."""
        self.proc.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def dump(self):
        """{key: exp} from `lru_crawler metadump all`."""
        s = socket.create_connection(("127.0.0.1", self.port), 5)
        s.sendall(b"lru_crawler metadump all\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
        s.close()
        out = {}
        for line in buf.decode("ascii", "replace").splitlines():
            f = dict(x.split("=", 1) for x in line.split() if "=" in x)
            if "key" in f:   # URL-encoded in the dump
                out[urllib.parse.unquote(f["key"])] = int(f.get("exp", "0"))
        return out


def _user_exists(name):
    try:
        import pwd
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ttl(node, key):
    """The TTL a daemon reports for key (`mg KEY t`), or None."""
    s = socket.create_connection(("127.0.0.1", node.port), 5)
    s.sendall(b"mg %s t\r\n" % key.encode())
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        line += chunk
    s.close()
    f = line.split()
    if f and f[0] == b"HD":
        for flag in f[1:]:
            if flag.startswith(b"t"):
                return int(flag[1:])
    return None


def stats(node):
    st = node.client().stats()
    return {k.decode(): v for k, v in st.items() if k.startswith(b"tier_")}


def poll_stat(node, name, pred, timeout):
    end = time.monotonic() + timeout
    while True:
        st = stats(node)
        if pred(st[name]) or time.monotonic() >= end:
            return pred(st[name]), st


def run(args, tmp, daemons, checks):
    mcs = [Memcached(tc.free_port()), Memcached(tc.free_port())]
    try:
        body(args, tmp, daemons, checks, mcs)
    finally:
        for m in mcs:
            m.kill()


def body(args, tmp, daemons, checks, mcs):
    tier = ",".join("127.0.0.1:%d" % m.port for m in mcs)

    def start(name, join=(), extra=()):
        d = tc.Daemon(args.sessnode, tmp, name, join, ["--tier", tier] + list(extra))
        daemons.append(d)
        d.wait_port()
        return d

    def stop(n):
        status = n.signal_and_wait(signal.SIGTERM, 30)
        checks.record("%s stops with status 0" % n.name, status == 0, "status %s" % status)

    def stop_then_restore(old, name, written, what):
        """Stops `old`; a new daemon `name`, alone with the tier, holds
        `written` (its bootstrap); then it stops too."""
        stop(old)
        n = start(name)
        checks.record("%s, alone with the tier, holds every write %s" % (name, what),
                      *tc.compare(n, written, []))
        stop(n)

    tc.log("phase 1: three daemons with the tier take %d sessions" % args.sessions)
    a = start("A")
    b = start("B", [a])
    c = start("C", [a])
    nodes = [a, b, c]
    expected, lifetime = {}, {}
    written_at = time.time()
    for i in range(args.sessions):
        key = "s-%05d" % i
        value = ("session %d " % i).encode() * (1 + i % 7)
        life = 2 * HOUR if i % 10 == 0 else HOUR
        expected[key] = (value, 0)
        lifetime[key] = life
    bad = 0
    for i, key in enumerate(sorted(expected)):
        if not nodes[i % 3].client().set(key, expected[key][0], expire=lifetime[key]):
            bad += 1
    checks.record("%d sessions written through A, B and C" % args.sessions, bad == 0,
                  "%d refused" % bad)
    deleted = ["s-%05d" % i for i in range(0, args.sessions, args.sessions // 100)][:100]
    gone = sum(1 for i, k in enumerate(deleted) if nodes[i % 3].client().delete(k, noreply=False))
    checks.record("100 of them deleted", gone == len(deleted), "%d deleted" % gone)
    for k in deleted:
        del expected[k]
    for n in nodes:
        ok, st = poll_stat(n, "tier_queue", lambda q: q == 0, 60)
        checks.record("%s's tier queue drains" % n.name, ok, str(st))
    total = sum(stats(n)["tier_writes"] for n in nodes)
    # (a session deleted before its first backup is only deleted there)
    checks.record("the nodes wrote every live session to the tier", total >= len(expected),
                  "tier_writes summed: %d" % total)
    dumps = {}
    for m in mcs:
        dumps.update(m.dump())
    # each node keeps its own copies: "sn:NODE:ID"
    copies = {}
    for key, exp in dumps.items():
        if key.startswith("sn:") and key.count(":") >= 2:
            copies.setdefault(key.split(":", 2)[2], []).append(exp)
    missing = [k for k in expected if k not in copies]
    checks.record("the tier holds a copy of every live session", not missing,
                  "%d copies of %d sessions; %d sessions missing" % (
                      sum(map(len, copies.values())), len(copies), len(missing)))
    extra = [k for k in deleted if len(copies.get(k, ())) > 1]
    checks.record("a deleted session keeps one copy at most (its tombstone)", not extra,
                  "%d deleted sessions with more" % len(extra))
    now = time.time()
    off = [k for k in expected if k in copies and any(
        abs(e - (written_at + lifetime[k])) > (now - written_at) + 5 for e in copies[k])]
    checks.record("memcached expires each copy with its session's lifetime", not off,
                  "%d off; first %s: exp %s, want about %d" % (
                      len(off), off[0] if off else "-",
                      copies[off[0]] if off else "-",
                      written_at + lifetime[off[0]] if off else 0))

    tc.log("phase 2: stop every node; a new one with the tier alone")
    for n in nodes:
        stop(n)
    d = start("D", (), ["--tier-queue", "1000"])
    st = stats(d)
    checks.record("D loaded the sessions from the tier",
                  st["tier_boot_sessions"] == len(expected), str(st))
    if st["tier_boot_ms"]:
        rate = st["tier_boot_sessions"] * 1000.0 / st["tier_boot_ms"]
        tc.log("bootstrap: %d sessions in %d ms (%.0f sessions/s)" % (
            st["tier_boot_sessions"], st["tier_boot_ms"], rate))
    checks.record("D holds every session with its data, no deleted one",
                  *tc.compare(d, expected, deleted))
    elapsed = time.time() - written_at
    wrong = []
    for k in sorted(expected)[:: max(1, len(expected) // 300)]:
        t = ttl(d, k)
        if t is None or not (lifetime[k] - elapsed - 5 <= t <= lifetime[k]):
            wrong.append((k, t, lifetime[k]))
    checks.record("each session keeps its remaining lifetime", not wrong,
                  "%d wrong of those sampled; first %s" % (len(wrong), wrong[:1]))

    tc.log("phase 3: one memcached server killed under write load, then back")
    before = stats(d)
    mcs[1].kill()
    more = {"more-%05d" % i: (b"more %d" % i, 0) for i in range(5000)}
    peak = 0
    refused = 0
    cl = d.client()
    for i, (k, (v, f)) in enumerate(sorted(more.items())):
        if not cl.set(k, v, expire=HOUR):
            refused += 1
        if i % 250 == 0:
            peak = max(peak, stats(d)["tier_queue"])
    time.sleep(1.0)
    st = stats(d)
    peak = max(peak, st["tier_queue"])
    checks.record("D serves every write while a tier server is down", refused == 0,
                  "%d refused" % refused)
    checks.record("the tier queue stays within --tier-queue", peak <= 1000,
                  "largest seen %d" % peak)
    checks.record("failures and dropped backups are counted",
                  st["tier_failures"] > before["tier_failures"] and
                  st["tier_dropped"] > before["tier_dropped"], str(st))
    checks.record("D still reads what it holds", *tc.compare(d, dict(list(more.items())[:500]), []))
    mcs[1] = Memcached(mcs[1].port)
    written = st["tier_writes"]
    ok, st2 = poll_stat(d, "tier_queue", lambda q: q == 0, 60)
    checks.record("the queue drains once the server is back", ok, str(st2))
    checks.record("backups resume", st2["tier_writes"] > written,
                  "tier_writes %d -> %d" % (written, st2["tier_writes"]))
    d.client().set("after-restart", b"back up", expire=HOUR)
    ok, st3 = poll_stat(d, "tier_queue", lambda q: q == 0, 30)
    held = {}
    for m in mcs:
        held.update(m.dump())
    checks.record("a write after the restart reaches the tier",
                  any(k.endswith(":after-restart") for k in held),
                  "%d keys in the tier" % len(held))

    tc.log("phase 4: writes queued at SIGTERM are written before the daemon exits")
    final = {"final-%04d" % i: (b"last words %d" % i, 0) for i in range(2000)}
    checks.record("2000 sets on D", *tc.store_all(d, final, expire=HOUR))
    stop_then_restore(d, "E", final, "D took before it stopped")

    tc.log("phase 5: past --tier-queue-mb, sessions wait without their copies")
    # H holds the copies of its queued sessions in 1 MiB; with one server
    # away, the writes the ring puts on it wait: about half of 1,200 writes
    # of 4 KiB (some 2.4 MB of copies; the share moves with the servers'
    # ports, and 600 writes once left 247 waiting, under 1 MiB), so those
    # past the bound wait without one and are read from the store when
    # written: the tier still gets every one, with its data
    mcs[1].kill()
    h = start("H", extra=["--tier-queue-mb", "1"])
    big = {"big-%04d" % i: (b"%04d" % i * 1024, 0) for i in range(1200)}
    checks.record("1200 sets of 4 KiB on H with a tier server away",
                  *tc.store_all(h, big, expire=HOUR))
    time.sleep(0.5)
    st = stats(h)
    checks.record("the copies stay within --tier-queue-mb while more wait",
                  0 < st["tier_queue_bytes"] <= 1 << 20 and
                  st["tier_queue"] * 4095 > 1 << 20, str(st))
    mcs[1] = Memcached(mcs[1].port)
    ok, st = poll_stat(h, "tier_queue", lambda q: q == 0, 60)
    checks.record("H's queue drains once the server is back, nothing dropped",
                  ok and st["tier_dropped"] == 0 and st["tier_queue_bytes"] == 0, str(st))
    stop_then_restore(h, "I", big, "H took")

    tc.log("phase 6: read-through brings back sessions evicted by --max-memory")
    # F reads through, G (the control) does not; each holds 4 MiB, so most
    # of the 4,000 sessions of 2 KiB written to it are evicted, long after
    # their backup was written (the queue is written every 20 ms)
    f = start("F", extra=["--max-memory", "4", "--tier-read-through"])
    g = start("G", extra=["--max-memory", "4"])
    many = {"rt-%04d" % i: (b"%05d" % i * 400, 0) for i in range(4000)}
    for n in (f, g):
        checks.record("4000 sets on %s" % n.name, *tc.store_all(n, many, expire=HOUR))
        ok, st = poll_stat(n, "tier_queue", lambda q: q == 0, 60)
        checks.record("%s's tier queue drains" % n.name, ok, str(st))
    evicted = {n.name: int(n.client().stats()[b"evictions"]) for n in (f, g)}
    checks.record("both evicted sessions", min(evicted.values()) > 0, str(evicted))
    before = stats(f)
    checks.record("F serves every session, the evicted ones from the tier",
                  *tc.compare(f, many, []))
    after = stats(f)
    hits = after["tier_read_hits"] - before["tier_read_hits"]
    checks.record("F counts the sessions it read through", hits > 0,
                  "tier_reads %d -> %d, tier_read_hits %d -> %d" % (
                      before["tier_reads"], after["tier_reads"],
                      before["tier_read_hits"], after["tier_read_hits"]))
    ok, why = tc.compare(g, many, [])
    checks.record("G, without read-through, misses the sessions it evicted", not ok, why)
    c = f.client()
    reads = stats(f)["tier_reads"]
    got = c.get("rt-never-written")
    st = stats(f)
    checks.record("a session the tier never held is still a miss, looked up once",
                  got is None and st["tier_reads"] == reads + 1 and
                  st["tier_read_hits"] == after["tier_read_hits"],
                  "got %r; tier_reads %d -> %d" % (got, reads, st["tier_reads"]))
    for n in (f, g):
        stop(n)

    tc.log("phase 7: a memcached server that stops reading, under write load")
    # SIGSTOP: the server's connections stay open but take nothing once the
    # sockets' buffers are full (a few MB each way on loopback); the ring
    # sends it about half of 600 copies of 64 KiB, some 19 MB
    j = start("J")
    mcs[0].pause(True)
    try:
        blobs = {"blob-%03d" % i: (b"%03d" % i * 21845 + b"x", 0) for i in range(600)}
        t0 = time.monotonic()
        checks.record("600 sets of 64 KiB on J with a tier server stopped",
                      *tc.store_all(j, blobs, expire=HOUR))
        took = time.monotonic() - t0
        checks.record("J's writes do not wait for the stopped server", took < 5,
                      "%.1f s" % took)
        ok, st = poll_stat(j, "tier_failures", lambda f: f > 0, 30)
        checks.record("a server that takes nothing for a second counts as failed", ok, str(st))
    finally:
        mcs[0].pause(False)
    ok, st = poll_stat(j, "tier_queue", lambda q: q == 0, 60)
    checks.record("J's queue drains once the server reads again, nothing dropped",
                  ok and st["tier_dropped"] == 0 and st["tier_queue_bytes"] == 0, str(st))
    stop_then_restore(j, "K", blobs, "J took")


def add_args(ap):
    pass


if __name__ == "__main__":
    sys.exit(tc.main(run, __doc__, add_args))
