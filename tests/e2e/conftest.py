"""Helpers for the compose suite: run against the stack `scripts/stack up` started.

Everything runs through real components: SIPp and baresip in the tester container, `asterisk -rx`
in the nodes, `regmirror user ...` in the regmirror container. Reusable fixtures:

  stack              Stack: exec wrappers, contacts per node, Kamailio's location, provisioning
  sipp               Sipp: run a scenario from tests/sipp in the tester (foreground/background)
  new_user           factory: provision a fresh numeric user with `regmirror user add`
  baresip            factory: start a baresip softphone for a user, driven over ctrl_tcp
  ports              allocator of distinct SIP/media/ctrl ports in the tester
"""

import contextlib
import itertools
import json
import os
import random
import re
import secrets
import shlex
import socket
import subprocess
import threading
import time
import queue
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("COMPOSE_PROJECT_NAME", "regmirror")
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
HOST_BINARY = Path(os.environ.get("REGMIRROR_BIN", ROOT / "target/release/regmirror"))

# The phones' network (the tester's softphones and SIPp): Kamailio's door and the RTP relay.
KAMAILIO = "10.78.0.20"
KAMAILIO_SIP = f"{KAMAILIO}:5060"
RTP_RELAY = "10.78.0.25"
TESTER = "10.78.0.50"
# The farm network, reached from here (the docker host) but not from the tester.
MARIADB = "10.77.0.10"
KAMAILIO_FARM = "10.77.0.20"
# The topology `scripts/stack up` chose: PROXIES=2 writes the pair's settings there.
STACK_ENV = dict(line.split("=", 1) for line in (
    (ROOT / "target/stack.env").read_text().splitlines()
    if (ROOT / "target/stack.env").is_file() else []) if "=" in line)
PROXY_PAIR = "KAMAILIO_FARM_VIP" in STACK_ENV
# Where regmirror's contacts on the nodes point: Kamailio's farm-side socket (a pair's floating
# address).
MIRROR_CONTACT_HOST = STACK_ENV.get("KAMAILIO_CONTACT", f"{KAMAILIO_FARM}:5060")
NODES = {"ast1": "10.77.0.31", "ast2": "10.77.0.32"}
REGMIRROR = "10.77.0.40"
ADMIN_URL = f"http://{REGMIRROR}:9070"
REALM = "regmirror.test"
PROVISIONER_URL = "mysql://provisioner:{}@mariadb:3306/regmirror".format(
    os.environ.get("PROVISIONER_DB_PASSWORD", "provisioner-demo")
)
# Scratch space inside the tester (inf files, SIPp traces, baresip config and logs);
# run.sh copies it to target/artifacts/ when the suite fails.
TMP = "/tmp/e2e"


def poll(fn, timeout, interval=0.05):
    """Call fn() until it returns a truthy value or `timeout` seconds pass.

    Returns (value, seconds until that call returned) for the first truthy call, or (last value, None) on timeout. A call
    that starts before the deadline counts, so the deadline bounds when the state is observed.
    """
    start = time.monotonic()
    value = None
    while True:
        t = time.monotonic()
        if t - start > timeout:
            return value, None
        value = fn()
        if value:
            # elapsed until the check that saw it returned: an upper bound of the latency
            return value, time.monotonic() - start
        time.sleep(interval)


def holds(fn, duration, interval=0.1):
    """fn() stays truthy for `duration` seconds; returns (True, None) or (False, last value)."""
    end = time.monotonic() + duration
    while True:
        value = fn()
        if not value:
            return False, value
        if time.monotonic() >= end:
            return True, None
        time.sleep(interval)


COMPOSE = ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "-p", PROJECT]
ADMINS = {"regmirror": "http://10.77.0.40:9070", "regmirror2": "http://10.77.0.41:9070"}


def compose(*args, timeout=120):
    res = subprocess.run(COMPOSE + list(args), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"docker-compose {args}: {res.stdout}\n{res.stderr}"
    return res


def cid(service):
    out = subprocess.run(
        [DOCKER, "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, check=True).stdout.split()
    assert out, f"no container for {service}"
    return out[0]


def healthy(service):
    res = subprocess.run([DOCKER, "inspect", "-f", "{{.State.Health.Status}}", cid(service)],
                         capture_output=True, text=True)
    return res.stdout.strip() == "healthy"


def wait_healthy(service, timeout=90):
    ok, took = poll(lambda: healthy(service), timeout, 0.5)
    assert ok, f"{service} not healthy within {timeout}s"
    return took


def metric(service, name, label=None):
    """Sum of a metric's samples on one regmirror instance, only those whose labels contain
    `label` (e.g. 'node="ast1"') when given; None if unreachable or (with a label) absent."""
    try:
        text = urllib.request.urlopen(f"{ADMINS[service]}/metrics", timeout=3).read().decode()
    except OSError:
        return None
    found = [(m.group(1) or "", float(m.group(2))) for m in
             re.finditer(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.M)]
    if label is None:
        return sum(v for _, v in found)
    matching = [v for labels, v in found if label in labels.split(",")]
    return sum(matching) if matching else None


def status(service):
    return json.loads(urllib.request.urlopen(f"{ADMINS[service]}/status.json", timeout=3).read())


def active():
    """The instances registering on the nodes (the standby one neither probes nor audits)."""
    return [s for s in ADMINS if metric(s, "regmirror_ha_active") == 1]


def node_users(stack, node):
    """Users that hold exactly our contact (sip:<user>@Kamailio) on a node; a user with more or
    other contacts is reported as `user!` so set comparisons catch it."""
    found = set()
    for user, uris in stack.contacts(node).items():
        if user == "kamailio":
            continue
        found.add(user if uris == [f"sip:{user}@{MIRROR_CONTACT_HOST}"] else f"{user}!")
    return found


def bulk_register(stack, users, port, *, rate=50, expires=600, background=False, calls=None,
                  target=KAMAILIO_SIP):
    """Register `users` through Kamailio with one SIPp run from one tester port (rows cycle
    when calls > len(users): refreshes). Returns SIPp's exit code, or the handle if background."""
    calls = calls or len(users)
    timeout = calls // rate + 20  # SIPp's -timeout bounds the whole run
    base = f"{TMP}/bulk-{port}-{time.monotonic_ns()}"
    inf = "SEQUENTIAL\n" + "".join(f"{u};{p};{expires}\n" for u, p in users)
    cmd = (f"mkdir -p {TMP} && printf %s '{inf}' > {base}.csv && "
           f"sipp -sf /work/tests/sipp/register.xml -inf {base}.csv -i {TESTER} -p {port} "
           f"-mp {20000 + port % 1000 * 4} -s {REALM} -m {calls} -r {rate} "
           f"-nostdin -timeout {timeout} -recv_timeout 4000 "
           f"{target} > {base}.out 2>&1; echo $? > {base}.rc")
    if background:
        return subprocess.Popen([DOCKER, "exec", stack.container("tester"), "bash", "-c", cmd],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.sh("tester", cmd, timeout=timeout + 30)
    return int(stack.sh("tester", f"cat {base}.rc").stdout.strip() or -1)


def bulk_provision(stack, users):
    """Provision users in three multi-row INSERTs per 500 (what `regmirror user add` writes,
    with a plaintext password), as the provisioner database user."""
    sql = []
    for i in range(0, len(users), 500):
        chunk = users[i:i + 500]
        sql.append("INSERT INTO ps_aors (id, max_contacts, remove_existing, qualify_frequency) "
                   "VALUES " + ",".join(f"('{u}',1,'yes',0)" for u, _ in chunk) + ";")
        sql.append("INSERT INTO ps_auths (id, auth_type, username, realm, password) VALUES "
                   + ",".join(f"('{u}','userpass','{u}','{REALM}','{p}')" for u, p in chunk)
                   + ";")
        sql.append("INSERT INTO ps_endpoints (id, aors, auth, context, disallow, allow, "
                   "direct_media, rewrite_contact, rtp_symmetric, force_rport, dtmf_mode, "
                   "identify_by) VALUES "
                   + ",".join(f"('{u}','{u}','{u}','phones','all','ulaw,alaw','no','no','yes',"
                              f"'no','rfc4733','username')" for u, _ in chunk) + ";")
    provisioner_sql(stack, "\n".join(sql))


def bulk_remove(stack, users):
    ids = ",".join(f"'{u}'" for u, _ in users)
    provisioner_sql(stack, "".join(f"DELETE FROM {t} WHERE id IN ({ids});"
                                   for t in ("ps_endpoints", "ps_auths", "ps_aors")))


def provisioner_sql(stack, sql):
    # in MariaDB's own container: the tester, on the phones' side, cannot reach the database
    res = stack.exec("mariadb", ["mariadb", "-h", "127.0.0.1", "-u", "provisioner", "regmirror"],
                     env={"MYSQL_PWD": "provisioner-demo"}, input=sql, timeout=60)
    assert res.returncode == 0, res.stderr


def node_cli(stack, *args, db=PROVISIONER_URL):
    """`regmirror node ...` inside the regmirror container (the nodes' AMI and Kamailio's RPC
    admit it), writing the farm list as the provisioner (`db=None`: the service's account)."""
    env = {"REGMIRROR_DATABASE_URL": db} if db else None
    return stack.exec("regmirror", ["regmirror", "node", *args], env=env, timeout=180)


@contextlib.contextmanager
def sidecar(stack, key, network):
    """The tester's image (SIPp, python3, tests/ mounted) idling with `network` (docker run
    --network arguments), reachable as stack service `key` while the context lasts."""
    name = f"regmirror-{key}-{os.getpid()}"
    subprocess.run([DOCKER, "run", "-d", "--rm", "--name", name, *network,
                    "-v", f"{ROOT / 'tests'}:/work/tests:ro",
                    "--entrypoint", "sleep", "regmirror/tester:dev", "infinity"],
                   check=True, capture_output=True, timeout=60)
    stack._ids[key] = name
    try:
        stack.sh(key, "mkdir -p /tmp/e2e", check=True)
        yield name
    finally:
        stack._ids.pop(key, None)
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True, timeout=60)


def converged(stack, users, nodes=("ast1", "ast2")):
    want = {u for u, _ in users}
    return all(want <= node_users(stack, n) for n in nodes)


class Stack:
    """The running compose project: containers by service, exec wrappers, state readers."""

    def __init__(self):
        self._ids = {}
        self._pool = ThreadPoolExecutor(max_workers=len(NODES))

    def container(self, service):
        if service not in self._ids:
            out = subprocess.run(
                [DOCKER, "ps", "-q",
                 "--filter", f"label=com.docker.compose.project={PROJECT}",
                 "--filter", f"label=com.docker.compose.service={service}"],
                capture_output=True, text=True, check=True,
            ).stdout.split()
            if not out:
                raise RuntimeError(f"service {service} is not running (scripts/stack up?)")
            self._ids[service] = out[0]
        return self._ids[service]

    def exec(self, service, argv, *, env=None, input=None, timeout=60, check=False, detach=False):
        cmd = [DOCKER, "exec", "-i"]
        if detach:
            cmd = [DOCKER, "exec", "-d"]
        for k, v in (env or {}).items():
            # the value stays out of argv (and so out of `ps`): docker reads it from our env
            cmd += ["-e", k]
        cmd += [self.container(service)] + list(argv)
        penv = dict(os.environ, **(env or {}))
        res = subprocess.run(cmd, input=input, capture_output=True, text=True,
                             timeout=timeout, env=penv)
        if check and res.returncode != 0:
            raise AssertionError(
                f"{service}: {argv!r} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res

    def sh(self, service, script, **kw):
        return self.exec(service, ["bash", "-c", script], **kw)

    # ----- Asterisk -----
    def ast(self, node, command, timeout=15):
        return self.exec(node, ["asterisk", "-rx", command], timeout=timeout, check=True).stdout

    def contacts(self, node):
        """{aor: [contact uri, ...]} from `pjsip show contacts` on one node."""
        found = {}
        for line in self.ast(node, "pjsip show contacts").splitlines():
            m = re.match(r"\s*Contact:\s+([^<\s/]+)/(\S+)", line)
            if m:
                found.setdefault(m.group(1), []).append(m.group(2))
        return found

    def contacts_of(self, user):
        """{node: [contact uri of `user`, ...]} for every node, read in parallel."""
        results = self._pool.map(lambda n: (n, self.contacts(n).get(user, [])), NODES)
        return dict(results)

    def mirrored(self, user):
        """True when every node holds exactly one contact for user, pointing at Kamailio."""
        want = [f"sip:{user}@{MIRROR_CONTACT_HOST}"]
        return all(c == want for c in self.contacts_of(user).values())

    def absent(self, user):
        return all(not c for c in self.contacts_of(user).values())

    def channels(self, node):
        out = self.ast(node, "core show channels count")
        m = re.search(r"(\d+) active channels?", out)
        return int(m.group(1)) if m else 0

    # ----- Kamailio -----
    def location(self, user):
        """Kamailio's contacts for an AOR (usrloc is write-through: the `location` table)."""
        if not re.fullmatch(r"[A-Za-z0-9._+-]{1,40}", user):
            raise ValueError("bad user id")
        res = self.exec("mariadb", [
            "mariadb", "-N", "-B", "regmirror", "-e",
            f"SELECT contact FROM location WHERE username = '{user}' AND expires > NOW()",
        ], check=True)
        return res.stdout.split()

    # ----- regmirror -----
    def regmirror_cli(self, *args, password=None, timeout=30):
        """`regmirror <args>` as the provisioner DB user: the host's release binary (which
        `scripts/stack up` builds) against mariadb's address, so provisioning works even while
        the regmirror service is stopped; else inside the regmirror container."""
        env = {}
        if password is not None:
            env["REGMIRROR_USER_PASSWORD"] = password
        if HOST_BINARY.is_file():
            env["REGMIRROR_DATABASE_URL"] = PROVISIONER_URL.replace("@mariadb:", f"@{MARIADB}:")
            return subprocess.run([str(HOST_BINARY), *args], capture_output=True, text=True,
                                  timeout=timeout, env=dict(os.environ, **env))
        env["REGMIRROR_DATABASE_URL"] = PROVISIONER_URL
        return self.exec("regmirror", ["regmirror", *args], env=env, timeout=timeout)

    def add_user(self, user, password):
        res = self.regmirror_cli("user", "add", user, "--realm", REALM, password=password)
        assert res.returncode == 0, f"regmirror user add {user}: {res.returncode} {res.stderr}"

    def remove_user(self, user):
        return self.regmirror_cli("user", "remove", user)


class FarmCapture:
    """tcpdump in Kamailio's network namespace: the SIP between Kamailio and the nodes, or
    what `expression` (a pcap filter) selects."""

    def __init__(self, expression=None):
        nodes = " or ".join(f"host {a}" for a in NODES.values())
        self.proc = subprocess.Popen(
            [DOCKER, "run", "--rm", "--network", f"container:{cid('kamailio')}",
             "--cap-add", "NET_RAW", "--cap-add", "NET_ADMIN", "--entrypoint", "tcpdump",
             "regmirror/tester:dev", "-i", "any", "-n", "-l", "-A", "-s", "0",
             expression or f"udp port 5060 and ({nodes})"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
        time.sleep(1.5)  # attached
        self.packets = []

    def stop(self):
        time.sleep(1)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        # "<time> eth0 In  IP <src>.<port> > <dst>.<port>: SIP: <first line>" then the payload
        for part in re.split(r"^(?=\d\d:\d\d:\d\d\.\d+ )", out, flags=re.M):
            m = re.match(r"\S+ \S+ +\S+ +IP (\d+\.\d+\.\d+\.\d+)\.\d+ > "
                         r"(\d+\.\d+\.\d+\.\d+)\.\d+", part)
            if m:
                self.packets.append((m.group(1), m.group(2), part))
        return self

    def invites(self, user, *, src=None, dst=None):
        """Max-Forwards of each INVITE (not retransmissions: one per branch) for `user`."""
        found = {}
        for s, d, text in self.packets:
            inv = re.search(rf"INVITE sip:{user}@\S+ SIP/2\.0", text)
            if not inv or (src and s != src) or (dst and d != dst):
                continue
            branch = re.search(r"branch=(\S+)", text)
            mf = re.search(r"^Max-Forwards: (\d+)", text, re.M)
            found[branch.group(1) if branch else len(found)] = int(mf.group(1)) if mf else None
        return list(found.values())


class SippResult:
    def __init__(self, rc, messages, stdout):
        self.rc = rc
        self.messages = messages
        self.stdout = stdout

    def responses(self, method=None):
        out = []
        for blk in self._blocks("received"):
            m = re.match(r"SIP/2\.0 (\d{3})", blk)
            if m and (method is None or re.search(rf"^CSeq:\s*\d+ {method}\s*$", blk, re.M | re.I)):
                out.append((int(m.group(1)), blk))
        return out

    def requests(self, method):
        return [b for b in self._blocks("received") if b.startswith(f"{method} ")]

    def _blocks(self, direction):
        # SIPp's message file: a dashed line with a timestamp, "UDP message received [n]
        # bytes :" (or "sent"), a blank line, the message.
        blocks = []
        for part in re.split(r"^-{10,}.*\n", self.messages.replace("\r", ""), flags=re.M):
            head, _, body = part.partition("\n")
            if f"message {direction}" in head:
                blocks.append(body.strip("\n"))
        return blocks


class Sipp:
    """SIPp in the tester, scenarios from tests/sipp (mounted at /work/tests/sipp)."""

    _seq = itertools.count()

    def __init__(self, stack):
        self.stack = stack

    def _script(self, scenario, rows, port, mport, args, timeout, source=TESTER):
        n = next(self._seq)
        base = f"{TMP}/sipp-{os.getpid()}-{n}-{Path(scenario).stem}"
        inf = "\n".join(["SEQUENTIAL"] + [";".join(map(str, r)) for r in rows]) + "\n"
        cmd = [
            "sipp", "-sf", f"/work/tests/sipp/{scenario}", "-i", source, "-p", str(port),
            "-mp", str(mport), "-s", REALM, "-m", "1", "-nostdin",
            "-timeout", str(timeout), "-timeout_error",
            "-trace_msg", "-message_file", f"{base}.msg",
            "-trace_err", "-error_file", f"{base}.err",
        ]
        if rows:
            cmd += ["-inf", f"{base}.csv"]
        cmd += list(args)
        script = (f"mkdir -p {TMP} && printf %s {shlex.quote(inf)} > {base}.csv && "
                  f"{shlex.join(cmd)} > {base}.out 2>&1; rc=$?; echo $rc > {base}.rc")
        return base, script

    def run(self, scenario, rows=(), *, port, mport=None, args=(), target=KAMAILIO_SIP,
            timeout=15, source=TESTER, host="tester"):
        """Run one call of `scenario` from `source` (an address of `host`, the tester unless
        told) and wait; returns a SippResult (rc 0 = pass)."""
        args = list(args) + ([target] if target else [])
        base, script = self._script(scenario, rows, port, mport or 10000 + (port % 1000) * 4,
                                    args, timeout, source)
        self.stack.sh(host, script, timeout=timeout + 15)
        return self.result(base, host)

    def start(self, scenario, rows=(), *, port, mport=None, args=(), target=None, timeout=20):
        """Start `scenario` in the background (e.g. an answering phone); returns a handle."""
        args = list(args) + ([target] if target else [])
        base, script = self._script(scenario, rows, port, mport or 10000 + (port % 1000) * 4, args, timeout)
        proc = subprocess.Popen(
            [DOCKER, "exec", self.stack.container("tester"), "bash", "-c", script],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _Background(self, base, proc, timeout)

    def result(self, base, host="tester"):
        out = self.stack.sh(host, f"cat {base}.rc; echo ===; cat {base}.msg 2>/dev/null; "
                                      f"echo ===; tail -n 30 {base}.out {base}.err 2>/dev/null")
        rc_text, messages, stdout = (out.stdout.split("===\n", 2) + ["", ""])[:3]
        rc = int(rc_text.strip()) if rc_text.strip().lstrip("-").isdigit() else -1
        return SippResult(rc, messages, stdout)


    def wait_listening(self, port, timeout=5):
        """A background SIPp has bound its UDP port (so an INVITE to it will not be lost)."""
        ok, _ = poll(lambda: f":{port} " in self.stack.sh(
            "tester", f"ss -Hnlu 'sport = :{port}'").stdout, timeout, 0.05)
        assert ok, f"nothing listens on udp {port} in the tester"


class _Background:
    def __init__(self, sipp, base, proc, timeout):
        self.sipp, self.base, self.proc, self.timeout = sipp, base, proc, timeout
        self.result = None

    def wait(self):
        if self.result is None:
            self.proc.wait(timeout=self.timeout + 15)
            self.result = self.sipp.result(self.base)
        return self.result


class Baresip:
    """A baresip softphone in the tester, driven through ctrl_tcp (netstring JSON)."""

    def __init__(self, stack, user, password, *, sip_port, ctrl_port):
        self.stack, self.user, self.password = stack, user, password
        self.sip_port, self.ctrl_port = sip_port, ctrl_port
        self.dir = f"{TMP}/baresip-{user}-{sip_port}"
        self.events = queue.Queue()
        self.responses = queue.Queue()
        self.sock = None
        self._token = itertools.count()

    def config(self):
        rtp_lo = 20000 + (self.sip_port % 100) * 20
        return "\n".join([
            "poll_method epoll",
            f"sip_listen {TESTER}:{self.sip_port}",
            "call_local_timeout 120",
            "audio_player aubridge,nil",
            "audio_source ausine,440",
            "audio_alert aubridge,nil",
            "ausrc_srate 48000",
            "ausrc_channels 2",
            "auplay_srate 48000",
            "auplay_channels 2",
            f"rtp_ports {rtp_lo}-{rtp_lo + 19}",
            "rtp_stats yes",
            "module_path /usr/lib/baresip/modules",
            "module g711.so",
            "module ausine.so",
            "module aubridge.so",
            "module_app account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen {TESTER}:{self.ctrl_port}",
            "",
        ])

    def account(self):
        return (f"<sip:{self.user}@{REALM}>;auth_pass={self.password};"
                f"outbound=\"sip:{KAMAILIO}\";answermode=manual;regint=120;"
                "audio_codecs=PCMU,PCMA;ptime=20;mediaenc=\n")

    def start(self):
        d = self.dir
        script = (f"rm -rf {d} && mkdir -p {d} && cat > {d}/config <<'EOF'\n{self.config()}EOF\n"
                  f"cat > {d}/accounts <<'EOF'\n{self.account()}EOF\n"
                  f"touch {d}/contacts {d}/current_contact\n")
        self.stack.sh("tester", script, check=True)
        self.stack.sh("tester", f"cd {d} && exec baresip -f {d} > {d}/log 2>&1 & echo $! > {d}/pid",
                      detach=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.create_connection((TESTER, self.ctrl_port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"baresip {self.user}: no ctrl_tcp\n{self.log()}")
                time.sleep(0.1)
        self.sock.settimeout(None)
        threading.Thread(target=self._reader, daemon=True).start()
        return self

    def _reader(self):
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon < 0 or not buf[:colon].isdigit():
                    break
                n = int(buf[:colon])
                if len(buf) < colon + 1 + n + 1:
                    break
                payload = buf[colon + 1:colon + 1 + n]
                buf = buf[colon + 2 + n:]
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                (self.events if msg.get("event") else self.responses).put(msg)

    def command(self, command, params="", timeout=5):
        token = str(next(self._token))
        data = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(b"%d:%s," % (len(data), data))
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.responses.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"baresip {self.user}: no response to {command}")
            if msg.get("token") == token:
                return msg

    def wait_event(self, *types, timeout=10):
        """Next event whose type is in `types` (others are kept in self.seen)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"baresip {self.user}: no {types} within {timeout}s\n"
                                     f"{self.log()[-3000:]}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev.get("type") in types:
                return ev

    def wait_registered(self, timeout=10):
        """Kamailio holds this phone's contact (found by address: baresip's Contact user is
        `<user>-0x...`). Registration may finish before ctrl_tcp accepts us, so no event."""
        addr = f"@{TESTER}:{self.sip_port}"
        found, _ = poll(lambda: any(addr in c for c in self.stack.location(self.user)),
                        timeout, 0.1)
        assert found, f"baresip {self.user} not registered\n{self.log()[-2000:]}"

    def log(self):
        return self.stack.sh("tester", f"cat {self.dir}/log 2>/dev/null").stdout

    def rtp_packets(self):
        """(tx, rx) audio RTP packet counts from the `rtp_stats` summary printed at hangup."""
        log = self.log()
        m = re.findall(r"packets:\s+(\d+)\s+(\d+)", log)
        if not m:
            return None
        tx, rx = m[-1]
        return int(tx), int(rx)

    def stop(self):
        if self.sock is not None:
            try:
                self.command("quit", timeout=2)
            except (AssertionError, OSError):
                pass
            self.sock.close()
        self.stack.sh("tester", f"for i in $(seq 1 30); do kill -0 $(cat {self.dir}/pid) "
                                f"2>/dev/null || exit 0; sleep 0.1; done; "
                                f"kill $(cat {self.dir}/pid) 2>/dev/null; exit 0")


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    # not regmirror: tests must be able to run (and fail) with it stopped
    for svc in ("mariadb", "kamailio", "ast1", "ast2", "tester"):
        s.container(svc)
    s.sh("tester", f"mkdir -p {TMP}", check=True)
    return s


@pytest.fixture(scope="session")
def sipp(stack):
    return Sipp(stack)


@pytest.fixture(scope="module")
def beside_regmirror(stack):
    """SIPp with regmirror's own address (in its network namespace), as service
    "beside-regmirror": what a compromised regmirror host could send, or a host registering
    straight to a node behind regmirror's back."""
    with sidecar(stack, "beside-regmirror",
                 ["--network", f"container:{stack.container('regmirror')}"]):
        yield REGMIRROR


@pytest.fixture(scope="session")
def ports():
    """Distinct SIP ports in the tester (SIPp media: 10000 + 4 * (port % 1000); baresip
    ctrl_tcp: SIP port + 2000; baresip binds SIP port + 1 for TLS)."""
    return itertools.count(5100, 2)


@pytest.fixture(scope="session")
def user_ids():
    # Numeric (the dialplan dials digits) and fresh per session, so a rerun against a live
    # stack never meets an earlier run's users or bindings.
    prefix = random.randint(1000, 9999)
    return (f"7{prefix}{n:02d}" for n in itertools.count(1))


@pytest.fixture
def new_user(stack, user_ids):
    """Factory: provision a fresh user with `regmirror user add`; removed after the test."""
    made = []

    def make():
        user, password = next(user_ids), secrets.token_hex(8)
        stack.add_user(user, password)
        made.append(user)
        return user, password

    yield make
    for user in made:
        stack.remove_user(user)


@pytest.fixture
def baresip(stack, ports):
    """Factory: baresip(user, password) -> started Baresip; stopped after the test."""
    phones = []

    def make(user, password):
        sip_port = next(ports)
        phone = Baresip(stack, user, password, sip_port=sip_port, ctrl_port=sip_port + 2000)
        phones.append(phone)
        return phone.start()

    yield make
    for phone in phones:
        phone.stop()


class Phone:
    """A SIPp phone registered through Kamailio from one tester port."""

    def __init__(self, sipp, user, password, port, target=KAMAILIO_SIP):
        self.sipp, self.user, self.password, self.port = sipp, user, password, port
        self.target = target  # the proxy it registers at
        self.registered = False
        self.pending = []

    def register(self, expires=120):
        res = self.sipp.run("register.xml", [(self.user, self.password, expires)],
                            port=self.port, target=self.target)
        assert res.rc == 0, f"REGISTER {self.user} from :{self.port} failed\n{res.stdout}"
        assert [c for c, _ in res.responses("REGISTER")] == [401, 200]
        self.registered = expires > 0
        return res

    def unregister(self):
        for bg in self.pending:  # the port must be free again
            bg.wait()
        self.pending = []
        res = self.sipp.run("register.xml", [(self.user, self.password, 0)], port=self.port,
                            target=self.target)
        assert res.rc == 0, f"unREGISTER {self.user} from :{self.port} failed\n{res.stdout}"
        self.registered = False
        return res

    def answer(self, timeout=20, args=("-rtp_echo",)):
        """Answer one call on this phone's port (background SIPp; .wait() for the result)."""
        bg = self.sipp.start("uas-answer.xml", port=self.port, args=list(args), timeout=timeout)
        self.pending.append(bg)
        self.sipp.wait_listening(self.port)
        return bg


@pytest.fixture
def phone(sipp, ports):
    """Factory: phone(user, password) -> Phone on a fresh port; unregistered after the test."""
    made = []

    def make(user, password, target=KAMAILIO_SIP):
        p = Phone(sipp, user, password, next(ports), target)
        made.append(p)
        return p

    yield make
    for p in made:
        if p.registered:
            try:
                p.unregister()
            except AssertionError as e:  # do not hide the test's own failure
                print(f"teardown: {e}")
