"""Issue 4, assertions 5 and 6: bindings go away with the last contact; calls to users without
a binding fail cleanly; unauthenticated calls are challenged."""

import re

from conftest import REGMIRROR, TESTER, FarmCapture, holds, poll

REMOVE_DEADLINE = 2.0
# Kamailio's min_expires in compose (10 s) + its usrloc sweep (5 s) + slack for regmirror.
EXPIRY_DEADLINE = 25.0


def test_unregister_removes_binding_everywhere(stack, new_user, phone):
    """Expires 0 from the phone: Kamailio tells regmirror with a `delete` notification (the
    contract's event for contacts the phone removed) and the binding leaves both nodes."""
    p = phone(*new_user())
    p.register()
    assert poll(lambda: stack.mirrored(p.user), 1.0)[0], stack.contacts_of(p.user)
    cap = FarmCapture(f"udp and dst host {REGMIRROR} and dst port 5070")
    try:
        p.unregister()
        gone, elapsed = poll(lambda: stack.absent(p.user), REMOVE_DEADLINE)
    finally:
        cap.stop()
    assert gone, f"still bound after Expires 0: {stack.contacts_of(p.user)}"
    assert stack.location(p.user) == []
    events = [re.search(r"X-RegMirror-Event: (\w+)", text).group(1)
              for _, _, text in cap.packets if f"X-RegMirror-AOR: {p.user}" in text]
    assert events and set(events) == {"delete"}, events


def test_kamailio_expiry_removes_binding_everywhere(stack, new_user, phone):
    p = phone(*new_user())
    p.register(expires=10)
    assert poll(lambda: stack.mirrored(p.user), 1.0)[0], stack.contacts_of(p.user)
    p.registered = False  # left to expire in Kamailio
    gone, elapsed = poll(lambda: stack.absent(p.user), EXPIRY_DEADLINE, 0.5)
    assert gone, f"still bound {EXPIRY_DEADLINE}s after a 10 s registration: " \
                 f"{stack.contacts_of(p.user)}"
    assert stack.location(p.user) == []
    print(f"binding gone {elapsed:.1f} s after the registration")


def test_second_device_keeps_the_binding(stack, new_user, phone):
    user, password = new_user()
    dev1, dev2 = phone(user, password), phone(user, password)
    dev1.register()
    dev2.register()
    assert sorted(stack.location(user)) == sorted(
        f"sip:{user}@{TESTER}:{d.port}" for d in (dev1, dev2))
    # Two phones, still exactly one binding per node (Kamailio's contact).
    assert poll(lambda: stack.mirrored(user), 1.0)[0], stack.contacts_of(user)

    dev1.unregister()
    assert stack.location(user) == [f"sip:{user}@{TESTER}:{dev2.port}"]
    ok, _ = holds(lambda: stack.mirrored(user), 1.5)
    assert ok, f"binding lost while device 2 is registered: {stack.contacts_of(user)}"

    dev2.unregister()
    gone, _ = poll(lambda: stack.absent(user), REMOVE_DEADLINE)
    assert gone, f"still bound after the last device left: {stack.contacts_of(user)}"


def test_call_to_unregistered_user_fails_cleanly(stack, new_user, phone, sipp):
    callee = phone(*new_user())
    caller = phone(*new_user())
    callee.register()
    assert poll(lambda: stack.mirrored(callee.user), 1.0)[0], stack.contacts_of(callee.user)
    callee.unregister()
    assert poll(lambda: stack.absent(callee.user), REMOVE_DEADLINE)[0]

    call = sipp.run("uac-call-fail.xml", [(caller.user, caller.password, callee.user)],
                    port=caller.port, timeout=15)
    assert call.rc == 0, f"expected 404/480\n{call.stdout}"
    finals = [c for c, _ in call.responses("INVITE") if c >= 200]
    assert finals[0] == 407 and finals[-1] in (404, 480), finals


def test_unauthenticated_call_is_challenged(stack, new_user, phone, sipp, ports):
    callee = phone(*new_user())
    callee.register()
    assert poll(lambda: stack.mirrored(callee.user), 1.0)[0]
    uas = callee.answer(timeout=4)  # must not ring
    call = sipp.run("uac-unauth.xml", [("1004", "", callee.user)], port=next(ports), timeout=10)
    assert call.rc == 0, f"expected 407\n{call.stdout}"
    finals = [(c, blk) for c, blk in call.responses("INVITE") if c >= 200]
    assert [c for c, _ in finals] == [407]
    blk = finals[0][1]
    assert re.search(r'^Proxy-Authenticate: Digest realm="regmirror.test"', blk, re.M), blk
    answered = uas.wait()
    assert not answered.requests("INVITE"), "an unauthenticated INVITE reached the callee"
