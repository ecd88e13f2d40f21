"""Issue 4, assertion 4: calls between phones go through Kamailio and an Asterisk node, with
media negotiated (and, for the softphone, flowing) through Asterisk. The phones are on their own
network: their media goes to the edge relay (rtpengine), which alone reaches the nodes."""

import re
import time

import pytest

from conftest import KAMAILIO_SIP, RTP_RELAY, poll


def assert_asterisk_answered(call):
    """The caller's 200 OK to INVITE comes from an Asterisk node and carries an SDP answer
    whose media is anchored on the edge relay's phones'-side address (the node's own address
    is unreachable from the phones' network)."""
    oks = [blk for code, blk in call.responses("INVITE") if code == 200]
    assert oks, f"no 200 OK to the INVITE\n{call.stdout}"
    ok = oks[-1]
    assert re.search(r"^Server: Asterisk \(ast[12]\)$", ok, re.M), ok
    assert re.search(r"^Content-Type: application/sdp$", ok, re.M), ok
    m = re.search(r"^m=audio (\d+) RTP/AVP", ok, re.M)
    assert m and int(m.group(1)) > 0, f"no audio stream in the answer\n{ok}"
    c = re.search(r"^c=IN IP4 (\S+)$", ok, re.M)
    assert c and c.group(1) == RTP_RELAY, f"media not anchored on the edge relay\n{ok}"


def assert_invite_from_asterisk(answered):
    """The callee's INVITE was originated by an Asterisk node (B2BUA), relayed by Kamailio."""
    invites = answered.requests("INVITE")
    assert invites, f"callee got no INVITE\n{answered.stdout}"
    inv = invites[0]
    assert re.search(r"^User-Agent: Asterisk \(ast[12]\)$", inv, re.M), inv
    assert re.search(r"^Via: SIP/2.0/UDP 10\.77\.0\.3[12]:5060", inv, re.M), inv
    assert re.search(r"^m=audio [1-9]\d* RTP/AVP", inv, re.M), inv
    assert re.search(rf"^c=IN IP4 {re.escape(RTP_RELAY)}$", inv, re.M), inv
    # the dialog was completed: ACK and BYE reached the callee too
    assert answered.requests("ACK") and answered.requests("BYE"), answered.stdout


@pytest.mark.parametrize("direction", ["a-calls-b", "b-calls-a"])
def test_sipp_call_through_asterisk(stack, new_user, phone, direction):
    a, b = new_user(), new_user()
    caller_id, callee_id = (a, b) if direction == "a-calls-b" else (b, a)
    callee = phone(*callee_id)
    caller = phone(*caller_id)
    callee.register()
    assert poll(lambda: stack.mirrored(callee.user), 1.0)[0], stack.contacts_of(callee.user)

    uas = callee.answer()
    call = caller.sipp.run("uac-call.xml", [(caller.user, caller.password, callee.user)],
                           port=caller.port, timeout=20)
    answered = uas.wait()
    assert call.rc == 0, f"call {caller.user} -> {callee.user} failed\n{call.stdout}"
    assert answered.rc == 0, f"{callee.user} did not complete the call\n{answered.stdout}"
    assert_asterisk_answered(call)
    assert_invite_from_asterisk(answered)
    # BYE from the caller was answered end to end
    byes = [c for c, _ in call.responses("BYE")]
    assert byes == [200], byes


def assert_media_flowed(softphone):
    stats, _ = poll(softphone.rtp_packets, 5, 0.2)
    assert stats, f"no rtp_stats summary from baresip\n{softphone.log()[-2000:]}"
    tx, rx = stats
    assert tx > 10 and rx > 10, f"baresip RTP tx={tx} rx={rx}"


def test_sipp_calls_baresip(stack, new_user, phone, baresip, sipp):
    callee_user, callee_password = new_user()
    caller = phone(*new_user())
    soft = baresip(callee_user, callee_password)
    soft.wait_registered()
    assert poll(lambda: stack.mirrored(callee_user), 1.0)[0], stack.contacts_of(callee_user)

    # The SIPp caller echoes the RTP it gets, so baresip receives what it sends, via Asterisk.
    call_bg = sipp.start("uac-call.xml", [(caller.user, caller.password, callee_user)],
                         port=caller.port, args=["-rtp_echo"], target=KAMAILIO_SIP,
                         timeout=20)
    incoming = soft.wait_event("CALL_INCOMING", timeout=10)
    # Asterisk originated the INVITE (its address, not the caller's, is the peer)
    assert re.search(r"@10\.77\.0\.3[12]\b", incoming.get("peeruri", "")), incoming
    assert soft.command("accept")["ok"]
    soft.wait_event("CALL_ESTABLISHED", timeout=5)
    soft.wait_event("CALL_RTPESTAB", timeout=5)
    call = call_bg.wait()  # the caller hangs up after 2 s
    soft.wait_event("CALL_CLOSED", timeout=5)
    assert call.rc == 0, f"SIPp -> baresip call failed\n{call.stdout}"
    assert_asterisk_answered(call)
    assert_media_flowed(soft)


def test_baresip_calls_sipp(stack, new_user, phone, baresip):
    caller_user, caller_password = new_user()
    callee = phone(*new_user())
    callee.register()
    soft = baresip(caller_user, caller_password)
    soft.wait_registered()
    assert poll(lambda: stack.mirrored(callee.user), 1.0)[0], stack.contacts_of(callee.user)

    uas = callee.answer()  # echoes RTP back, through Asterisk
    assert soft.command("dial", f"sip:{callee.user}@regmirror.test")["ok"]
    soft.wait_event("CALL_ESTABLISHED", timeout=10)
    soft.wait_event("CALL_RTPESTAB", timeout=5)
    time.sleep(1.5)  # talk time: let RTP accumulate both ways
    assert soft.command("hangup")["ok"]
    soft.wait_event("CALL_CLOSED", timeout=5)
    answered = uas.wait()
    assert answered.rc == 0, f"{callee.user} did not complete the call\n{answered.stdout}"
    assert_invite_from_asterisk(answered)
    assert_media_flowed(soft)


def test_echo_test_answered_by_a_node(stack, new_user, phone):
    """Extension 600 (Echo) on whichever node Kamailio picks: SDP answer from Asterisk."""
    caller = phone(*new_user())
    call = caller.sipp.run("uac-call.xml", [(caller.user, caller.password, "600")],
                           port=caller.port, timeout=20)
    assert call.rc == 0, f"echo test failed\n{call.stdout}"
    assert_asterisk_answered(call)
