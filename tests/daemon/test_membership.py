#!/usr/bin/python3
"""Membership and failure detection across five sessnode daemons on
loopback, checked with `sessctl --json members` on every node.

    test_membership.py --sessnode PATH --sessctl PATH

A starts alone; B, C, D and E are each given A alone as their seed, and
every node comes to list every other as alive (they meet through A's
member list). C is killed with SIGKILL: every other node lists it dead
within --dead-after (plus one poll of slack), having listed it suspect
first where a poll caught it. C restarts on the same ports, a new
process, and every node lists it alive again; it serves a session written
while it was down. D stops on SIGTERM: every other node lists it left and
closes its connections to it; D restarts on its ports, seeded with A, and
every node lists it alive again and sends it a new write.

The daemons run with --suspect-after 1000 --dead-after 3000 (the
defaults, given explicitly so the bound checked here is the one
configured). The harness (time limit, cleanup by PID, sanitizer checks of
the daemons' logs, the summary) is test_cluster.py's.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cluster as tc  # noqa: E402

SUSPECT_MS = 1000
DEAD_MS = 3000
POLL_S = 0.25


def states(args, node):
    got, raw = tc.members(args.sessctl, node)
    return got


def stat(args, node, name):
    rc, out, err = tc.sessctl(args.sessctl, node, "stats")
    for line in out.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] == name:
            return int(f[1])
    return None


def run(args, tmp, daemons, checks):
    flags = ["--suspect-after", str(SUSPECT_MS), "--dead-after", str(DEAD_MS)]

    def start(name, join=(), ports=None):
        d = tc.Daemon(args.sessnode, tmp, name, join, flags, ports)
        daemons.append(d)
        d.wait_port()
        return d

    def all_alive(when):
        for n in nodes:
            want = {k: ("self" if k == n.name else "alive") for k in names}
            checks.record("%s lists all five alive %s" % (n.name, when),
                          *tc.poll_members(args.sessctl, n, want, 15))

    tc.log("phase 1: A alone, then B, C, D, E each with A as their only seed")
    a = start("A")
    nodes = [a] + [start(n, [a]) for n in "BCDE"]
    names = [n.name for n in nodes]
    for n in nodes:
        want = {k: ("self" if k == n.name else "alive") for k in names}
        checks.record("%s lists all five alive" % n.name,
                      *tc.poll_members(args.sessctl, n, want, 15))
    learned = sum(stat(args, n, "members_learned") or 0 for n in nodes[1:])
    checks.record("the seeded nodes met through member lists", learned >= 3,
                  "members_learned summed over B-E: %d" % learned)

    tc.log("phase 2: kill -9 C")
    c = nodes[2]
    others = [n for n in nodes if n is not c]
    c.signal_and_wait(signal.SIGKILL, 5)
    killed = time.monotonic()
    dead_at = {}
    seen_suspect = set()
    end = killed + DEAD_MS / 1000.0 + 10
    while len(dead_at) < len(others) and time.monotonic() < end:
        for n in others:
            if n.name in dead_at:
                continue
            st = (states(args, n) or {}).get("C")
            if st == "suspect":
                seen_suspect.add(n.name)
            elif st == "dead":
                dead_at[n.name] = time.monotonic() - killed
        time.sleep(POLL_S)
    # a poll is one sessctl per node: allow for the round that saw it
    bound = DEAD_MS / 1000.0 + 0.5 + len(others) * 0.3
    for n in others:
        t = dead_at.get(n.name)
        checks.record("%s lists C dead within --dead-after, polling included" % n.name,
                      t is not None and t <= bound,
                      "after %s s (bound %.1f s)%s" % (
                          "%.2f" % t if t is not None else "never", bound,
                          ", suspect first" if n.name in seen_suspect else ""))
    checks.record("C was seen suspect before dead", bool(seen_suspect),
                  "by %s" % (", ".join(sorted(seen_suspect)) or "no node"))
    # no false alarm among the living
    for n in others:
        got = states(args, n) or {}
        bad = {k: v for k, v in got.items() if k not in ("C", n.name) and v != "alive"}
        checks.record("%s lists every other living node alive" % n.name, not bad,
                      "%s" % (bad or "all alive"))

    tc.log("phase 3: a write while C is down, then C restarts on its ports")
    b = nodes[1]
    checks.record("set on B while C is down",
                  b.client().set("while-c-was-down", b"v1", noreply=False) is True)
    c2 = start("C", [a], ports=(c.port, c.cport))
    nodes[2] = c2
    all_alive("after C's restart")
    checks.record("the restarted C serves the write it missed",
                  *tc.poll_compare(c2, {"while-c-was-down": (b"v1", 0)}, (), 10))

    tc.log("phase 4: SIGTERM D")
    d = nodes[3]
    status = d.signal_and_wait(signal.SIGTERM, 15)
    checks.record("D exits with status 0 on SIGTERM", status == 0, "status %s" % status)
    for n in nodes:
        if n is d:
            continue
        checks.record("%s lists D left" % n.name,
                      *tc.poll_members(args.sessctl, n, {"D": "left"}, 10))

    for n in nodes:
        if n is d:
            continue
        log = open(n.log_path, "rb").read().decode("utf-8", "replace")
        checks.record("%s closed its connections to D" % n.name,
                      "closed the connections to tcp://%s" % d.addr in log, "")

    # a tombstone made now is collected once the members still in the
    # cluster have it: D, gone for good as far as they know, holds none back
    checks.record("delete on A after D left",
                  a.client().delete("while-c-was-down", noreply=False) is True)
    end = time.monotonic() + 15
    while True:
        tomb = stat(args, a, "tombstones")
        if tomb == 0 or time.monotonic() >= end:
            break
        time.sleep(POLL_S)
    checks.record("A collects the tombstone though D, which left, never saw it",
                  tomb == 0, "tombstones on A: %s" % tomb)

    tc.log("phase 5: D restarts on its ports, seeded with A: everyone lists it alive")
    d2 = start("D", [a], ports=(d.port, d.cport))
    nodes[3] = d2
    all_alive("after D's return")
    checks.record("set on E after D's return",
                  nodes[4].client().set("after-d-returned", b"v2", noreply=False) is True)
    checks.record("the returned D receives it",
                  *tc.poll_compare(d2, {"after-d-returned": (b"v2", 0)}, (), 10))

    for n in nodes:
        if n is not d2:
            status = n.signal_and_wait(signal.SIGTERM, 15)
            checks.record("%s exits with status 0 on SIGTERM" % n.name, status == 0,
                          "status %s" % status)


if __name__ == "__main__":
    sys.exit(tc.main(run=run, doc=__doc__))
