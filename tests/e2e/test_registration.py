"""Issue 4, assertions 1-3: registrations through Kamailio reach every Asterisk node."""

import re

import pytest

from conftest import MIRROR_CONTACT_HOST, TESTER, holds, poll

MIRROR_DEADLINE = 1.0  # seconds from the REGISTER's 200 OK to both nodes holding the contact


def test_register_mirrored_on_every_node_within_one_second(stack, phone):
    """1: 401 then 200 from Kamailio; within 1 s each node holds exactly one contact for the
    user, sip:<user>@<kamailio>."""
    p = phone("1001", "secret1001")
    res = p.register()
    ok200 = [blk for code, blk in res.responses("REGISTER") if code == 200][0]
    assert f"sip:1001@{TESTER}:{p.port}" in ok200
    mirrored, elapsed = poll(lambda: stack.mirrored("1001"), MIRROR_DEADLINE)
    assert mirrored, f"not on every node within {MIRROR_DEADLINE}s: {stack.contacts_of('1001')}"
    print(f"mirrored on every node after {elapsed * 1000:.0f} ms")
    # Kamailio holds the phone's own contact, the nodes hold Kamailio's.
    assert stack.location("1001") == [f"sip:1001@{TESTER}:{p.port}"]
    want = [f"sip:1001@{MIRROR_CONTACT_HOST}"]
    assert stack.contacts_of("1001") == {n: want for n in ("ast1", "ast2")}


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "removed-user"])
def test_rejected_registration_reaches_no_node(stack, sipp, ports, user_ids, new_user, case):
    """2: bad credentials are refused by Kamailio and nothing appears on any node."""
    if case == "wrong-password":
        user, _ = new_user()
        password = "not-the-password"
    elif case == "unknown-user":
        user, password = next(user_ids), "whatever"
    else:
        user, password = new_user()
        removed = stack.remove_user(user)
        assert removed.returncode == 0, removed.stderr
    res = sipp.run("register-rejected.xml", [(user, password, 120)], port=next(ports))
    assert res.rc == 0, f"expected 401/403 after the credentials\n{res.stdout}"
    codes = [c for c, _ in res.responses("REGISTER")]
    assert codes[0] == 401 and codes[-1] in (401, 403) and 200 not in codes, codes
    assert stack.location(user) == []
    # Nothing shows up on the nodes, not even late.
    ok, seen = holds(lambda: stack.absent(user), 1.0)
    assert ok, f"rejected user {user} appeared on a node: {stack.contacts_of(user)}"


def _last_reload(stack, node):
    out = stack.ast(node, "core show uptime seconds")
    m = re.search(r"Last reload:\s*(\d+)", out)
    assert m, f"no 'Last reload' in {node}'s uptime: {out!r}"
    return int(m.group(1))


def test_user_added_live_registers_and_is_called_at_once(stack, new_user, phone):
    """3: `regmirror user add` while everything runs; the user registers and is called at once,
    without a reload of Kamailio or Asterisk."""
    reloads = {n: _last_reload(stack, n) for n in ("ast1", "ast2")}
    user, password = new_user()
    callee = phone(user, password)
    callee.register()  # no pause after the add: the view and realtime see it at once
    mirrored, elapsed = poll(lambda: stack.mirrored(user), 1.0)
    assert mirrored, f"new user {user} not on every node: {stack.contacts_of(user)}"

    caller_user, caller_password = new_user()
    caller = phone(caller_user, caller_password)
    uas = callee.answer()
    call = caller.sipp.run("uac-call.xml", [(caller_user, caller_password, user)],
                           port=caller.port, timeout=20)
    answered = uas.wait()
    assert call.rc == 0, f"call {caller_user} -> {user} failed\n{call.stdout}"
    assert answered.rc == 0, f"{user} did not answer\n{answered.stdout}"
    assert answered.requests("INVITE"), "no INVITE reached the new user"
    # No reload anywhere: Asterisk's "last reload" only grows with time.
    for node, before in reloads.items():
        after = _last_reload(stack, node)
        assert after >= before, f"{node} was reloaded"


def test_password_change_counts_on_every_node_at_once(stack, sipp, ports, new_user, phone):
    """`regmirror user passwd` while the user is registered: the old password is refused, and a
    fresh registration with the new one reaches every node within the usual deadline. The nodes
    have just read the old auth (the first registration), so a node that cached auths
    (asterisk/etc/sorcery.conf) would refuse regmirror's new password here and the user would
    stay off that node for the cache's lifetime."""
    user, old = new_user()
    p = phone(user, old)
    p.register()
    assert poll(lambda: stack.mirrored(user), MIRROR_DEADLINE)[0], stack.contacts_of(user)
    new = old[::-1] + "x"
    res = stack.regmirror_cli("user", "passwd", user, password=new)
    assert res.returncode == 0, res.stderr
    p.password = new
    p.unregister()
    assert poll(lambda: stack.absent(user), 5)[0], stack.contacts_of(user)
    stale = sipp.run("register-rejected.xml", [(user, old, 120)], port=next(ports))
    assert 200 not in [c for c, _ in stale.responses("REGISTER")], "old password still accepted"
    p.register()
    mirrored, elapsed = poll(lambda: stack.mirrored(user), MIRROR_DEADLINE)
    assert mirrored, f"new password not on every node within {MIRROR_DEADLINE}s: {stack.contacts_of(user)}"
