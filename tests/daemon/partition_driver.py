#!/usr/bin/python3
"""A healed network partition converges (run by test_partition.sh, inside
the driver's network namespace; the daemons run in theirs).

    partition_driver.py --sessnode PATH --sessctl PATH --ns-prefix TAG --net A.B.C

Three daemons n1, n2, n3 at A.B.C.1-3 join through n1. Before the cut: 200
`base:` keys, 20 `victim:` keys and 20 `both:` keys are set on n1 and
reach every node. Node 1 is then cut off from nodes 2 and 3 (iptables DROP
both ways in n1's namespace; the driver still reaches all three). During
the cut, on n1: 100 `a:` keys, every `victim:` key rewritten, every `both:`
key set to "A"; on n2: 100 `b:` keys, every `victim:` key deleted, every
`both:` key set to "B". The cut is checked to hold (n1 lacks the `b:`
keys, n3 has them). After the heal, within the limit:
  - every node holds every `base:`, `a:` and `b:` key with its value (no
    acknowledged write is lost);
  - no `victim:` key is on any node: the deletes on one side win over the
    concurrent rewrites on the other, and nothing brings them back;
  - each `both:` key has one value, the same on every node (the two
    concurrent writes resolve alike everywhere);
  - every node lists the two others alive.
Then 30% random loss (iptables `-m statistic`) on what each node receives
from the others, while each writes 100 `loss:` keys and n3 deletes ten
`base:` keys: every node converges while the loss goes on. Then a one-way
cut: n3 drops what comes from n2, so n2's writes still reach n1 and n3
lists n2 dead; n3 then gets n2's writes through n1 while the cut lasts
(n1's heartbeats show it holds writes of a node n3 cannot hear); once the
rule goes, every node converges and lists the others alive.
"""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cluster as tc  # noqa: E402


class NsDaemon(tc.Daemon):
    """A daemon inside namespace `ns`, at address `ip` (ports 11211/7400)."""

    def __init__(self, exe, tmp, name, ns, ip, join=()):
        self.name = name
        self.ns = ns
        self.ip = ip
        self.port, self.cport = 11211, 7400
        self.addr = "%s:%d" % (ip, self.cport)
        self.log_path = os.path.join(tmp, name + ".log")
        args = ["ip", "netns", "exec", ns, exe, "--listen", "%s:%d" % (ip, self.port),
                "--cluster", self.addr, "--name", name,
                # the test's own namespaces, behind a blackhole route
                "--insecure-bus"]
        if join:
            args += ["--join", ",".join(d.addr for d in join)]
        tc.log("start %s in %s: %s" % (name, ns, " ".join(args[4:])))
        self.logf = open(self.log_path, "ab")
        # `ip netns exec` execs the daemon: this PID is the daemon's
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf)
        self._client = None

    def wait_port(self, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError("%s exited with status %s" % (self.name, self.proc.returncode))
            try:
                tc.socket.create_connection((self.ip, self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not accept connections on %s:%d" % (
            self.name, self.ip, self.port))

    def client(self):
        if self._client is None:
            self._client = tc.Client((self.ip, self.port), serde=tc.RawSerde(),
                                     connect_timeout=3, timeout=10,
                                     no_delay=True, default_noreply=False)
        return self._client


def iptables(ns, *rule):
    subprocess.run(["ip", "netns", "exec", ns, "iptables"] + list(rule), check=True,
                   stdin=subprocess.DEVNULL, timeout=20)


def add_args(ap):
    ap.add_argument("--ns-prefix", required=True)
    ap.add_argument("--net", required=True)


def values_on(node, keys):
    got = node.client().get_many(keys)
    return {k: got.get(k) for k in keys}


def run(args, tmp, daemons, checks):
    ns = lambda k: args.ns_prefix + str(k)  # noqa: E731
    ip = lambda k: "%s.%d" % (args.net, k)  # noqa: E731

    def start(k, join=()):
        d = NsDaemon(args.sessnode, tmp, "n%d" % k, ns(k), ip(k), join)
        daemons.append(d)
        d.wait_port()
        return d

    tc.log("phase 1: three daemons, each in its own namespace")
    n1 = start(1)
    n2 = start(2, [n1])
    n3 = start(3, [n1])
    nodes = [n1, n2, n3]
    for n in nodes:
        want = {d.name: ("self" if d is n else "alive") for d in nodes}
        checks.record("%s lists the three alive" % n.name,
                      *tc.poll_members(args.sessctl, n, want, 20))

    base = {"base:%d" % i: (b"v%d" % i, 0) for i in range(200)}
    victims = ["victim:%d" % i for i in range(20)]
    both = ["both:%d" % i for i in range(20)]
    before = dict(base)
    before.update({k: (b"original", 0) for k in victims + both})
    checks.record("sets on n1 before the cut", *tc.store_all(n1, before))
    for n in (n2, n3):
        checks.record("%s holds them" % n.name, *tc.poll_compare(n, before, (), 20))

    tc.log("phase 2: cut n1 off from n2 and n3")
    for k in (2, 3):
        iptables(ns(1), "-A", "INPUT", "-s", ip(k), "-j", "DROP")
        iptables(ns(1), "-A", "OUTPUT", "-d", ip(k), "-j", "DROP")
    side_a = {"a:%d" % i: (b"a%d" % i, 0) for i in range(100)}
    side_b = {"b:%d" % i: (b"b%d" % i, 0) for i in range(100)}
    checks.record("sets on n1 during the cut", *tc.store_all(n1, side_a))
    checks.record("rewrites of the victims on n1",
                  *tc.store_all(n1, {k: (b"from-A", 0) for k in victims}))
    checks.record("both: set to A on n1", *tc.store_all(n1, {k: (b"A", 0) for k in both}))
    checks.record("sets on n2 during the cut", *tc.store_all(n2, side_b))
    c2 = n2.client()
    deleted = sum(1 for k in victims if c2.delete(k, noreply=False))
    checks.record("the victims deleted on n2", deleted == len(victims),
                  "%d/%d deleted" % (deleted, len(victims)))
    checks.record("both: set to B on n2", *tc.store_all(n2, {k: (b"B", 0) for k in both}))
    time.sleep(2)
    got = n1.client().get_many(list(side_b)[:10])
    checks.record("the cut holds: n1 has none of n2's writes", not got,
                  "%d of 10 b: keys on n1" % len(got))
    checks.record("n3, on n2's side, has n2's writes",
                  *tc.poll_compare(n3, side_b, victims, 10))
    checks.record("n2 lists n1 dead during the cut",
                  *tc.poll_members(args.sessctl, n2, {"n1": "dead"}, 10))

    tc.log("phase 3: heal")
    iptables(ns(1), "-F")
    healed = time.monotonic()
    expected = dict(base)
    expected.update(side_a)
    expected.update(side_b)
    for n in nodes:
        checks.record("%s holds every acknowledged write, no victim" % n.name,
                      *tc.poll_compare(n, expected, victims, 90))
    # the concurrent both: writes: one value per key, the same everywhere
    end = healed + 90
    while True:
        views = [values_on(n, both) for n in nodes]
        agree = all(v == views[0] for v in views) and all(
            views[0][k] is not None for k in both)
        if agree or time.monotonic() >= end:
            break
        time.sleep(0.5)
    winners = sorted({views[0][k][0] for k in both if views[0][k]})
    checks.record("each both: key has one value on every node", agree,
                  "values %s, after %.1f s" % (winners, time.monotonic() - healed))
    for n in nodes:
        want = {d.name: ("self" if d is n else "alive") for d in nodes}
        checks.record("%s lists the three alive after the heal" % n.name,
                      *tc.poll_members(args.sessctl, n, want, 30))

    tc.log("phase 4: 30% random loss between every two nodes while each writes")
    for k in (1, 2, 3):
        for j in (1, 2, 3):
            if j != k:
                iptables(ns(k), "-A", "INPUT", "-s", ip(j), "-m", "statistic", "--mode",
                         "random", "--probability", "0.3", "-j", "DROP")
    lossy = {}
    for n in nodes:
        keys = {"loss:%s:%d" % (n.name, i): (b"l%d" % i, 0) for i in range(100)}
        checks.record("sets on %s under loss" % n.name, *tc.store_all(n, keys))
        lossy.update(keys)
    gone = ["base:%d" % i for i in range(10)]
    c3 = n3.client()
    deleted = sum(1 for k in gone if c3.delete(k, noreply=False))
    checks.record("deletes on n3 under loss", deleted == len(gone),
                  "%d/%d deleted" % (deleted, len(gone)))
    for k in gone:
        del expected[k]
    expected.update(lossy)
    for n in nodes:
        checks.record("%s converges while the loss goes on" % n.name,
                      *tc.poll_compare(n, expected, gone, 60))
    for k in (1, 2, 3):
        iptables(ns(k), "-F")

    tc.log("phase 5: a one-way cut: n3 drops what n2 sends, n2 still hears n3")
    iptables(ns(3), "-A", "INPUT", "-s", ip(2), "-j", "DROP")
    one_way = {"oneway:%d" % i: (b"o%d" % i, 0) for i in range(100)}
    checks.record("sets on n2 during the one-way cut", *tc.store_all(n2, one_way))
    checks.record("n1, still connected to both, has them",
                  *tc.poll_compare(n1, one_way, (), 20))
    checks.record("n3 lists n2 dead during the one-way cut",
                  *tc.poll_members(args.sessctl, n3, {"n2": "dead", "n1": "alive"}, 10))
    more = {"oneway2:%d" % i: (b"p%d" % i, 0) for i in range(100)}
    checks.record("more sets on n2 once n3 lists it dead", *tc.store_all(n2, more))
    one_way.update(more)
    checks.record("n3 gets n2's writes through n1 during the cut",
                  *tc.poll_compare(n3, one_way, (), 20))
    iptables(ns(3), "-F")
    healed = time.monotonic()
    expected.update(one_way)
    for n in nodes:
        checks.record("%s converges after the one-way cut" % n.name,
                      *tc.poll_compare(n, expected, gone, 60))
    for n in nodes:
        want = {d.name: ("self" if d is n else "alive") for d in nodes}
        checks.record("%s lists the three alive at the end" % n.name,
                      *tc.poll_members(args.sessctl, n, want, 30))

    for n in nodes:
        status = n.signal_and_wait(signal.SIGTERM, 15)
        checks.record("%s exits with status 0 on SIGTERM" % n.name, status == 0,
                      "status %s" % status)


if __name__ == "__main__":
    sys.exit(tc.main(run=run, doc=__doc__, add_args=add_args))
