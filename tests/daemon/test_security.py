#!/usr/bin/python3
"""A CurveZMQ-secured bus: members replicate, an outsider with a
certificate of its own gets nothing and injects nothing, a member added
to the allow-list gets in without a restart, and the bus carries no
plain text.

    test_security.py --sessnode PATH --sessctl PATH

`sessctl keygen` makes certificates for A, B, C and X. The members' allow
list holds A (whose certificate names its cluster address), B and C. A
starts; B and C are given A alone as their seed, so B and C reach each
other with the key A's member list gives them. X, the outsider, holds a
valid certificate that is not on that list; its own allow-list has all
four keys, so it knows A's key and tries A as its seed.

Checked: the three members list each other alive; sessions written on A
reach B and C; X holds none of them, and sessions written on X reach no
member; no member lists X, X lists no member alive, and A counts the
refused handshakes (`auth_refused`). sessctl without a certificate, and
with X's, gets no answer from A. D, started before its certificate is in
the members' allow-list, is refused until the file is copied there, then
listed alive and sent new writes, with no restart. A restarted member
comes back.

Traffic: as root, the test captures loopback packets (an AF_PACKET
socket) while a unique marker value is written: the marker must not
appear in any TCP payload to or from the secured cluster ports. The same
capture over a plain-text pair of daemons must find its marker, which
shows the capture sees the bus at all. Without root that part is skipped
with a message.

The harness (time limit, cleanup by PID, sanitizer checks of the
daemons' logs, the summary) is test_cluster.py's.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cluster as tc  # noqa: E402

JOIN_TIMEOUT_MS = 1000


def keygen(exe, keys, name, address=None):
    cmd = [exe, "keygen", name, "--dir", keys]
    if address:
        cmd += ["--address", address]
    p = subprocess.run(cmd, capture_output=True, timeout=20)
    if p.returncode != 0:
        raise RuntimeError("sessctl keygen %s: %s" % (name, p.stderr.decode()))
    return os.path.join(keys, name + ".cert")


class Sniffer:
    """Collects the TCP payloads seen on the loopback interface, per
    (source port, destination port)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                  socket.ntohs(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.flows = {}
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                frame = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            ip = frame[14:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 15) * 4
            total = struct.unpack("!H", ip[2:4])[0]
            tcp = ip[ihl:total]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack("!HH", tcp[:4])
            off = (tcp[12] >> 4) * 4
            payload = tcp[off:]
            if payload:
                self.flows.setdefault((sport, dport), []).append(bytes(payload))

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.sock.close()

    def bytes_on(self, ports):
        """Every payload byte to or from one of `ports`, flow by flow."""
        out = []
        for (s, d), chunks in list(self.flows.items()):
            if s in ports or d in ports:
                out.append(b"".join(chunks))
        return out


def bus_ports(nodes):
    return {p for n in nodes for p in (n.cport, n.cport + 1)}


def sniff_marker(checks, secured, plain, args):
    """Writes a marker through a secured node and a plain one while
    capturing loopback."""
    if os.geteuid() != 0:
        tc.log("SKIP traffic capture: needs root for an AF_PACKET socket")
        return
    try:
        sniffer = Sniffer()
    except OSError as e:
        tc.log("SKIP traffic capture: cannot open a packet socket: %s" % e)
        return
    try:
        marks = {}
        for label, nodes in (("secured", secured), ("plain", plain)):
            mark = ("CANARY-%s-%s" % (label, uuid.uuid4().hex)).encode()
            marks[label] = mark
            key = "canary-" + label
            nodes[0].client().set(key, mark)
            ok, detail = tc.poll_compare(nodes[1], {key: (mark, 0)}, [],
                                         args.repl_timeout)
            checks.record("the %s cluster replicates the marker" % label, ok, detail)
        time.sleep(0.5)   # heartbeats and acks in flight are captured too
    finally:
        sniffer.close()
    sec = sniffer.bytes_on(bus_ports(secured))
    pla = sniffer.bytes_on(bus_ports(plain))
    seen_sec = sum(1 for b in sec if marks["secured"] in b)
    seen_pla = sum(1 for b in pla if marks["plain"] in b)
    checks.record("the capture finds the marker on the plain-text bus", seen_pla > 0,
                  "%d of %d flows hold it, %d bytes captured" % (
                      seen_pla, len(pla), sum(map(len, pla))))
    checks.record("the secured bus carries no plain text", seen_sec == 0 and len(sec) > 0,
                  "%d of %d flows hold the marker, %d bytes captured" % (
                      seen_sec, len(sec), sum(map(len, sec))))
    # heartbeats carry each node's cluster address as text
    ep_sec = sum(1 for b in sec for n in secured if ("tcp://" + n.addr).encode() in b)
    ep_pla = sum(1 for b in pla for n in plain if ("tcp://" + n.addr).encode() in b)
    checks.record("heartbeats' addresses are readable on the plain bus only",
                  ep_pla > 0 and ep_sec == 0,
                  "plain: %d hits, secured: %d hits" % (ep_pla, ep_sec))


def run(args, tmp, daemons, checks):
    keys = os.path.join(tmp, "keys")
    allow = os.path.join(tmp, "allow")
    xallow = os.path.join(tmp, "x-allow")
    for d in (keys, allow, xallow):
        os.mkdir(d)
    ports = {n: (tc.free_port(), tc.free_port()) for n in "ABCDX"}
    certs = {}
    for n in "ABCDX":
        # A's certificate names its address: B and C know only that
        certs[n] = keygen(args.sessctl, keys, "sec-node-" + n,
                          "127.0.0.1:%d" % ports[n][1] if n in "AX" else None)
    p = subprocess.run([args.sessctl, "keygen", "sec-node-A", "--dir", keys],
                       capture_output=True, timeout=20)
    checks.record("keygen does not overwrite a certificate",
                  p.returncode == 1 and b"not overwriting" in p.stderr,
                  "exit %d: %s" % (p.returncode, p.stderr.decode()[:200]))
    p = subprocess.run([args.sessctl, "keygen", "../up", "--dir", keys],
                       capture_output=True, timeout=20)
    checks.record("keygen refuses a name with a slash", p.returncode == 2,
                  "exit %d: %s" % (p.returncode, p.stderr.decode()[:200]))
    mode = os.stat(certs["A"] + "_secret").st_mode & 0o777
    checks.record("the secret file is private to its owner", mode == 0o600, oct(mode))
    for n in "ABC":
        shutil.copy(certs[n], allow)
    for n in "ABCX":
        shutil.copy(certs[n], xallow)

    def as_node(n, allow_dir=allow):
        """sessctl (tc.members, tc.sessctl) speaks to n with n's own
        certificate: only A's names its address, and sessctl then takes
        the key of the certificate it holds"""
        os.environ["SESSCTL_CERT"] = certs[n.name]
        os.environ["SESSCTL_ALLOW"] = allow_dir

    def start(name, join=(), allow_dir=allow, restart=False):
        flags = ["--cert", certs[name], "--allow", allow_dir,
                 "--join-timeout", str(JOIN_TIMEOUT_MS)]
        d = tc.Daemon(args.sessnode, tmp, name, join, flags, ports[name])
        daemons.append(d)
        d.wait_port()
        return d

    tc.log("phase 1: members A, B, C (B and C seeded with A only); outsider X")
    a = start("A")
    b = start("B", [a])
    c = start("C", [a])
    x = start("X", [a], xallow)
    members = [a, b, c]
    for n in members:
        want = {m.name: ("self" if m is n else "alive") for m in members}
        as_node(n)
        checks.record("%s lists A, B and C alive" % n.name,
                      *tc.poll_members(args.sessctl, n, want, 15))

    tc.log("phase 2: writes on A reach B and C, none reach X; X's reach no one")
    on_a = {"a-%03d" % i: (("from A %d" % i).encode(), 0) for i in range(200)}
    on_x = {"x-%03d" % i: (("from X %d" % i).encode(), 0) for i in range(200)}
    for k, (v, f) in on_a.items():
        a.client().set(k, v)
    for k, (v, f) in on_x.items():
        x.client().set(k, v)
    for n in (b, c):
        checks.record("%s holds A's 200 sessions" % n.name,
                      *tc.poll_compare(n, on_a, [], args.repl_timeout))
    time.sleep(2.0)   # ample for a delta to cross loopback, were it let through
    ok, detail = tc.compare(x, on_x, list(on_a))
    checks.record("X holds its own sessions and none of A's", ok, detail)
    for n in members:
        ok, detail = tc.compare(n, {}, list(on_x))
        checks.record("%s holds none of X's sessions" % n.name, ok, detail)
    for n in members:
        as_node(n)
        got, raw = tc.members(args.sessctl, n)
        checks.record("%s does not list X" % n.name,
                      got is not None and "X" not in got and
                      "127.0.0.1:%d" % x.cport not in raw, raw[:300] if raw else "")
    as_node(x, xallow)
    got, raw = tc.members(args.sessctl, x)
    checks.record("X lists no member alive",
                  got is not None and not any(s == "alive" for s in got.values()),
                  str(got) if got is not None else raw)
    rc, out, err = tc.sessctl(args.sessctl, a, "members", timeout_ms=1000)
    checks.record("sessctl with X's certificate gets no answer from A",
                  rc == 1 and "no answer" in err,
                  "exit %s: %s" % (rc, err.strip() if rc is None else err.strip()[:200]))
    del os.environ["SESSCTL_CERT"], os.environ["SESSCTL_ALLOW"]
    rc, out, err = tc.sessctl(args.sessctl, a, "members", timeout_ms=1000)
    checks.record("sessctl without a certificate gets no answer from A",
                  rc == 1 and "no answer" in err,
                  "exit %s: %s" % (rc, err.strip() if rc is None else err.strip()[:200]))
    as_node(b)   # B's certificate, A's key found by its address
    rc, out, err = tc.sessctl(args.sessctl, a, "stats")
    refused = 0
    for line in out.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] == "auth_refused":
            refused = int(f[1])
    checks.record("A counts the refused handshakes", rc == 0 and refused > 0,
                  "auth_refused %d" % refused)
    log = open(a.log_path, "rb").read().decode("utf-8", "replace")
    checks.record("A logs the refusal",
                  "refused a peer whose key is not on the allow-list" in log, "")

    tc.log("phase 3: D starts before its key is on the members' allow-list, then is added")
    dallow = os.path.join(tmp, "d-allow")
    shutil.copytree(allow, dallow)
    shutil.copy(certs["D"], dallow)
    d = start("D", [a], dallow)
    time.sleep(2.0)
    as_node(a)
    got, raw = tc.members(args.sessctl, a)
    checks.record("A does not list D before its key is allowed",
                  got is not None and "D" not in got, str(got) if got else raw)
    shutil.copy(certs["D"], allow)
    as_node(a)
    checks.record("once its key is added, A lists D alive without a restart",
                  *tc.poll_members(args.sessctl, a, {"D": "alive"}, 20))
    a.client().set("after-d", b"written once D is in")
    checks.record("D receives the writes made since",
                  *tc.poll_compare(d, {"after-d": (b"written once D is in", 0)}, [],
                                   args.repl_timeout))
    d.signal_and_wait(signal.SIGTERM, 10)

    tc.log("phase 4: kill -9 C, write on A, restart C: it rejoins and catches up")
    c.signal_and_wait(signal.SIGKILL, 5)
    later = {"late-%03d" % i: (("late %d" % i).encode(), 0) for i in range(50)}
    for k, (v, f) in later.items():
        a.client().set(k, v)
    c = start("C", [a])
    members = [a, b, c]
    checks.record("restarted C holds every session",
                  *tc.poll_compare(c, dict(on_a, **later), list(on_x), args.repl_timeout))
    as_node(a)
    checks.record("A lists the restarted C alive",
                  *tc.poll_members(args.sessctl, a, {"C": "alive", "B": "alive"}, 15))

    tc.log("phase 5: what a capture of the bus shows")
    p1 = tc.Daemon(args.sessnode, tmp, "P1", (), ["--join-timeout", "500"])
    daemons.append(p1)
    p1.wait_port()
    p2 = tc.Daemon(args.sessnode, tmp, "P2", [p1], ["--join-timeout", "500"])
    daemons.append(p2)
    p2.wait_port()
    sniff_marker(checks, [a, b, c], [p1, p2], args)


if __name__ == "__main__":
    sys.exit(tc.main(run, __doc__))
