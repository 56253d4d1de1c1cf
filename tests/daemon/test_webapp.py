#!/usr/bin/python3
"""The failover story end to end: three demo web applications (sn-webapp,
each embedding libsessnode) behind HAProxy on loopback.

    test_webapp.py --webapp PATH --sessnode PATH --sessctl PATH

HAProxy balances round-robin with a sticky cookie, checks /healthz, and
redispatches a request whose server refuses it. A client with a cookie jar
logs in through the load balancer and counts three times on the node it
is stuck to. That node is killed with SIGKILL: the next request lands on
another node, with the same session id, and the counter goes on from 3.
Logging out there destroys the session on every node (asked directly).
The HTML page names the node that served it. With --chromium, the cluster
status page (/status, which refreshes itself from /api/members) is loaded
in headless Chromium: it lists the three nodes, and after the kill it
shows the killed one suspect or dead. (--sessnode and --sessctl
are the harness's; only their presence is checked.)

The harness (time limit, cleanup by PID, sanitizer checks of the logs,
the summary) is test_cluster.py's.
"""

import http.cookiejar
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cluster as tc  # noqa: E402


class Proc(tc.Daemon):
    """A process of this test, with the harness's cleanup and log checks."""

    def __init__(self, tmp, name, argv, port):
        self.name = name
        self.port = port
        self.log_path = os.path.join(tmp, name + ".log")
        tc.log("start %s: %s" % (name, " ".join(os.path.basename(a) if i == 0 else a
                                               for i, a in enumerate(argv))))
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf)
        self._client = None


def request(opener, url, method="GET", timeout=5):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def as_json(body):
    try:
        return json.loads(body)
    except ValueError:
        return {}


def run(args, tmp, daemons, checks):
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if not haproxy or not os.access(args.webapp, os.X_OK):
        raise RuntimeError("haproxy or sn-webapp missing (Debian: haproxy, libmicrohttpd-dev)")
    apps = []
    for k in (1, 2, 3):
        port, cport = tc.free_port(), tc.free_port()
        argv = [args.webapp, "--http", "127.0.0.1:%d" % port, "--cluster",
                "127.0.0.1:%d" % cport, "--name", "app%d" % k]
        if apps:
            argv += ["--join", "127.0.0.1:%d" % apps[0].cport]
        p = Proc(tmp, "app%d" % k, argv, port)
        p.cport = cport
        daemons.append(p)
        p.wait_port()
        apps.append(p)
    if args.chromium:
        ok, detail = poll_page(args.chromium, tmp, apps[0],
                               {"app1": ("self",), "app2": ("alive",), "app3": ("alive",)})
        checks.record("the status page, in headless Chromium, lists the three", ok, detail)
    lb = tc.free_port()
    cfg = os.path.join(tmp, "haproxy.cfg")
    template = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "demo",
                            "haproxy.cfg.in")
    servers = "".join("    server %s 127.0.0.1:%d check inter 200 fall 2 rise 1 cookie %s\n"
                      % (a.name, a.port, a.name) for a in apps)
    with open(template) as f:
        text = f.read().replace("@LB@", "127.0.0.1:%d" % lb).replace("@SERVERS@", servers)
    with open(cfg, "w") as f:
        f.write(text)
    proxy = Proc(tmp, "haproxy", [haproxy, "-f", cfg, "-db"], lb)
    daemons.append(proxy)
    proxy.wait_port()
    base = "http://127.0.0.1:%d" % lb

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    status, body = request(opener, base + "/api/login?user=alice", "POST")
    login = as_json(body)
    checks.record("log in through the load balancer", status == 200 and login.get("user") ==
                  "alice" and login.get("counter") == 0, "%s %s" % (status, body[:200]))
    sid = login.get("sid")
    served = set()
    last = None
    for i in range(3):
        status, body = request(opener, base + "/api/incr", "POST")
        last = as_json(body)
        served.add(last.get("node"))
    checks.record("three counts on one node (sticky)",
                  last and last.get("counter") == 3 and len(served) == 1 and
                  last.get("sid") == sid, "%s, nodes %s" % (last, sorted(map(str, served))))
    node = last.get("node") if last else None
    victim = next((a for a in apps if a.name == node), None)
    checks.record("the serving node is one of the three", victim is not None, str(node))
    if not victim:
        return
    # the others hold the session already: replication is asynchronous but
    # takes milliseconds; poll rather than race it
    end = time.monotonic() + 10
    others = [a for a in apps if a is not victim]
    while time.monotonic() < end:
        views = [direct(a, sid) for a in others]
        if all(v.get("counter") == 3 for v in views):
            break
        time.sleep(0.1)
    tc.log("kill -9 %s" % victim.name)
    victim.signal_and_wait(signal.SIGKILL, 5)
    status, body = request(opener, base + "/api/incr", "POST")
    after = as_json(body)
    checks.record("after the kill, the next request lands on another node",
                  status == 200 and after.get("node") in [a.name for a in others],
                  "%s %s" % (status, body[:200]))
    checks.record("...with the same session id and the counter going on",
                  after.get("sid") == sid and after.get("counter") == 4 and
                  after.get("user") == "alice", body[:200])
    if args.chromium:
        survivor = others[0]
        want = {a.name: ("alive",) for a in others if a is not survivor}
        want[survivor.name] = ("self",)
        want[victim.name] = ("suspect", "dead")
        ok, detail = poll_page(args.chromium, tmp, survivor, want, 20)
        checks.record("the status page shows the killed node suspect or dead", ok, detail)
    status, page = request(opener, base + "/")
    checks.record("the HTML page names the node that served it",
                  status == 200 and ('<span id="node">%s</span>' % after.get("node")) in page,
                  page[:160])
    status, body = request(opener, base + "/api/logout", "POST")
    checks.record("log out through the load balancer", status == 200 and
                  as_json(body).get("destroyed") is True, body[:200])
    end = time.monotonic() + 10
    while True:
        views = {a.name: direct(a, sid) for a in others}
        gone = all(v.get("sid") == sid and v.get("user") is None for v in views.values())
        if gone or time.monotonic() >= end:
            break
        time.sleep(0.1)
    checks.record("the logout is seen on every remaining node", gone, str(views))
    for a in others:
        status = a.signal_and_wait(signal.SIGTERM, 15)
        checks.record("%s exits with status 0 on SIGTERM" % a.name, status == 0,
                      "status %s" % status)


def direct(node, sid):
    """The session as `node` sees it, asked directly with the cookie."""
    req = urllib.request.Request("http://127.0.0.1:%d/api/session" % node.port,
                                 headers={"Cookie": "SID=%s" % sid})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return as_json(r.read().decode())
    except (urllib.error.URLError, OSError):
        return {}


ROW = re.compile(r'<tr data-name="([^"]*)" data-state="([^"]*)"')


def status_rows(chromium, tmp, node):
    """{name: state} from the status page as headless Chromium renders it
    (its script fetches /api/members and fills the table)."""
    argv = [chromium, "--headless=new", "--disable-gpu", "--no-first-run",
            "--user-data-dir=" + os.path.join(tmp, "chromium"),
            "--virtual-time-budget=3000", "--dump-dom",
            "http://127.0.0.1:%d/status" % node.port]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {}, "chromium did not finish"
    dom = p.stdout.decode("utf-8", "replace")
    return dict(ROW.findall(dom)), dom[-300:]


def poll_page(chromium, tmp, node, want, timeout=15):
    end = time.monotonic() + timeout
    while True:
        rows, tail = status_rows(chromium, tmp, node)
        bad = {n: rows.get(n) for n, ok in want.items() if rows.get(n) not in ok}
        if not bad or time.monotonic() >= end:
            return not bad, "rows %s%s" % (rows, "" if rows else "; page ends: " + tail)
        time.sleep(0.5)


def add_args(ap):
    ap.add_argument("--webapp", required=True)
    ap.add_argument("--chromium", default=None,
                    help="headless Chromium for the status page checks")


if __name__ == "__main__":
    sys.exit(tc.main(run, __doc__, add_args))
