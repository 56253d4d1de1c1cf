#!/usr/bin/python3
"""End-to-end replication through the memcached front: four sessnode
daemons on loopback, driven with pymemcache (Debian's python3-pymemcache,
text protocol) and checked with sessctl.

    test_cluster.py --sessnode PATH --sessctl PATH [--sessions N] [--seed S]

Three daemons A, B, C join, each given one seed; N sessions set on A are read back on B and C;
sets on B reach A and C; deletes on C reach everyone; A is killed with
SIGKILL and B and C still serve every session; a fourth daemon D joins
through B alone and serves every session, C's later writes included; D
answers multi-gets whose replies (4.3 MB) pass the connection's output
bound, each whole, on one connection; `sessctl --json members` on B sees A dead and D
alive; flush_all on B empties every node; SIGTERM makes C leave gracefully.

Replication is asynchronous, so every remote read polls until a deadline.
Each check prints one line; a summary closes the run. Exit 0 when every
check passed, 1 otherwise, 77 when pymemcache is missing.

Run time is bounded by an alarm inside (--time-limit) and by the `timeout`
the ctest command line wraps around it; every daemon started is killed by
its PID on the way out and the temporary directory removed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

try:
    from pymemcache.client.base import Client
except ImportError:
    print("SKIP: pymemcache is missing (Debian package python3-pymemcache; "
          "run this with /usr/bin/python3)")
    sys.exit(77)


T0 = time.monotonic()


def log(msg):
    print("%7.2fs %s" % (time.monotonic() - T0, msg), flush=True)


class Deadline(BaseException):
    """The run's time limit or a signal: not an Exception, so that the
    retry loops, which take any Exception as "not yet", let it through."""


# ---------------------------------------------------------------- ports

_taken = set()


def _port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    """A port P with P and P+1 free on 127.0.0.1, below the kernel's
    ephemeral range so that no outgoing connection holds it."""
    rng = random.SystemRandom()
    for _ in range(500):
        p = rng.randrange(20000, 32000)
        if {p - 1, p, p + 1} & _taken:
            continue
        if _port_free(p) and _port_free(p + 1):
            _taken.update({p, p + 1})
            return p
    raise RuntimeError("no free port pair found")


# ---------------------------------------------------------------- daemons

class Daemon:
    def __init__(self, exe, tmp, name, join=(), extra=(), ports=None):
        """extra: more flags; ports: (client, cluster) to restart a daemon
        where it ran before (its log is then appended to)."""
        self.name = name
        self.port, self.cport = ports if ports else (free_port(), free_port())
        self.addr = "127.0.0.1:%d" % self.cport
        self.log_path = os.path.join(tmp, name + ".log")
        args = [exe, "--listen", "127.0.0.1:%d" % self.port,
                "--cluster", self.addr, "--name", name] + list(extra)
        if join:
            args += ["--join", ",".join(d.addr for d in join)]
        log("start %s: %s" % (name, " ".join(
            [os.path.basename(exe)] + args[1:])))
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf)
        self._client = None

    def alive(self):
        return self.proc.poll() is None

    def wait_port(self, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError("%s exited with status %s before accepting "
                                   "connections" % (self.name, self.proc.returncode))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not accept connections on 127.0.0.1:%d "
                           "within %.0f s" % (self.name, self.port, timeout))

    def client(self):
        if self._client is None:
            self._client = Client(("127.0.0.1", self.port), serde=RawSerde(),
                                  connect_timeout=3, timeout=10,
                                  no_delay=True, default_noreply=False)
        return self._client

    def drop_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def signal_and_wait(self, sig, timeout=15.0):
        """Returns the exit status, or None if it did not exit in time."""
        self.drop_client()
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        self.drop_client()
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        return lines[-n:]

    def sanitizer_reports(self):
        bad = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
               "runtime error:", "WARNING: ThreadSanitizer")
        return [l for l in self.log_tail(100000) if any(b in l for b in bad)]


class RawSerde:
    """Values stay bytes; reads return (value, flags) so flags are checked."""

    def serialize(self, key, value):
        return value, 0

    def deserialize(self, key, value, flags):
        return value, flags


# ---------------------------------------------------------------- checks

class Checks:
    def __init__(self):
        self.results = []

    def record(self, name, ok, detail=""):
        self.results.append((name, ok, detail))
        log("%s: %s%s" % ("PASS" if ok else "FAIL", name,
                          " (" + detail + ")" if detail else ""))
        return ok

    def failed(self):
        return [r for r in self.results if not r[1]]


def compare(node, expected, absent, batch=100):
    """Reads every key of `expected` and `absent` on node. Returns
    (ok, summary)."""
    c = node.client()
    missing = wrong = present = 0
    first_bad = None
    keys = list(expected)
    for i in range(0, len(keys), batch):
        chunk = keys[i:i + batch]
        got = c.get_many(chunk)
        for k in chunk:
            if k not in got:
                missing += 1
                first_bad = first_bad or "%s missing" % k
            elif got[k] != expected[k]:
                wrong += 1
                first_bad = first_bad or "%s differs (%d bytes, flags %d)" % (
                    k, len(got[k][0]), got[k][1])
    gone = list(absent)
    for i in range(0, len(gone), batch):
        got = c.get_many(gone[i:i + batch])
        present += len(got)
        if got and not first_bad:
            first_bad = "%s still present" % next(iter(got))
    ok = missing == 0 and wrong == 0 and present == 0
    summary = "%d/%d match" % (len(expected) - missing - wrong, len(expected))
    if absent:
        summary += ", %d/%d deleted keys absent" % (len(absent) - present, len(absent))
    if not ok:
        summary += "; %d missing, %d wrong, %d not deleted; first: %s" % (
            missing, wrong, present, first_bad)
    return ok, summary


def poll_compare(node, expected, absent, timeout):
    """Polls compare() until it holds or `timeout` seconds pass."""
    start = time.monotonic()
    end = start + timeout
    while True:
        try:
            ok, summary = compare(node, expected, absent)
        except Exception as e:  # a refused connection counts as not yet
            node.drop_client()
            ok, summary = False, "read failed: %r" % (e,)
        if ok or time.monotonic() >= end:
            return ok, "%s, after %.2f s" % (summary, time.monotonic() - start)
        time.sleep(0.2)


# ---------------------------------------------------------------- sessctl

def stacks(pid):
    """Every thread's stack of a process that should have ended, from gdb
    (empty without it): what a hang waits on, for the failure's line."""
    if not shutil.which("gdb"):
        return ""
    try:
        g = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx",
                            "-ex", "thread apply all bt"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return ""
    lines = g.stdout.decode("utf-8", "replace").splitlines()
    return "\n".join(l for l in lines if l.startswith(("#", "Thread")))


def sessctl(exe, node, *args, timeout_ms=2000):
    cmd = [exe, "--node", node.addr, "--timeout", str(timeout_ms)] + list(args)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout_ms / 1000.0 + 10)
    except subprocess.TimeoutExpired:
        where = stacks(p.pid)
        p.kill()
        p.communicate()
        return None, "", "sessctl did not return" + (
            "; its threads:\n" + where if where else "")
    return (p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def members(exe, node):
    """{name: state} from `sessctl --json members`, the node itself included
    as 'self'; None when the command fails. Peers are matched by name, or
    by address when a row has no name."""
    rc, out, err = sessctl(exe, node, "--json", "members")
    if rc != 0:
        return None, "exit %s: %s" % (rc, err.strip())
    try:
        doc = json.loads(out)
        res = {doc["node"]["name"]: doc["node"]["state"]}
        for m in doc["members"]:
            res[m.get("name") or m.get("address")] = m["state"]
        return res, out
    except (ValueError, KeyError, TypeError) as e:
        return None, "bad JSON (%s): %s" % (e, out[:300])


def poll_members(exe, node, want, timeout):
    """Polls until every name in `want` has the wanted state (a state may
    be a tuple of acceptable ones). Returns (ok, detail)."""
    start = time.monotonic()
    end = start + timeout
    last = None
    while True:
        got, raw = members(exe, node)
        if got is not None:
            last = got
            bad = {n: got.get(n) for n, s in want.items()
                   if got.get(n) not in (s if isinstance(s, tuple) else (s,))}
            if not bad:
                return True, "%s after %.2f s" % (
                    ", ".join("%s %s" % (n, got[n]) for n in sorted(want)),
                    time.monotonic() - start)
        else:
            last = raw
        if time.monotonic() >= end:
            return False, "after %.0f s: %s" % (timeout, last)
        time.sleep(0.25)


# ---------------------------------------------------------------- the run

def make_sessions(rng, prefix, n, big_every=100):
    out = {}
    for i in range(n):
        size = rng.randrange(40, 2000)
        if big_every and i % big_every == big_every - 1:
            size = rng.randrange(50000, 200000)   # a few large carts
        value = rng.randbytes(size)
        out["%s%05d" % (prefix, i)] = (value, rng.randrange(0, 1 << 32))
    return out


def store_all(node, items, expire=0):
    c = node.client()
    bad = [k for k, (v, f) in items.items()
           if not c.set(k, v, expire=expire, flags=f)]
    return not bad, "%d sets on %s, %d refused%s" % (
        len(items), node.name, len(bad), (": first " + bad[0]) if bad else "")


def run(args, tmp, daemons, checks):
    rng = random.Random(args.seed)
    exe = args.sessnode

    def start(name, join=()):
        d = Daemon(exe, tmp, name, join)
        daemons.append(d)
        d.wait_port()
        return d

    log("phase 1: three daemons, each given one seed")
    a = start("A")
    b = start("B", [a])
    c = start("C", [a])   # meets B through A's member list
    everyone = {"A": "self", "B": "alive", "C": "alive"}
    for n in (a, b, c):
        want = {k: ("self" if k == n.name else "alive") for k in everyone}
        checks.record("%s lists the three members" % n.name,
                      *poll_members(args.sessctl, n, want, 15))

    log("phase 2: %d sessions set on A" % args.sessions)
    expected = make_sessions(rng, "sess:", args.sessions)
    checks.record("sets on A", *store_all(a, expected))
    checks.record("A reads its own sets", *compare(a, expected, ()))
    for n in (b, c):
        checks.record("A's sets read on %s" % n.name,
                      *poll_compare(n, expected, (), args.repl_timeout))

    log("phase 3: sets on B (new sessions and overwrites)")
    from_b = make_sessions(rng, "b:", 100, big_every=0)
    overwrite = {k: (rng.randbytes(300), 7) for k in list(expected)[:100]}
    from_b.update(overwrite)
    checks.record("sets on B", *store_all(b, from_b))
    expected.update(from_b)
    for n in (a, c):
        checks.record("B's sets read on %s" % n.name,
                      *poll_compare(n, expected, (), args.repl_timeout))

    log("phase 4: deletes on C")
    deleted = list(expected)[100:150]
    cc = c.client()
    refused = [k for k in deleted if not cc.delete(k)]
    checks.record("deletes on C", not refused,
                  "%d deletes, %d NOT_FOUND" % (len(deleted), len(refused)))
    for k in deleted:
        del expected[k]
    for n in (a, b, c):
        checks.record("C's deletes seen on %s" % n.name,
                      *poll_compare(n, expected, deleted, args.repl_timeout))

    log("phase 5: a counter incremented on every node in turn")
    a.client().set("ctr", b"0", flags=0)
    ok, detail = True, ""
    for i, n in enumerate((a, b, c, a, b, c)):
        # Each increment must start from the previous one's value: wait
        # until the previous node's write has arrived here.
        want = {"ctr": (str(i).encode(), 0)}
        ok, detail = poll_compare(n, want, (), args.repl_timeout)
        if not ok:
            detail = "before incr %d on %s: %s" % (i + 1, n.name, detail)
            break
        got = n.client().incr("ctr", 1)
        if got != i + 1:
            ok, detail = False, "incr %d on %s returned %r" % (i + 1, n.name, got)
            break
    if ok:
        ok, detail = poll_compare(a, {"ctr": (b"6", 0)}, (), args.repl_timeout)
    checks.record("incr on A, B, C in turn counts to 6", ok, detail)
    expected["ctr"] = (b"6", 0)

    key = next(iter(expected))
    rc, out, err = sessctl(args.sessctl, b, "--json", "session", key)
    try:
        doc = json.loads(out) if rc == 0 else None
    except ValueError:
        doc = None
    checks.record("sessctl --json session %s on B prints JSON" % key,
                  isinstance(doc, dict),
                  "exit %s%s" % (rc, (": " + (err or out).strip()[:200]) if doc is None else ""))

    log("phase 6: kill -9 A")
    # Every session reached B and C above; a crash of A must not take any.
    killed_at = time.monotonic()
    a.signal_and_wait(signal.SIGKILL, 5)
    for n in (b, c):
        checks.record("%s serves every session after A's crash" % n.name,
                      *poll_compare(n, expected, deleted, 2))

    log("phase 7: D joins through B alone")
    d = start("D", [b])   # C learns of D from B's member list, and D of C
    checks.record("D serves every session after its join",
                  *poll_compare(d, expected, deleted, args.join_timeout))
    ok, detail = poll_members(args.sessctl, b, {"A": "dead", "D": "alive"},
                              max(1.0, 15 - (time.monotonic() - killed_at)))
    checks.record("B's members show A dead and D alive", ok,
                  detail + "; A killed %.1f s before" % (time.monotonic() - killed_at))
    checks.record("C's members show D alive (learned from B)",
                  *poll_members(args.sessctl, c, {"D": "alive"}, 10))
    rc, out, err = sessctl(args.sessctl, b, "members")
    lines = out.splitlines()
    ok = (rc == 0 and lines and lines[0].split() ==
          ["NAME", "ADDRESS", "STATE", "LAST-HEARD", "SESSIONS", "LAG"]
          and any(l.split()[:1] == ["D"] for l in lines[1:]))
    checks.record("sessctl members on B prints the table with D", bool(ok),
                  "exit %s, %d lines%s" % (rc, len(lines),
                                           "" if ok else ": " + (out + err)[:300]))

    log("phase 8: writes after the failover")
    from_d = make_sessions(rng, "d:", 50, big_every=0)
    checks.record("sets on D", *store_all(d, from_d))
    from_c = make_sessions(rng, "c:", 50, big_every=0)
    checks.record("sets on C", *store_all(c, from_c))
    expected.update(from_d)
    expected.update(from_c)
    for n in (b, c, d):
        checks.record("every session on %s after writes on C and D" % n.name,
                      *poll_compare(n, expected, deleted, args.repl_timeout))

    log("phase 8b: multi-gets whose replies pass the output bound, on D")
    # each reply (66 values of 64 KiB, 4.3 MB) passes the 4 MiB at which a
    # connection stops taking requests until its output drains; a socket
    # that took such a reply at once used to leave the connection paused
    # for good, its next request never read (replies just over the bound
    # hit it within a few requests)
    blobs = {"blob-%03d" % i: (b"%03d" % i * 21845 + b"x", 0) for i in range(66)}
    checks.record("66 sets of 64 KiB on D", *store_all(d, blobs))
    answered, why = 0, ""
    try:
        for _ in range(20):
            ok, why = compare(d, blobs, (), batch=66)
            if not ok:
                break
            answered += 1
    except (OSError, TimeoutError) as e:
        why = "%s: %s" % (type(e).__name__, e)
        d.drop_client()
    checks.record("20 multi-gets of 4.3 MB on one connection, each answered whole",
                  answered == 20, "%d answered%s" % (
                      answered, ("; then " + why) if answered < 20 else ""))

    log("phase 9: flush_all on B")
    checks.record("flush_all on B", b.client().flush_all(noreply=False) is True)
    gone = list(expected) + deleted
    for n in (b, c, d):
        checks.record("%s empty after the flush" % n.name,
                      *poll_compare(n, {}, gone, args.repl_timeout))
    # A set that follows the flush must live on: the flush is no tombstone
    # for later writes.
    after = {"after-flush": (b"alive", 3)}
    checks.record("set on B after the flush", *store_all(b, after))
    for n in (c, d):
        checks.record("the post-flush set read on %s" % n.name,
                      *poll_compare(n, after, (), args.repl_timeout))

    log("phase 10: SIGTERM on C (graceful leave)")
    status = c.signal_and_wait(signal.SIGTERM, 15)
    checks.record("C exits with status 0 on SIGTERM", status == 0,
                  "status %s" % status)
    checks.record("B's members show C left",
                  *poll_members(args.sessctl, b, {"C": "left", "D": "alive"}, 10))

    log("phase 11: sessctl errors")
    gone_node = Daemon.__new__(Daemon)
    gone_node.addr = a.addr      # A is dead: nobody answers there
    rc, out, err = sessctl(args.sessctl, gone_node, "members", timeout_ms=1000)
    checks.record("sessctl on a dead node exits 1 with a message",
                  rc == 1 and err.strip() != "", "exit %s, stderr %r" % (rc, err.strip()[:120]))
    rc, out, err = sessctl(args.sessctl, b, "no-such-command")
    checks.record("sessctl with an unknown command exits 2", rc == 2,
                  "exit %s" % rc)

    log("phase 12: SIGTERM on B and D")
    for n in (b, d):
        status = n.signal_and_wait(signal.SIGTERM, 15)
        checks.record("%s exits with status 0 on SIGTERM" % n.name, status == 0,
                      "status %s" % status)


def main(run=run, doc=__doc__, add_args=None):
    """The harness: arguments, the time limit, cleanup of every daemon by
    PID, sanitizer checks of their logs and the summary; `run` is the
    test's body and `add_args` adds arguments (test_membership.py and
    partition_driver.py bring their own)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--sessnode", required=True)
    ap.add_argument("--sessctl", required=True)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--repl-timeout", type=float, default=30.0,
                    help="seconds a write may take to reach every node")
    ap.add_argument("--join-timeout", type=float, default=60.0)
    ap.add_argument("--time-limit", type=int, default=270,
                    help="the whole run, in seconds")
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    for exe in (args.sessnode, args.sessctl):
        if not os.access(exe, os.X_OK):
            print("FAIL: %s is not an executable" % exe)
            return 1
    log("seed %d (replay with --seed %d)" % (args.seed, args.seed))

    def on_alarm(signum, frame):
        raise Deadline("the run took longer than %d s" % args.time_limit)

    def on_term(signum, frame):
        raise Deadline("stopped by signal %d" % signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(args.time_limit)

    checks = Checks()
    daemons = []
    tmp = tempfile.mkdtemp(prefix="sn-daemon-test.")
    error = None
    try:
        run(args, tmp, daemons, checks)
    except (Deadline, Exception) as e:  # report, then clean up below
        error = "%s: %s" % (type(e).__name__, e)
        log("ERROR: " + error)
        traceback.print_exc(file=sys.stdout)
    finally:
        signal.alarm(0)
        for d in daemons:
            d.kill()
    for d in daemons:
        reports = d.sanitizer_reports()
        if reports:
            checks.record("%s's log is free of sanitizer reports" % d.name,
                          False, reports[0][:200])
    failed = checks.failed()
    if failed or error:
        for d in daemons:
            print("----- last lines of %s's log -----" % d.name)
            for line in d.log_tail():
                print(line)
    shutil.rmtree(tmp, ignore_errors=True)

    print("==== summary: %d checks, %d passed, %d failed%s (seed %d) ====" % (
        len(checks.results), len(checks.results) - len(failed), len(failed),
        ", run aborted: " + error if error else "", args.seed))
    for name, ok, detail in failed:
        print("FAILED: %s (%s)" % (name, detail))
    return 1 if failed or error else 0


if __name__ == "__main__":
    sys.exit(main())
