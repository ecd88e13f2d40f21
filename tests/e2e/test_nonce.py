"""Nonce reuse against real Asterisk 22 nodes (farm.nonce_reuse, default 20 s).

Asterisk's nonce depends on time, source address and realm, not on the user: after the first
challenge, regmirror answers every other user's REGISTER to that node preemptively with it. So a
burst of registrations costs about one 401 per node and instance, not one per registration.
"""

import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from conftest import MIRROR_CONTACT_HOST, NODES, poll

# Both instances of the HA pair (whichever of them registers; an instance that is not
# reachable or idle is skipped, each active one is checked on its own).
INSTANCES = {"regmirror": "http://10.77.0.40:9070", "regmirror2": "http://10.77.0.41:9070"}
PHONES = 20
SERIES = re.compile(r'^(regmirror_register_(?:challenges|preemptive|preemptive_challenged)_total)'
                    r'\{node="([^"]+)"\} (\d+)$', re.M)


def counters(url):
    """{(metric, node): value} of the per-node digest counters, or None when unreachable."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return None
    return {(m, node): int(v) for m, node, v in SERIES.findall(text)}


def test_burst_costs_about_one_challenge_per_node(stack, new_user, phone):
    users = [new_user() for _ in range(PHONES)]
    phones = [phone(u, pw) for u, pw in users]
    # Start cold: whatever nonce earlier tests left is older than farm.nonce_reuse (20 s).
    time.sleep(21)
    before = {name: counters(url) for name, url in INSTANCES.items()}
    assert before["regmirror"] is not None, "regmirror's /metrics unreachable"

    # 20 phones register through Kamailio within a couple of seconds.
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda p: p.register(), phones))

    def all_mirrored():
        per_node = [stack.contacts(n) for n in NODES]
        return all(c.get(u) == [f"sip:{u}@{MIRROR_CONTACT_HOST}"]
                   for c in per_node for u, _ in users)

    ok, took = poll(all_mirrored, 15, 0.3)
    assert ok, "not every phone reached both nodes"
    print(f"{PHONES} phones on both nodes {took:.1f} s after the last REGISTER")

    checked = 0
    for name, url in INSTANCES.items():
        after, base = counters(url), before[name]
        if after is None or base is None:
            continue
        delta = {k: v - base.get(k, 0) for k, v in after.items()}
        sends = {n: delta.get(("regmirror_register_challenges_total", n), 0)
                 + delta.get(("regmirror_register_preemptive_total", n), 0) for n in NODES}
        if not any(sends.values()):
            continue  # a standby instance
        for n in NODES:
            challenges = delta[("regmirror_register_challenges_total", n)]
            preemptive = delta[("regmirror_register_preemptive_total", n)]
            missed = delta[("regmirror_register_preemptive_challenged_total", n)]
            print(f"{name} {n}: {PHONES} registrations, {challenges} challenges (401), "
                  f"{preemptive} preemptive, {missed} of them challenged")
            # Without reuse every registration costs a 401: require at most a quarter of that.
            assert challenges * 4 <= PHONES, (name, n, challenges)
            assert preemptive >= PHONES - challenges, (name, n, preemptive)
            assert missed <= 1, (name, n, missed)
        checked += 1
    assert checked >= 1, "no regmirror instance registered the burst"
