"""Issue 18: two Kamailio proxies on Kamailio's own replication (DMQ, dmq_usrloc) with floating
addresses (keepalived): phones register at either, calls reach them whichever proxy and node
carry them, regmirror mirrors each AOR once, and killing the active proxy under load loses
nothing. Runs on the pair topology (`PROXIES=2 scripts/stack up`; tests/run-all.sh runs this
file on it after the main suite)."""

import json
import os
import re
import subprocess
import time

import pytest

from conftest import (ADMINS, DOCKER, KAMAILIO_SIP, MIRROR_CONTACT_HOST, NODES, PROXY_PAIR,
                      bulk_provision, bulk_register, bulk_remove, compose, converged, metric,
                      node_cli, node_users, poll, provisioner_sql, sidecar, wait_healthy)
from test_hostile import REGMIRRORS, SPOOF, spoofed_notification

pytestmark = pytest.mark.skipif(
    not PROXY_PAIR and os.environ.get("REGMIRROR_REQUIRE_PROXIES") != "1",
    reason="one proxy: these need `PROXIES=2 scripts/stack up`")

KAMAILIO2_SIP = "10.78.0.21:5060"
PHONE_VIP = "10.78.0.22"
PHONE_VIP_SIP = f"{PHONE_VIP}:5060"
FARM_VIP = "10.77.0.22"
PROXIES = ("kamailio", "kamailio2")
HOSTILE = "10.78.0.54"
# A farm node that exists only in the farm list (the farm changed while a proxy was down).
SPARE_NODE = "10.77.0.39:5060"
INTRUDER = "10.77.0.61"


def kamcmd(stack, proxy, *args, check=True):
    return stack.exec(proxy, ["kamcmd", "-s", "unix:/run/kamailio/kamailio_ctl", *args],
                      check=check).stdout


def usrloc_contacts(stack, proxy, user):
    """The contact addresses one proxy's usrloc holds for `user` (its memory, not the table)."""
    out = kamcmd(stack, proxy, "ul.lookup", "location", f"s:{user}", check=False)
    return re.findall(r"Address: (\S+)", out)


def dispatcher_uris(stack, proxy):
    return set(re.findall(r"URI: (\S+)", kamcmd(stack, proxy, "dispatcher.list")))


def farm_rows(stack):
    return stack.exec("mariadb", ["mariadb", "-N", "-B", "regmirror", "-e",
                                  "SELECT destination FROM dispatcher"], check=True).stdout


def vip_holder(stack):
    """The proxy whose interfaces hold both floating addresses (None while neither does)."""
    for proxy in PROXIES:
        try:
            out = stack.exec(proxy, ["ip", "-o", "-4", "addr", "show"], timeout=5).stdout
        except Exception:  # a killed proxy has no container to exec in
            continue
        if f" {FARM_VIP}/" in out and f" {PHONE_VIP}/" in out:
            return proxy
    return None


def answered_by(call):
    """The node that answered a SIPp call (its 200 OK's Server header)."""
    for code, blk in call.responses("INVITE"):
        m = re.search(r"^Server: Asterisk \((ast\d)\)$", blk, re.M)
        if code == 200 and m:
            return m.group(1)
    return None


def call(sipp, caller, callee, target):
    """One call caller -> callee placed through `target`; the callee's phone must answer."""
    uas = callee.answer()
    res = sipp.run("uac-call.xml", [(caller.user, caller.password, callee.user)],
                   port=caller.port, target=target, timeout=20)
    got = uas.wait()
    assert res.rc == 0, f"call {caller.user} -> {callee.user} via {target} failed\n{res.stdout}"
    assert got.rc == 0 and got.requests("INVITE"), f"{callee.user} got no call\n{got.stdout}"
    return res


@pytest.fixture
def both_proxies_up(stack):
    """A proxy the test killed is started again afterwards."""
    yield
    for proxy in PROXIES:
        if not kamailio_running(stack, proxy):
            compose("start", proxy)
            wait_healthy(proxy)


def logs_since(stack, service, t):
    res = subprocess.run([DOCKER, "logs", "--since", str(int(t)), stack.container(service)],
                         capture_output=True, text=True)
    return res.stdout + res.stderr


def kamailio_running(stack, proxy):
    res = subprocess.run([DOCKER, "inspect", "-f", "{{.State.Running}}", stack.container(proxy)],
                         capture_output=True, text=True)
    return res.stdout.strip() == "true"


def test_a_phone_registers_at_either_proxy_and_is_mirrored_once(stack, new_user, phone):
    """A phone registered at kamailio and one at kamailio2 are in both proxies' usrloc (DMQ),
    in one `location` row each, and each holds exactly one contact per node, the floating
    address: regmirror took both proxies' notifications and mirrored each AOR once."""
    at1 = phone(*new_user(), target=KAMAILIO_SIP)
    at2 = phone(*new_user(), target=KAMAILIO2_SIP)
    accepted = {s: metric(s, "regmirror_notifications_total", 'result="accepted"') or 0
                for s in ADMINS}
    at1.register()
    at2.register()
    for p in (at1, at2):
        ok, _ = poll(lambda: all(usrloc_contacts(stack, k, p.user) for k in PROXIES), 2)
        assert ok, {k: usrloc_contacts(stack, k, p.user) for k in PROXIES}
        assert len(stack.location(p.user)) == 1, stack.location(p.user)
        assert poll(lambda: stack.mirrored(p.user), 2)[0], stack.contacts_of(p.user)
    assert MIRROR_CONTACT_HOST == f"{FARM_VIP}:5060"
    # one notification per registration, to each instance, whichever proxy took it
    for s in ADMINS:
        assert (metric(s, "regmirror_notifications_total", 'result="accepted"') or 0) \
            >= accepted[s] + 2, s
    for s in ADMINS:
        assert (metric(s, "regmirror_notifications_total", 'result="untrusted"') or 0) == 0, s


def test_a_notification_forged_from_the_second_proxys_address_changes_nothing(stack, new_user,
                                                                            phone):
    """kamailio2's address is trusted like kamailio's, and what comes from it is verified like
    what comes from kamailio: an unsigned delete sent to both regmirror instances by a farm-side
    host forging kamailio2's address is dropped as forged, and the user stays on both nodes."""
    p = phone(*new_user(), target=KAMAILIO2_SIP)
    p.register()
    assert poll(lambda: stack.mirrored(p.user), 2)[0], stack.contacts_of(p.user)
    before = {s: metric(s, "regmirror_notifications_total", 'result="forged"') or 0
              for s in ADMINS}
    msg = spoofed_notification(p.user, time_us=int(time.time() * 1e6)).replace("\n", "\r\n")
    with sidecar(stack, "forger", ["--network", "regmirror", "--ip", INTRUDER]):
        for instance in REGMIRRORS:
            stack.exec("forger", ["python3", "-c", SPOOF, "10.77.0.21", instance, "5070"],
                       input=msg, check=True)
    ok, _ = poll(lambda: all((metric(s, "regmirror_notifications_total", 'result="forged"')
                              or 0) > before[s] for s in ADMINS), 3)
    assert ok, "not counted as forged"
    time.sleep(1)
    assert stack.mirrored(p.user), stack.contacts_of(p.user)


def test_calls_reach_the_phone_whichever_proxy_and_node_carry_them(stack, new_user, phone, sipp):
    """Calls placed through kamailio and through kamailio2 land on both nodes in turn (each
    proxy's dispatcher) and are answered by the callee, registered at the other proxy's own
    address: the node's leg to the floating address reaches it through the replicated contact."""
    callee = phone(*new_user(), target=KAMAILIO2_SIP)
    caller = phone(*new_user(), target=KAMAILIO_SIP)
    callee.register()
    caller.register()
    assert poll(lambda: stack.mirrored(callee.user), 2)[0], stack.contacts_of(callee.user)
    for target in (KAMAILIO_SIP, KAMAILIO2_SIP):
        nodes = set()
        for _ in range(6):
            nodes.add(answered_by(call(sipp, caller, callee, target)))
            if nodes == {"ast1", "ast2"}:
                break
        assert nodes == {"ast1", "ast2"}, f"calls via {target} answered by {nodes}"


def test_killing_the_active_proxy_under_load_loses_nothing(stack, new_user, phone, sipp,
                                                           both_proxies_up):
    """300 phones registered at the floating address; while they re-register at 100/s the proxy
    holding it is killed. keepalived moves the addresses to the other proxy; phones that
    re-register get their 200 OK from it and are callable at once; a phone that does not
    re-register is still callable (its contact was replicated); no node lost a contact and
    regmirror unregistered nothing. The killed proxy comes back with every contact."""
    assert poll(lambda: vip_holder(stack), 10)[0], "no proxy holds the floating addresses"
    # whatever an earlier test left for the nodes is done
    assert poll(lambda: all(metric(s, "regmirror_queued_bindings") == 0 for s in ADMINS), 60)[0]
    active = vip_holder(stack)
    standby = next(k for k in PROXIES if k != active)
    # one port for every round: each phone keeps one contact (a refresh, not a second device)
    users = [(f"8{os.getpid() % 1000:03d}{n:04d}", f"pw{n:04d}x") for n in range(300)]
    bulk_provision(stack, users)
    try:
        assert bulk_register(stack, users, 5301, rate=100, expires=600, target=PHONE_VIP_SIP) == 0
        assert poll(lambda: converged(stack, users), 30)[0], "not all mirrored before the kill"
        quiet = phone(*new_user(), target=PHONE_VIP_SIP)  # registers once, before the kill
        quiet.register()
        assert poll(lambda: stack.mirrored(quiet.user), 10)[0], stack.contacts_of(quiet.user)

        load = bulk_register(stack, users, 5301, rate=100, expires=600, target=PHONE_VIP_SIP,
                             background=True)
        time.sleep(1.0)
        t_wall, t_kill = time.time(), time.monotonic()
        subprocess.run([DOCKER, "kill", stack.container(active)], check=True,
                       capture_output=True)
        ok, _ = poll(lambda: vip_holder(stack) == standby, 15, 0.1)
        failover = time.monotonic() - t_kill
        assert ok, "the floating addresses did not move"
        load.wait(timeout=60)

        # a phone re-registering now gets its 200 from the standby, and is callable at once
        mover = phone(*new_user(), target=PHONE_VIP_SIP)
        caller = phone(*new_user(), target=PHONE_VIP_SIP)
        t_reg = time.monotonic()
        mover.register()
        caller.register()
        call(sipp, caller, mover, PHONE_VIP_SIP)
        first_call = time.monotonic() - t_reg
        # the phone that said nothing since the kill: its replicated contact
        call(sipp, caller, quiet, PHONE_VIP_SIP)

        # every phone re-registers through the standby: all 200 OK
        assert bulk_register(stack, users, 5301, rate=100, expires=600,
                             target=PHONE_VIP_SIP) == 0
        missing = {n: {u for u, _ in users} - node_users(stack, n) for n in ("ast1", "ast2")}
        assert not any(missing.values()), {n: sorted(m)[:5] for n, m in missing.items()}
        mine = {u for u, _ in users} | {quiet.user}
        undone = [line for s in ADMINS for line in logs_since(stack, s, t_wall).splitlines()
                  if 'state="unregistering"' in line
                  and re.search(r"user=(\S+)", line).group(1) in mine]
        assert not undone, undone[:5]
        print(f"\nfailover of the floating addresses {failover:.1f} s after the kill; "
              f"register + first call through the standby {first_call:.1f} s")

        # the farm list changes while one proxy is down: the other reloads it at once, the one
        # down reads the table when it starts
        added = node_cli(stack, "add", "ast9", "--address", SPARE_NODE)
        assert added.returncode == 0, added.stdout + added.stderr
        assert "1 Kamailio proxy(ies) reloaded" in added.stdout, added.stdout
        assert "skipped" in added.stderr, added.stderr
        assert f"sip:{SPARE_NODE}" in dispatcher_uris(stack, standby)

        # the killed proxy comes back (nopreempt: it does not take the addresses back) and
        # has every contact again: the database at start, then DMQ's full sync
        restarted = time.time()
        compose("start", active)
        wait_healthy(active)
        # its keepalived runs again, as the standby
        ok, _ = poll(lambda: "Entering BACKUP STATE" in logs_since(stack, active, restarted),
                     10, 0.5)
        assert ok, f"{active}'s keepalived did not come back"
        ok, _ = poll(lambda: all(usrloc_contacts(stack, active, u) for u, _ in users[:20]), 20)
        assert ok, "the proxy that came back lacks contacts"
        assert vip_holder(stack) == standby
        assert f"sip:{SPARE_NODE}" in dispatcher_uris(stack, active)
        removed = node_cli(stack, "remove", "ast9", "--gone")
        assert removed.returncode == 0 and "skipped" not in removed.stderr, removed.stderr
        assert all(f"sip:{SPARE_NODE}" not in dispatcher_uris(stack, k) for k in PROXIES)
    finally:
        if SPARE_NODE in farm_rows(stack):
            provisioner_sql(stack, f"DELETE FROM dispatcher WHERE destination = 'sip:{SPARE_NODE}';")
            for k in PROXIES:
                if kamailio_running(stack, k):
                    kamcmd(stack, k, "dispatcher.reload")
        # unregistered (and so off the nodes) before the rows go: a user deleted first can only
        # be taken off the nodes over AMI, one listing per user
        bulk_register(stack, users, 5301, rate=100, expires=0, target=PHONE_VIP_SIP)
        poll(lambda: not any({u for u, _ in users} & node_users(stack, n) for n in NODES), 30, 1)
        bulk_remove(stack, users)


KDMQ = ("KDMQ sip:usrloc@{dst} SIP/2.0\n"
        "Via: SIP/2.0/UDP {src}:5090;branch=z9hG4bK{n}\n"
        "To: <sip:usrloc@{dst}>\nFrom: <sip:usrloc@{src}:5090>;tag={n}\n"
        "CSeq: 10 KDMQ\nCall-ID: {n}@{src}\nMax-Forwards: 1\n"
        "Content-Type: application/json\nContent-Length: {length}\n\n{body}")

SEND_UDP = r"""
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.sendto(sys.stdin.buffer.read(), (dst, port))
"""


def test_replication_takes_nothing_from_anyone_but_the_peer(stack, new_user, phone):
    """A genuine-looking dmq_usrloc update (a contact for a real user, pointing at the sender)
    sent as KDMQ from a phones'-side address to every proxy address there, and from a farm-side
    neighbour to each replication port: no proxy stores it, no node or row changes."""
    victim = phone(*new_user(), target=PHONE_VIP_SIP)
    victim.register()
    assert poll(lambda: stack.mirrored(victim.user), 2)[0]
    before = {k: usrloc_contacts(stack, k, victim.user) for k in PROXIES}
    now = int(time.time())

    def kdmq(src, dst, n):
        body = json.dumps({
            "action": 1, "aor": victim.user, "ruid": f"uloc-forged-{n}",
            "c": f"sip:{victim.user}@{src}:5060", "received": "", "path": "",
            "callid": f"forged-{n}", "user_agent": "x", "instance": "", "expires": now + 3600,
            "cseq": 1, "flags": 0, "cflags": 0, "q": -1, "last_modified": now,
            "methods": 4294967295, "reg_id": 0, "server_id": 0}, separators=(",", ":"))
        return KDMQ.format(dst=dst, src=src, n=n, body=body, length=len(body)).replace("\n", "\r\n")

    stack.sh("tester", f"ip addr add {HOSTILE}/24 dev eth0 2>/dev/null; true", check=True)
    try:
        for n, dst in enumerate(("10.78.0.20", "10.78.0.21", PHONE_VIP)):
            stack.exec("tester", ["python3", "-c", SEND_UDP, HOSTILE, dst, "5060"],
                       input=kdmq(HOSTILE, f"{dst}:5060", n), check=True)
    finally:
        stack.sh("tester", f"ip addr del {HOSTILE}/24 dev eth0 2>/dev/null; true")
    with sidecar(stack, "dmq-intruder", ["--network", "regmirror", "--ip", INTRUDER]):
        for n, dst in enumerate(("10.77.0.20", "10.77.0.21"), start=10):
            stack.exec("dmq-intruder", ["python3", "-c", SEND_UDP, INTRUDER, dst, "5090"],
                       input=kdmq(INTRUDER, f"{dst}:5090", n), check=True)
    time.sleep(1)
    for k in PROXIES:
        assert usrloc_contacts(stack, k, victim.user) == before[k], k
    assert not any(h in c for c in stack.location(victim.user) for h in (HOSTILE, INTRUDER))
    assert stack.mirrored(victim.user), stack.contacts_of(victim.user)
    logs = "".join(logs_since(stack, k, time.time() - 60) for k in PROXIES)
    assert logs.count("dropping KDMQ from 10.78.0.54") >= 1, logs[-2000:]
    assert logs.count("on the replication port") >= 1, logs[-2000:]
