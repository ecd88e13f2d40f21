"""Issue 15: Kamailio is the one door. What a host on the phones' side sends must not change a
binding, reach the farm behind Kamailio's back or crash a service. Phone-side attacks are sent
from 10.78.0.51 and up, extra addresses of the tester that are not exempt from Kamailio's flood
bans (the tester's main address is, for load tests). The phones' network reaches nothing but
Kamailio and the RTP relay; attacks that need the farm network (a forged source address, a
flood at regmirror, the nodes' and AMI's own ACLs) come from an intruder container there,
10.77.0.60, an address none of the farm's ACLs admit."""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import threading
import time

import pytest

from conftest import (ADMINS, DOCKER, KAMAILIO, KAMAILIO_FARM, MARIADB, NODES, REGMIRROR, ROOT,
                      FarmCapture, bulk_provision, bulk_register, bulk_remove, converged, metric,
                      poll, sidecar)

HOSTILE = "10.78.0.51"
INTRUDER = "10.77.0.60"
REGMIRRORS = (REGMIRROR, "10.77.0.41")

# Runs in the tester: one UDP datagram from HOSTILE to Kamailio, the first response line back.
SEND = r"""
import json, socket, sys
src, dst, payload = sys.argv[1], sys.argv[2], sys.stdin.read().encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(3)
host, port = dst.split(":")
s.sendto(payload.replace(b"@PORT@", str(s.getsockname()[1]).encode()), (host, int(port)))
try:
    data, peer = s.recvfrom(65535)
    print(json.dumps({"from": f"{peer[0]}:{peer[1]}", "line": data.split(b"\r\n")[0].decode()}))
except socket.timeout:
    print(json.dumps({"from": None, "line": None}))
"""


@pytest.fixture(scope="module")
def intruder(stack):
    """A host on the farm network that is not Kamailio, a node or regmirror (a compromised
    neighbour), as stack service "intruder"."""
    with sidecar(stack, "intruder", ["--network", "regmirror", "--ip", INTRUDER]):
        yield INTRUDER


@pytest.fixture(scope="module")
def hostile(stack):
    stack.sh("tester", f"ip addr add {HOSTILE}/24 dev eth0 2>/dev/null; true", check=True)
    yield HOSTILE
    stack.sh("tester", f"ip addr del {HOSTILE}/24 dev eth0 2>/dev/null; true")


def send(stack, payload):
    res = stack.exec("tester", ["python3", "-c", SEND, HOSTILE, f"{KAMAILIO}:5060"],
                     input=payload.replace("\n", "\r\n"), timeout=15, check=True)
    return json.loads(res.stdout)


def forged_delete(user, request_uri, routes):
    """An in-dialog-looking MESSAGE (To-tag, Route through Kamailio) carrying the notification
    contract's headers for `user`, time in the future so real ones would look stale after it."""
    future_us = int((time.time() + 3600) * 1e6)
    tag = secrets.token_hex(4)
    return (f"MESSAGE {request_uri} SIP/2.0\n"
            f"Via: SIP/2.0/UDP {HOSTILE}:@PORT@;branch=z9hG4bK{secrets.token_hex(6)};rport\n"
            f"Route: {routes}\n"
            f"From: <sip:kamailio@{KAMAILIO}>;tag={tag}\n"
            f"To: <sip:regmirror@{REGMIRROR}:5070>;tag=x{tag}\n"
            f"Call-ID: {secrets.token_hex(8)}@{HOSTILE}\n"
            "CSeq: 1 MESSAGE\n"
            "Max-Forwards: 70\n"
            "X-RegMirror-Event: delete\n"
            f"X-RegMirror-AOR: {user}\n"
            "X-RegMirror-Expires: 0\n"
            "X-RegMirror-Contacts: 0\n"
            f"X-RegMirror-Time: {future_us}\n"
            "Content-Length: 0\n\n")


@pytest.mark.parametrize("how", ["request-uri", "route"])
def test_a_forged_notification_relayed_by_kamailio_changes_no_binding(
        stack, hostile, new_user, phone, how):
    """The forged `delete` goes to Kamailio with a To-tag and a Route naming Kamailio, aimed at
    regmirror by its Request-URI or by a second Route: Kamailio refuses to relay it, and the
    user stays registered on both nodes."""
    p = phone(*new_user())
    p.register()
    assert poll(lambda: stack.mirrored(p.user), 2)[0], stack.contacts_of(p.user)
    if how == "request-uri":
        msg = forged_delete(p.user, f"sip:regmirror@{REGMIRROR}:5070", f"<sip:{KAMAILIO};lr>")
    else:
        msg = forged_delete(p.user, f"sip:regmirror@{KAMAILIO}",
                            f"<sip:{KAMAILIO};lr>, <sip:{REGMIRROR}:5070;lr>")
    answer = send(stack, msg)
    assert answer["line"] is None or not answer["line"].startswith("SIP/2.0 2"), answer
    time.sleep(2)  # what regmirror would have done by now
    assert stack.mirrored(p.user), f"binding changed: {stack.contacts_of(p.user)}"
    # and a real refresh is not taken for stale afterwards
    p.register()
    assert poll(lambda: stack.mirrored(p.user), 2)[0], stack.contacts_of(p.user)
    print(f"\n{how}: Kamailio answered {answer}")


# ----- notifications with a forged source address -----

# The compose stack's demo key (docker-compose.yml NOTIFY_KEY): what a captured notification
# would carry, to show that one replayed later is refused too.
DEMO_KEY = b"regmirror-notify-demo-key"

# Runs in the intruder: one UDP datagram whose IP source is Kamailio's (a raw socket), the
# attack a host on Kamailio's farm network can make without passing through Kamailio at all.
SPOOF = r"""
import socket, struct, sys
src, dst, dport = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = sys.stdin.buffer.read()
udp = struct.pack("!HHHH", 5060, dport, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (dst, 0))
"""


def spoofed_notification(user, *, time_us, key=None):
    """A delete notification for `user` exactly as Kamailio would send it, signed with `key`
    (an attacker's guess, or the real key for a captured one), or unsigned."""
    headers = (f"X-RegMirror-Event: delete\nX-RegMirror-AOR: {user}\nX-RegMirror-Expires: 0\n"
               f"X-RegMirror-Contacts: 0\nX-RegMirror-Time: {time_us}\n")
    if key is not None:
        tag = hmac.new(key, f"delete|{user}|0|0|{time_us}".encode(), hashlib.sha256).digest()
        headers += f"X-RegMirror-Auth: {base64.urlsafe_b64encode(tag).decode().rstrip('=')}\n"
    return (f"MESSAGE sip:regmirror@{REGMIRROR}:5070 SIP/2.0\n"
            f"Via: SIP/2.0/UDP {KAMAILIO_FARM}:5060;branch=z9hG4bK{secrets.token_hex(6)}\n"
            f"From: <sip:kamailio@{KAMAILIO_FARM}>;tag=rm{secrets.token_hex(4)}\n"
            f"To: <sip:regmirror@{REGMIRROR}:5070>\n"
            f"Call-ID: {secrets.token_hex(8)}@{KAMAILIO_FARM}\n"
            "CSeq: 10 MESSAGE\nMax-Forwards: 70\n" + headers + "Content-Length: 0\n\n")


@pytest.mark.parametrize("how", ["unsigned", "wrong-key", "replayed-5-min-later"])
def test_a_notification_from_a_forged_source_address_changes_no_binding(
        stack, intruder, new_user, phone, how):
    """A delete notification sent straight to every regmirror instance, from a farm-side host,
    as a raw datagram with Kamailio's IP as its source: unsigned, signed with a guessed key, or
    a genuine one replayed five minutes later. Each is dropped and counted (forged / stale), and
    the user stays registered on both nodes."""
    p = phone(*new_user())
    p.register()
    assert poll(lambda: stack.mirrored(p.user), 2)[0], stack.contacts_of(p.user)
    now_us = int(time.time() * 1e6)
    msg = {"unsigned": spoofed_notification(p.user, time_us=now_us),
           "wrong-key": spoofed_notification(p.user, time_us=now_us, key=b"guessed-key-12345"),
           "replayed-5-min-later": spoofed_notification(p.user, time_us=now_us - 300_000_000,
                                                       key=DEMO_KEY)}[how]
    result = "stale" if how.startswith("replayed") else "forged"
    before = {s: metric(s, "regmirror_notifications_total", f'result="{result}"') or 0
              for s in ADMINS}
    for instance in REGMIRRORS:
        stack.exec("intruder", ["python3", "-c", SPOOF, KAMAILIO_FARM, instance, "5070"],
                   input=msg.replace("\n", "\r\n"), check=True)
    ok, _ = poll(lambda: all((metric(s, "regmirror_notifications_total", f'result="{result}"')
                              or 0) > before[s] for s in ADMINS), 3)
    assert ok, f"not counted as {result}"
    time.sleep(1)
    assert stack.mirrored(p.user), f"binding changed: {stack.contacts_of(p.user)}"


# ----- contacts -----

INFRA_CONTACTS = {
    "node": f"sip:600@{NODES['ast1']}:5060",
    "node-other-port": f"sip:600@{NODES['ast2']}:5080",
    "node-by-name": "sip:600@ast1",
    "kamailio": f"sip:600@{KAMAILIO}:5060",
    "kamailio-farm-side": f"sip:600@{KAMAILIO_FARM}:5060",
    "regmirror": f"sip:regmirror@{REGMIRROR}:5070",
}


@pytest.mark.parametrize("target", INFRA_CONTACTS)
def test_a_contact_naming_infrastructure_is_refused(stack, sipp, hostile, new_user, ports,
                                                    target):
    """A valid account registers a Contact that names a farm node (by address, on any port, by
    name), Kamailio or regmirror, second in a list after a harmless one: Kamailio answers 403
    and stores nothing, so no call for the user is ever sent there from Kamailio's trusted
    address with a Request-URI the registrant chose."""
    user, password = new_user()
    contacts = f"sip:{user}@{hostile}:5999>, <{INFRA_CONTACTS[target]}"
    res = sipp.run("register-contact.xml", [(user, password, 60, contacts)],
                   port=next(ports), source=hostile)
    codes = [c for c, _ in res.responses("REGISTER")]
    assert codes and codes[-1] == 403 and 200 not in codes, res.stdout
    assert stack.location(user) == []
    assert stack.absent(user), stack.contacts_of(user)


def test_contacts_per_aor_are_limited(stack, sipp, hostile, new_user, ports):
    """Ten devices per AOR (REG_MAX_CONTACTS): an eleventh contact is refused and the ten stay."""
    user, password = new_user()
    ten = ">, <".join(f"sip:{user}@{hostile}:{6000 + i}" for i in range(10))
    res = sipp.run("register-contact.xml", [(user, password, 60, ten)], port=next(ports),
                   source=hostile)
    assert res.rc == 0, res.stdout
    assert len(stack.location(user)) == 10
    res = sipp.run("register-contact.xml", [(user, password, 60, f"sip:{user}@{hostile}:6010")],
                   port=next(ports), source=hostile)
    codes = [c for c, _ in res.responses("REGISTER")]
    assert codes and codes[-1] >= 400 and 200 not in codes, res.stdout
    assert len(stack.location(user)) == 10
    res = sipp.run("register-contact.xml", [(user, password, 0, ten)], port=next(ports),
                   source=hostile)
    assert res.rc == 0 and stack.location(user) == [], res.stdout


# ----- the farm behind the door -----

AMI_LOGIN = r"""
import socket, sys
src, host = sys.argv[1], sys.argv[2]
s = socket.create_connection((host, 5038), timeout=5, source_address=(src, 0))
s.sendall(b"Action: Login\r\nUsername: regmirror\r\nSecret: regmirror-ami-demo\r\n\r\n")
data = b""
try:
    while b"\r\n\r\n" not in data.split(b"\r\n", 1)[-1]:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except OSError:
    pass
print(data.decode(errors="replace"))
"""


# Runs on a host: which of the given tcp/udp services answer from `src`. TCP: a completed
# connect. UDP: any datagram back for an OPTIONS (SIP) or a junk byte.
PROBE = r"""
import json, socket, sys
src, targets = sys.argv[1], json.loads(sys.argv[2])
answered = {}
for proto, host, port in targets:
    key = f"{proto}:{host}:{port}"
    try:
        if proto == "tcp":
            socket.create_connection((host, port), timeout=2, source_address=(src, 0)).close()
            answered[key] = True
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            s.settimeout(2)
            s.sendto((f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:"
                      f"{s.getsockname()[1]};branch=z9hG4bKprobe{port}\r\nFrom: <sip:p@{src}>;tag=1"
                      f"\r\nTo: <sip:{host}>\r\nCall-ID: probe{port}@{src}\r\nCSeq: 1 OPTIONS"
                      "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                     (host, port))
            s.recvfrom(65535)
            answered[key] = True
    except OSError:
        answered[key] = False
print(json.dumps(answered))
"""

BEHIND_THE_DOOR = ([("tcp", MARIADB, 3306)]
                   + [("tcp", a, port) for a in NODES.values() for port in (5038, 8088)]
                   + [(p, a, 5060) for a in NODES.values() for p in ("udp", "tcp")]
                   + [(p, a, port) for a in REGMIRRORS for p, port in (("udp", 5070),
                                                                      ("tcp", 9070))]
                   + [("udp", KAMAILIO_FARM, 5060), ("tcp", KAMAILIO_FARM, 5080)])


def probe(stack, host, src, targets):
    res = stack.exec(host, ["python3", "-c", PROBE, src, json.dumps(targets)], timeout=120,
                     check=True)
    return json.loads(res.stdout)


def test_the_phones_side_reaches_nothing_behind_kamailio(stack, hostile):
    """From a phone-side host: MariaDB, each node's SIP (UDP and TCP) and AMI, each regmirror's
    SIP port and admin listener, and Kamailio's farm-side socket neither accept a connection
    nor answer; Kamailio's phones' side answers the same probe (so the probe works)."""
    door = probe(stack, "tester", hostile, [("udp", KAMAILIO, 5060), ("tcp", KAMAILIO, 5060)])
    assert all(door.values()), door
    behind = probe(stack, "tester", hostile, BEHIND_THE_DOOR)
    assert not any(behind.values()), [k for k, v in behind.items() if v]


RPC_POST = r'''
import json, socket, sys
src, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = json.dumps({"jsonrpc": "2.0", "method": "dispatcher.list", "id": 1})
s = socket.create_connection((host, port), timeout=5, source_address=(src, 0))
s.sendall((f"POST /RPC HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode())
answer = b""
try:
    while chunk := s.recv(65536):
        answer += chunk
except OSError:
    pass
print(answer.decode(errors="replace"))
'''


def kamailio_rpc_from(stack, host, src, address, port):
    return stack.exec(host, ["python3", "-c", RPC_POST, src, address, str(port)], timeout=30,
                      check=True).stdout


def test_kamailios_rpc_answers_regmirror_only(stack, hostile, intruder):
    """Kamailio's JSON-RPC (dispatcher.reload, .set_state: the farm's routing) is served on its
    farm side's port 5080 to the regmirror hosts: the same HTTP request from the phones' side
    (to the TCP socket it can reach) and from another farm host gets 403 and no data."""
    ours = stack.exec("regmirror", ["regmirror", "node", "list"], timeout=60, check=True).stdout
    assert re.search(r"^ast1\s+\S+\s+active", ours, re.M), ours
    for host, src, address, port in (("tester", hostile, KAMAILIO, 5060),
                                     ("intruder", intruder, KAMAILIO_FARM, 5080)):
        answer = kamailio_rpc_from(stack, host, src, address, port)
        assert answer.startswith("HTTP/1.1 403"), (host, answer)
        assert "10.77.0.31" not in answer, (host, answer)


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("side", ["phones", "farm"])
def test_a_node_takes_no_sip_from_another_host(stack, sipp, hostile, intruder, new_user, ports,
                                               node, side):
    """A phone with valid credentials registers straight at a node, bypassing Kamailio (its
    bans, its authentication), from the phones' side (no route to the node) or from a host on
    the farm network (the node's ACL admits Kamailio and regmirror only): no 200, and the
    user's contacts on the node stay regmirror's."""
    user, password = new_user()
    src, host = {"phones": (hostile, "tester"), "farm": (intruder, "intruder")}[side]
    res = sipp.run("register-contact.xml", [(user, password, 60, f"sip:{user}@{src}:5998")],
                   port=next(ports), source=src, target=f"{NODES[node]}:5060", timeout=6,
                   host=host)
    assert res.rc != 0
    assert 200 not in [c for c, _ in res.responses("REGISTER")], res.stdout
    assert not any(src in c for c in stack.contacts_of(user).get(node, [])), \
        stack.contacts_of(user)


@pytest.mark.parametrize("node", NODES)
def test_a_users_endpoint_takes_no_call_even_from_regmirrors_address(stack, sipp, beside_regmirror,
                                                                   new_user, ports, node):
    """regmirror's address passes a user's endpoint ACL (it registers there) and regmirror holds
    the user's credentials: an INVITE placed there as the user, with valid credentials, still
    reaches no dialplan (the users' context `phones` is empty): 404, nothing answered."""
    user, password = new_user()
    res = sipp.run("uac-call-direct.xml", [(user, password, "600")], port=next(ports),
                   source=beside_regmirror, target=f"{NODES[node]}:5060", timeout=8,
                   host="beside-regmirror")
    codes = [c for c, _ in res.responses("INVITE")]
    assert res.rc == 0 and codes[-1:] == [404], res.stdout


@pytest.mark.parametrize("node", NODES)
def test_ami_refuses_a_farm_host_that_is_not_regmirror(stack, intruder, node):
    """AMI login from a host on the farm network with the account and the demo secret
    committed in this repository: refused (AMI permits regmirror's addresses only; the phones'
    side does not reach it at all)."""
    res = stack.exec("intruder", ["python3", "-c", AMI_LOGIN, intruder, NODES[node]], timeout=15)
    assert "Response: Success" not in res.stdout, res.stdout
    assert "Authentication failed" in res.stdout or res.returncode != 0, res.stdout


def test_a_node_refuses_to_start_with_the_demo_secrets(stack):
    """The Asterisk image outside the demo stack: the published demo secrets, or none, stop it
    at once with a clear error."""
    image = "regmirror/asterisk:dev"
    base = [DOCKER, "run", "--rm", "-e", "REGMIRROR_ADDRS=192.0.2.40"]
    demo = subprocess.run(base + ["-e", "DB_PASSWORD=asterisk-demo", "-e", "AMI_SECRET=ami-s3c",
                                  image], capture_output=True, text=True, timeout=60)
    assert demo.returncode != 0 and "demo secret" in demo.stderr, demo.stderr
    missing = subprocess.run(base + ["-e", "DB_PASSWORD=s3cret-db", image],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "AMI_SECRET" in missing.stderr, missing.stderr


# ----- brute force -----

@pytest.fixture
def address(stack):
    """Factory: address(ip) adds ip to the tester (a phone-side host, not exempt from the
    bans), with no ban left on it from an earlier run; removed after the test."""
    added = []

    def add(ip):
        stack.sh("tester", f"ip addr add {ip}/24 dev eth0 2>/dev/null; true", check=True)
        stack.exec("kamailio", ["kamcmd", "htable.delete", "ipban", ip])
        added.append(ip)
        return ip

    yield add
    for ip in added:
        stack.sh("tester", f"ip addr del {ip}/24 dev eth0 2>/dev/null; true")


def register_from(sipp, ports, source, user, password):
    """One REGISTER with digest from `source`: the final status codes seen ([] = no answer)."""
    res = sipp.run("register.xml", [(user, password, 60)], port=next(ports), source=source,
                   timeout=4)
    return [c for c, _ in res.responses("REGISTER")]


def test_brute_force_bans_the_account_from_that_address_only(stack, sipp, ports, new_user,
                                                             phone, address):
    """Ten wrong passwords for one account from one address (a valid account registering from
    the same address in between, as behind a shared NAT): that account is then refused from
    that address, even with the right password; the valid neighbour keeps registering, and the
    victim still registers from elsewhere."""
    attacker, elsewhere = address("10.78.0.52"), address("10.78.0.53")
    victim, neighbour = new_user(), new_user()
    for i in range(10):
        codes = register_from(sipp, ports, attacker, victim[0], "wrong-password")
        assert 200 not in codes, codes
        if i == 4:  # the neighbour's success must not reset the count
            assert register_from(sipp, ports, attacker, *neighbour)[-1:] == [200]
        time.sleep(0.3)  # under pike's 16 requests per 2 s
    codes = register_from(sipp, ports, attacker, *victim)
    assert 200 not in codes and (codes == [] or codes[-1] == 403), codes
    assert register_from(sipp, ports, attacker, *neighbour)[-1:] == [200]
    assert register_from(sipp, ports, elsewhere, *victim)[-1:] == [200]
    for user, password in (victim, neighbour):
        sipp.run("register.xml", [(user, password, 0)], port=next(ports), source=elsewhere)


def test_password_spraying_bans_the_address(stack, sipp, ports, new_user, address):
    """One wrong guess each for twenty accounts from one address (AUTH_FAIL_IP_LIMIT): the
    address is banned, so even a valid account gets nothing from there."""
    sprayer = address("10.78.0.54")
    valid = new_user()
    for i in range(20):
        register_from(sipp, ports, sprayer, f"spray{i}", "guess")
        time.sleep(0.3)
    assert register_from(sipp, ports, sprayer, *valid) in ([], [403]), "address not banned"


# ----- in-dialog requests -----

def forged_in_dialog(request_uri, route):
    tag = secrets.token_hex(4)
    return (f"INVITE {request_uri} SIP/2.0\n"
            f"Via: SIP/2.0/UDP {HOSTILE}:@PORT@;branch=z9hG4bK{secrets.token_hex(6)};rport\n"
            f"Route: {route}\n"
            f"From: <sip:1001@{HOSTILE}>;tag={tag}\n"
            f"To: <sip:600@{NODES['ast1']}>;tag=x{tag}\n"
            f"Call-ID: {secrets.token_hex(8)}@{HOSTILE}\n"
            "CSeq: 1 INVITE\nMax-Forwards: 70\n"
            f"Contact: <sip:1001@{HOSTILE}:@PORT@>\nContent-Length: 0\n\n")


@pytest.mark.parametrize("route", ["kamailio-without-our-mark", "a-node-first"])
def test_kamailio_relays_in_dialog_requests_only_along_its_own_record_route(stack, hostile,
                                                                            route):
    """A made-up in-dialog INVITE for a number on a node, its Route naming Kamailio (as any
    dialog's would, but without the mark Kamailio puts in its own Record-Route) or naming the
    node itself: Kamailio answers 403 and sends nothing to the farm."""
    routes = {"kamailio-without-our-mark": f"<sip:{KAMAILIO};lr>",
              "a-node-first": f"<sip:{NODES['ast1']};lr>"}[route]
    cap = FarmCapture()
    try:
        answer = send(stack, forged_in_dialog(f"sip:600@{NODES['ast1']}", routes))
    finally:
        cap.stop()
    assert answer["line"] == "SIP/2.0 403 Forbidden", answer
    assert cap.invites("600") == [], "relayed to the farm"


# ----- floods -----

# Runs in the intruder for `seconds`: junk UDP at regmirror's SIP port and HTTP requests at its
# admin listener (the phones' side cannot reach either).
FLOOD = r"""
import os, socket, sys, threading, time
src, seconds, targets = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
end = time.time() + seconds
sent = {"udp": 0, "http": 0}

def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    junk = [os.urandom(200), b"OPTIONS sip:x SIP/2.0\r\n\r\n", b"\x00" * 1400]
    while time.time() < end:
        for t in targets:
            s.sendto(junk[sent["udp"] % 3], (t, 5070))
            sent["udp"] += 1

def http():
    while time.time() < end:
        for t in targets:
            try:
                c = socket.create_connection((t, 9070), timeout=1, source_address=(src, 0))
                c.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
                c.recv(65536)
                c.close()
                sent["http"] += 1
            except OSError:
                pass

threads = [threading.Thread(target=udp)] + [threading.Thread(target=http) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(sent["udp"], sent["http"])
"""


def test_a_flood_on_regmirror_does_not_delay_the_mirror(stack, intruder):
    """Junk datagrams at regmirror's SIP port and requests at its admin listener, from a
    farm-side host, while 100 phones register through Kamailio: each phone's binding reaches
    both nodes within about 1 s (the per-node lag never exceeds 1 s) and all 100 end mirrored."""
    users = [(f"79{secrets.randbelow(10**6):06d}", secrets.token_hex(6)) for _ in range(100)]
    bulk_provision(stack, users)
    try:
        flood = subprocess.Popen(
            [DOCKER, "exec", stack.container("intruder"), "python3", "-c", FLOOD, intruder, "12",
             ",".join(REGMIRRORS)], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        lags, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                for n in NODES:
                    v = metric("regmirror", "regmirror_node_lag_seconds", f'node="{n}"')
                    if v is not None:
                        lags.append(v)
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            assert bulk_register(stack, users, 5601, rate=20) == 0
            ok, _ = poll(lambda: converged(stack, users), 10, 0.2)
        finally:
            stop.set()
            sampler.join()
        sent = flood.communicate(timeout=30)[0].split()
        assert ok, "not every phone reached both nodes"
        assert lags and max(lags) <= 1.0, f"lag up to {max(lags, default=None)} s"
        print(f"\nflood: {sent[0]} datagrams, {sent[1]} admin requests; "
              f"max node lag {max(lags):.2f} s over {len(lags)} samples")
    finally:
        bulk_register(stack, users, 5601, rate=50, expires=0)  # the same Contact: unbound
        bulk_remove(stack, users)


@pytest.mark.parametrize("node", NODES)
def test_a_users_endpoint_takes_requests_from_regmirror_only(stack, new_user, node):
    """A user's REGISTER from Kamailio's own host (an address every node's SIP ACL admits,
    from another port, so not the trusted `kamailio` endpoint): refused by the user's endpoint
    (`acl = regmirror`, the schema's and provisioning's default), nothing stored."""
    user, password = new_user()
    kamailio = stack.container("kamailio")
    subprocess.run([DOCKER, "cp", str(ROOT / "tests/sipp/register.xml"),
                    f"{kamailio}:/tmp/register.xml"], check=True)
    res = stack.sh("kamailio", (
        f"printf 'SEQUENTIAL\\n{user};{password};60\\n' > /tmp/acl.csv && "
        f"sipp -sf /tmp/register.xml -inf /tmp/acl.csv -i {KAMAILIO_FARM} -p 5099 -m 1 "
        f"-s regmirror.test -nostdin -timeout 6 -timeout_error -trace_msg "
        f"-message_file /tmp/acl.msg {NODES[node]}:5060 >/dev/null 2>&1; "
        "cat /tmp/acl.msg; rm -f /tmp/acl.msg"), timeout=30)
    finals = re.findall(r"^SIP/2\.0 (\d{3})", res.stdout, re.M)
    assert finals and "200" not in finals, finals
    assert user not in stack.contacts(node), stack.contacts(node).get(user)
