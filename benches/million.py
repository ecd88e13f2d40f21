#!/usr/bin/env python3
"""Issue 18's cost curve at scale: the real `regmirror` binary with AORS live users x NODES fake
Asterisk registrars (loadgen's `registrars` mode, one thread and UDP socket per node), the
credentials and Kamailio's `location` in a real MariaDB.

    bash tests/with-mariadb.sh python3 benches/million.py [AORS [NODES [ROUNDS]]]

Defaults: 1,000,000 x 8, 1 round. Each round starts regmirror on the filled database (the first
reconciliation is a restart's: every AOR live in `location`), waits until every node holds every
binding, reads the process's resident memory and CPU, times `/metrics`, `/status.json` and the
status page, then restarts regmirror (SIGTERM, start again) and times the reconciliation after
the restart. Prints one `key value` line per figure (BENCHMARKS.md, "Cost curves").
"""
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AORS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
NODES = int(sys.argv[2]) if len(sys.argv) > 2 else 8
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
REALM = "regmirror.test"  # loadgen's registrars: users u0.., password "pw", this realm
ADMIN = "127.0.0.1:19070"
TIMEOUT = float(os.environ.get("MILLION_TIMEOUT", "1800"))
# The first reconciliation's REGISTERs go out at `farm.replay_rate` per node (200 by default:
# 1,000,000 AORs would take 83 minutes); unpaced here, so what is measured is regmirror's cost.
REPLAY_RATE = int(os.environ.get("MILLION_REPLAY_RATE", "0"))
# `info` (the default) logs one line per binding state change: 16,000,000 lines for 8,000,000
# bindings registered.
LOG_LEVEL = os.environ.get("MILLION_LOG_LEVEL", "info")


def out(key, value):
    print(f"{key} {value}", flush=True)


def sql(text):
    """Runs `text` as the admin of tests/with-mariadb.sh (its MYSQL_* variables); the output."""
    e = os.environ
    r = subprocess.run(["mariadb", "--no-defaults", "-N", "-B", f"--host={e['MYSQL_HOST']}",
                        f"--port={e['MYSQL_TCP_PORT']}", f"--user={e['MYSQL_USER']}",
                        e["MYSQL_DATABASE"]],
                       input=text, text=True, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"million: SQL failed: {r.stderr.strip()}")
    return r.stdout.strip()


def fill_database():
    """AORS users u0.. (password pw) with a live contact each, unless already there."""
    have = int(sql("SELECT COUNT(*) FROM location WHERE ruid LIKE 'million-%'") or 0)
    if have == AORS:
        sql("UPDATE location SET expires = UTC_TIMESTAMP() + INTERVAL 1 DAY "
            "WHERE ruid LIKE 'million-%'")
        return 0.0
    t = time.monotonic()
    last = AORS - 1
    sql(f"""
DELETE FROM location WHERE ruid LIKE 'million-%';
INSERT IGNORE INTO ps_aors (id, max_contacts, remove_existing, qualify_frequency)
  SELECT CONCAT('u', seq), 1, 'yes', 0 FROM seq_0_to_{last};
INSERT IGNORE INTO ps_auths (id, auth_type, username, realm, password)
  SELECT CONCAT('u', seq), 'userpass', CONCAT('u', seq), '{REALM}', 'pw' FROM seq_0_to_{last};
INSERT IGNORE INTO ps_endpoints (id, aors, auth, context)
  SELECT CONCAT('u', seq), CONCAT('u', seq), CONCAT('u', seq), 'phones' FROM seq_0_to_{last};
INSERT INTO location (ruid, username, domain, contact, expires, callid, last_modified)
  SELECT CONCAT('million-', seq), CONCAT('u', seq), '{REALM}',
         CONCAT('sip:u', seq, '@192.0.2.1:5060'), UTC_TIMESTAMP() + INTERVAL 1 DAY,
         CONCAT('million-', seq), UTC_TIMESTAMP() FROM seq_0_to_{last};
""")
    return time.monotonic() - t


def http_get(path, timeout=120):
    t = time.monotonic()
    with urllib.request.urlopen(f"http://{ADMIN}{path}", timeout=timeout) as r:
        body = r.read()
    return body.decode("utf-8", "replace"), time.monotonic() - t


def scrape():
    """regmirror's `/metrics` text ("" while it does not answer)."""
    try:
        return http_get("/metrics")[0]
    except OSError:
        return ""


def metric(text, name):
    """Every sample of `name` (any labels)."""
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})?\s+(\S+)$", re.M)
    return [float(m.group(1)) for m in pattern.finditer(text)]


def proc_stat(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return rss, cpu


def config(nodes, db_url):
    text = (
        f'[sip]\nlisten = "127.0.0.1:0"\ndomain = "{REALM}"\nsocket_buffer = 8388608\n'
        '[kamailio]\ntrusted = ["127.0.0.1"]\ncontact_host = "127.0.0.1:5060"\n'
        '[farm]\nprobe_interval = "0s"\nreconcile_interval = "1h"\n'
        f'replay_rate = {REPLAY_RATE}\n'
        f'[database]\nurl = "{db_url}"\nmax_connections = 4\n'
        f'[admin]\nlisten = "{ADMIN}"\n[log]\nlevel = "{LOG_LEVEL}"\n'
    )
    for i, addr in enumerate(nodes):
        text += f'[[nodes]]\nname = "ast{i + 1}"\naddress = "{addr}"\n'
    return text


def wait_until(what, proc, check, every=2.0):
    """Polls `check()` until it is true (the timings come from regmirror's log and `/proc`)."""
    t = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"million: regmirror exited ({proc.returncode}) waiting for {what}")
        if check():
            return
        if time.monotonic() - t > TIMEOUT:
            raise SystemExit(f"million: no {what} after {TIMEOUT:.0f} s")
        time.sleep(every)


def start(binary, cfg_path, log):
    """regmirror started; its process, and the wall-clock time and log offset at its start."""
    log.flush()
    offset = os.path.getsize(log.name)
    t0 = time.time()
    proc = subprocess.Popen([binary, "run", "--config", cfg_path],
                            stdout=subprocess.DEVNULL, stderr=log)
    return proc, t0, offset


def reconciled_after(log_path, offset, t0):
    """Seconds from `t0` to the "first reconciliation done" line the process logged (its own
    clock: the admin pages answer late while the driver registers)."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        for line in f:
            if b"first reconciliation done" in line:
                stamp = line.split(b" ", 1)[0].decode().rstrip("Z")
                at = datetime.datetime.fromisoformat(stamp).replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                return at - t0
    return float("nan")


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "regmirror",
                    "--example", "loadgen", "--features", "testing"], cwd=ROOT, check=True)
    # MILLION_BIN: another build of regmirror, for an A/B in one sitting.
    binary = os.environ.get("MILLION_BIN") or os.path.join(ROOT, "target/release/regmirror")
    loadgen = os.path.join(ROOT, "target/release/examples/loadgen")
    db_url = os.environ["REGMIRROR_TEST_REGMIRROR_URL"]
    out("config", f"aors={AORS} nodes={NODES} bindings={AORS * NODES} rounds={ROUNDS} "
        f"replay_rate={REPLAY_RATE} log_level={LOG_LEVEL}")
    out("machine_cpus", os.cpu_count())
    out("database_fill_s", f"{fill_database():.1f}")

    registrars = subprocess.Popen([loadgen, "registrars", str(NODES), str(AORS), "8388608",
                                   "quick"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
    line = registrars.stdout.readline()
    if not line.startswith("ready "):
        raise SystemExit(f"million: registrars said {line!r}")
    nodes = line.split()[1:]
    work = tempfile.mkdtemp(prefix="million.")
    cfg_path = os.path.join(work, "regmirror.toml")
    with open(cfg_path, "w") as f:
        f.write(config(nodes, db_url))
    log = open(os.path.join(work, "stderr.log"), "w")
    bindings = AORS * NODES
    proc = None
    try:
        for rnd in range(1, ROUNDS + 1):
            proc, t0, offset = start(binary, cfg_path, log)

            def live():
                aors = metric(scrape(), "regmirror_live_aors")
                return aors and aors[0] >= AORS

            def covered():
                ratios = metric(scrape(), "regmirror_node_coverage_ratio")
                return len(ratios) == NODES and min(ratios) >= 1.0

            wait_until("first reconciliation", proc, live, every=0.5)
            wait_until("every binding on every node", proc, covered)
            out(f"round{rnd}_all_bindings_on_every_node_s", f"{time.time() - t0:.1f}")
            out(f"round{rnd}_reconcile_from_start_s",
                f"{reconciled_after(log.name, offset, t0):.1f}")
            rss, cpu = proc_stat(proc.pid)
            out(f"round{rnd}_rss_bytes", rss)
            out(f"round{rnd}_rss_bytes_per_binding", f"{rss / bindings:.0f}")
            out(f"round{rnd}_cpu_s", f"{cpu:.1f}")
            out(f"round{rnd}_cpu_us_per_binding", f"{cpu * 1e6 / bindings:.1f}")
            time.sleep(5)  # let the loop settle before timing the admin pages
            for path in ("/metrics", "/status.json", "/status"):
                times = []
                for _ in range(5):
                    _, took = http_get(path)
                    times.append(took)
                    time.sleep(1.1)  # the admin listener asks the driver at most once a second
                out(f"round{rnd}_get{path.replace('/', '_').replace('.', '_')}_ms",
                    f"{statistics.median(times) * 1000:.0f}")
            # `/metrics` while status pages are being built back to back: the page's list is
            # gathered a chunk per turn of the driver's loop, so the scrape need not wait for it.
            busy = threading.Event()

            def load_pages():
                while busy.is_set():
                    http_get("/status")

            pages = threading.Thread(target=load_pages, daemon=True)
            busy.set()
            pages.start()
            time.sleep(0.5)
            times = []
            for _ in range(5):
                _, took = http_get("/metrics")
                times.append(took)
                time.sleep(1.1)
            busy.clear()
            pages.join(timeout=120)
            out(f"round{rnd}_get_metrics_during_pages_ms",
                f"median {statistics.median(times) * 1000:.0f} max {max(times) * 1000:.0f}")
            _, cpu2 = proc_stat(proc.pid)
            out(f"round{rnd}_idle_cpu_s_during_page_timing", f"{cpu2 - cpu:.1f}")

            # A restart: the nodes keep what they hold; the reconciliation reads `location` and
            # the credentials again.
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            proc, t0, offset = start(binary, cfg_path, log)
            wait_until("reconciliation after the restart", proc, live, every=0.5)
            out(f"round{rnd}_restart_reconcile_s", f"{reconciled_after(log.name, offset, t0):.1f}")
            _, cpu3 = proc_stat(proc.pid)
            out(f"round{rnd}_restart_cpu_s_until_admin_answered", f"{cpu3:.1f}")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        registrars.stdin.close()
        rest = registrars.stdout.read()
        registrars.wait()
        print(rest, end="")
        log.close()
        out("log", os.path.join(work, "stderr.log"))


if __name__ == "__main__":
    main()
