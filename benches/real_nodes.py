#!/usr/bin/env python3
"""Issue 18's cost curve on real Asterisk 22 nodes: the compose stack's regmirror registers USERS
live users on every node of the farm (registration only, no calls, no phones: the users' rows
go straight into Kamailio's `location`, as a proxy restart full of contacts would leave them).

    scripts/stack up                       # a fresh stack: this leaves it full
    python3 benches/real_nodes.py USERS [NODES]
    scripts/stack down

NODES is 1 (ast2 taken out with `regmirror node remove ast2 --gone`), 2 (ast1, ast2) or 3 (ast3
started and added with `regmirror node add`). regmirror is
restarted with the production settings that matter here (`audit_interval` 30 min, reconcile every
60 s, no `max_register_rate`: the compose file's 100/s cap is for phones sharing the box) and
`replay_rate` REPLAY_RATE (default 1000 per node, about what one node absorbs here), and its
first reconciliation registers everything. Prints one `key value` line per figure: time until
every node confirmed every binding, CPU of regmirror, each node, MariaDB and Kamailio over that
time (cgroup accounting), regmirror's resident memory, `/metrics` and the page, and one node's
full contact listing (what the AMI audit asks for) with its CPU.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests/e2e"))
from conftest import (ADMIN_URL, DOCKER, MIRROR_CONTACT_HOST, Stack, bulk_provision,  # noqa: E402
                      compose, node_cli, wait_healthy)

USERS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
NODES = int(sys.argv[2]) if len(sys.argv) > 2 else 2
REPLAY_RATE = int(os.environ.get("REPLAY_RATE", "1000"))
FARM = ["ast1", "ast2", "ast3"][:NODES]


def out(key, value):
    print(f"{key} {value}", flush=True)


def cpu_s(stack, service):
    """CPU seconds the service's container used so far (cgroup v1 cpuacct)."""
    cid = subprocess.run([DOCKER, "inspect", "-f", "{{.Id}}", stack.container(service)],
                         capture_output=True, text=True, check=True).stdout.strip()
    with open(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage") as f:
        return int(f.read()) / 1e9


def metrics():
    try:
        return urllib.request.urlopen(f"{ADMIN_URL}/metrics", timeout=30).read().decode()
    except OSError:
        return ""


def confirmed(text):
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^regmirror_node_confirmed_bindings\{node="([^"]+)"\} (\S+)$', text, re.M)}


def timed(path, n=5):
    took = []
    for _ in range(n):
        t = time.monotonic()
        urllib.request.urlopen(f"{ADMIN_URL}{path}", timeout=60).read()
        took.append(time.monotonic() - t)
    return statistics.median(took)


def main():
    stack = Stack()
    users = [(f"9{n:06d}", "pw") for n in range(USERS)]
    out("config", f"users={USERS} nodes={NODES} bindings={USERS * NODES} "
                  f"replay_rate={REPLAY_RATE}")
    t = time.monotonic()
    bulk_provision(stack, users)
    stack.exec("mariadb", ["mariadb", "regmirror"], check=True, timeout=300, input=f"""
INSERT INTO location (ruid, username, domain, contact, expires, callid, last_modified)
  SELECT CONCAT('realnodes-', seq), CONCAT('9', LPAD(seq, 6, '0')), 'regmirror.test',
         CONCAT('sip:9', LPAD(seq, 6, '0'), '@10.78.0.50:5060'),
         UTC_TIMESTAMP() + INTERVAL 1 DAY, CONCAT('realnodes-', seq), UTC_TIMESTAMP()
  FROM seq_0_to_{USERS - 1};
""")
    out("provision_s", f"{time.monotonic() - t:.1f}")
    if NODES == 1:
        removed = node_cli(stack, "remove", "ast2", "--gone")
        assert removed.returncode == 0, removed.stderr
    if NODES == 3:
        compose("--profile", "ast3", "up", "-d", "ast3")
        wait_healthy("ast3")
        added = node_cli(stack, "add", "ast3", "--address", "10.77.0.33:5060",
                         "--ami", "10.77.0.33:5038")
        assert added.returncode == 0, added.stderr

    # regmirror with production periods, restarted on a full `location`
    toml = stack.exec("regmirror", ["cat", "/etc/regmirror/regmirror.toml"], check=True).stdout
    toml = re.sub(r'(?m)^reconcile_interval = .*$', 'reconcile_interval = "60s"', toml)
    toml = re.sub(r'(?m)^max_register_rate = .*$', 'max_register_rate = 0', toml)
    toml = re.sub(r'(?m)^audit_interval = .*$',
                  f'audit_interval = "30m"\nreplay_rate = {REPLAY_RATE}', toml)
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(toml)
        f.flush()
        os.chmod(f.name, 0o644)  # the service runs unprivileged
        subprocess.run([DOCKER, "cp", f.name, f"{stack.container('regmirror')}:"
                        "/etc/regmirror/regmirror.toml"], check=True)
    watched = ["regmirror", "mariadb", "kamailio", *FARM]
    cpu0 = {s: cpu_s(stack, s) for s in watched}
    t0 = time.monotonic()
    subprocess.run([DOCKER, "restart", stack.container("regmirror")], check=True,
                   capture_output=True)
    while True:
        c = confirmed(metrics())
        if len(c) == NODES and all(v >= USERS for v in c.values()):
            break
        if time.monotonic() - t0 > 1800:
            raise SystemExit(f"real_nodes: not every binding confirmed: {c}")
        time.sleep(1)
    took = time.monotonic() - t0
    out("all_bindings_on_every_node_s", f"{took:.1f}")
    out("registrations_per_s", f"{USERS * NODES / took:.0f}")
    for s in watched:
        used = cpu_s(stack, s) - cpu0[s]
        out(f"cpu_s_{s}", f"{used:.1f}")
        if s == "regmirror":
            out("regmirror_cpu_us_per_binding", f"{used / (USERS * NODES) * 1e6:.1f}")
        if s in FARM:
            out(f"{s}_cpu_ms_per_registration", f"{used / USERS * 1e3:.2f}")
    pid = subprocess.run([DOCKER, "inspect", "-f", "{{.State.Pid}}",
                          stack.container("regmirror")], capture_output=True, text=True,
                         check=True).stdout.strip()
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024
    out("regmirror_rss_bytes", rss)
    out("regmirror_rss_bytes_per_binding", rss // (USERS * NODES))
    time.sleep(3)
    out("get_metrics_ms", f"{timed('/metrics') * 1000:.0f}")
    out("get_status_page_ms", f"{timed('/status') * 1000:.0f}")
    # refreshes at the default 600 s grant, each refresh timer_f + 4 s before expiry
    out("steady_refresh_per_node_per_s", f"{USERS / (600 - 36):.1f}")
    c0 = cpu_s(stack, "ast1")
    t = time.monotonic()
    listing = stack.exec("ast1", ["asterisk", "-rx", "pjsip show contacts"], check=True,
                         timeout=600).stdout
    out("ast1_listing_s", f"{time.monotonic() - t:.1f}")
    out("ast1_listing_cpu_s", f"{cpu_s(stack, 'ast1') - c0:.1f}")
    out("ast1_listing_contacts", listing.count(f"@{MIRROR_CONTACT_HOST}"))


if __name__ == "__main__":
    main()
