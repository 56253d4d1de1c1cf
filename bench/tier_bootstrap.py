#!/usr/bin/python3
"""Bootstrap speed: how fast a node that starts alone loads N sessions from
the memcached tier, against how fast a node joining a peer copies the same
sessions by snapshot, in one run.

    bench/tier_bootstrap.py --daemon PATH [--sessions 100000] [--rounds 3]

A writer daemon with --tier takes N sessions (1 KiB values, pymemcache,
through the memcached protocol) and backs them up to one memcached server
started here. Then, each round: a daemon with --join on the writer (no
tier) copies them by snapshot; a daemon with --tier and no peer loads them
from the tier. Each reports its time in its log ("join finished after MS:
N sessions copied"); the medians and the sessions/s are printed. Every
server listens on 127.0.0.1 on a free port and is killed by PID on exit.
"""

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from pymemcache.client.base import Client


def free_port():
    """A port P below the ephemeral range with P and P + 1 free."""
    while True:
        p = random.randrange(20000, 32000)
        try:
            for q in (p, p + 1):
                s = socket.socket()
                try:
                    s.bind(("127.0.0.1", q))
                finally:
                    s.close()
            return p
        except OSError:
            continue


def wait_port(port, proc, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("a server exited with status %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--daemon", required=True)
    ap.add_argument("--sessions", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sn-tier-boot.")
    procs = []

    def spawn(name, argv):
        log = open(os.path.join(tmp, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        procs.append(p)
        return p

    def daemon(name, extra):
        port, cport = free_port(), free_port()
        p = spawn(name, [args.daemon, "--listen", "127.0.0.1:%d" % port, "--cluster",
                         "127.0.0.1:%d" % cport, "--name", name, "--max-memory", "2048",
                         "--join-timeout", "60000"] + extra)
        wait_port(port, p)
        return p, port, cport

    def joined_ms(name):
        text = open(os.path.join(tmp, name + ".log")).read()
        m = re.search(r"join finished after (\d+) ms: (\d+) sessions copied", text)
        return (int(m.group(1)), int(m.group(2))) if m else (None, 0)

    try:
        mport = free_port()
        argv = [shutil.which("memcached"), "-l", "127.0.0.1", "-p", str(mport), "-U", "0",
                "-m", "1024", "-t", "2"]
        if os.geteuid() == 0:
            argv += ["-u", "memcache"]
        m = spawn("memcached", argv)
        wait_port(mport, m)
        tier = ["--tier", "127.0.0.1:%d" % mport, "--tier-queue", str(args.sessions * 2)]
        w, wport, wcport = daemon("writer", tier)
        c = Client(("127.0.0.1", wport))
        value = b"x" * 1024
        start = time.monotonic()
        batch = {}
        for i in range(args.sessions):
            batch["session-%07d" % i] = value
            if len(batch) == 500:
                c.set_many(batch, expire=3600)
                batch = {}
        if batch:
            c.set_many(batch, expire=3600)
        while int(c.stats()[b"tier_queue"]) > 0:
            time.sleep(0.2)
        print("%d sessions written and backed up in %.1f s" % (
            args.sessions, time.monotonic() - start))
        results = {"snapshot": [], "tier": []}
        for r in range(1, args.rounds + 1):
            for kind in ("snapshot", "tier"):
                name = "%s-%d" % (kind, r)
                extra = ["--join", "127.0.0.1:%d" % wcport] if kind == "snapshot" else tier
                p, port, _ = daemon(name, extra)
                ms, n = joined_ms(name)
                p.kill()
                p.wait()
                if ms is None or n < args.sessions:
                    print("round %d %s: copied %d sessions (log: %s)" % (r, kind, n, name))
                    return 1
                results[kind].append(ms)
                print("round %d  %-8s %7d sessions in %6d ms  %9.0f sessions/s" % (
                    r, kind, n, ms, n * 1000.0 / max(ms, 1)))
        snap = statistics.median(results["snapshot"])
        boot = statistics.median(results["tier"])
        print("== medians of %d rounds" % args.rounds)
        print("snapshot from a peer  %6d ms  %9.0f sessions/s" % (
            snap, args.sessions * 1000.0 / max(snap, 1)))
        print("bootstrap from tier   %6d ms  %9.0f sessions/s  (%.2fx the snapshot's rate)" % (
            boot, args.sessions * 1000.0 / max(boot, 1), snap / max(boot, 1)))
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
