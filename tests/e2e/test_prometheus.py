"""Issue 17: the metrics and the shipped alert rules in a real Prometheus (Debian's 2.42, the
compose profile "prometheus"): both regmirror instances scraped, the rules loaded and passing
their promtool checks, and a node killed fires RegmirrorNodeDown, which clears when it is back.
"""

import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import DOCKER, cid, compose, metric, poll, wait_healthy

PROMETHEUS = "http://10.77.0.45:9090"


def api(path, **params):
    url = f"{PROMETHEUS}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def answers():
    try:
        api("status/buildinfo")
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def prometheus(stack):
    compose("--profile", "prometheus", "build", "prometheus", timeout=900)
    compose("--profile", "prometheus", "up", "-d", "--no-deps", "prometheus")
    try:
        assert poll(answers, 60, 0.5)[0], "Prometheus did not start"
        yield PROMETHEUS
    finally:
        compose("--profile", "prometheus", "rm", "-sf", "prometheus")


def node_down_alerts(node):
    return [a for a in api("alerts")["alerts"]
            if a["labels"].get("alertname") == "RegmirrorNodeDown"
            and a["labels"].get("node") == node]


def test_the_shipped_rules_pass_promtool(prometheus):
    for argv in (["promtool", "check", "rules", "/etc/prometheus/alerts.yml"],
                 ["promtool", "test", "rules", "/etc/prometheus/alerts_test.yml"]):
        res = subprocess.run([DOCKER, "exec", "-w", "/etc/prometheus", cid("prometheus"), *argv],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout + res.stderr


def test_regmirror_kamailio_and_the_nodes_are_scraped_and_the_rules_are_loaded(prometheus):
    """Both regmirror instances, Kamailio's own statistics (xhttp_prom) and each node's
    res_prometheus (behind basic auth) answer Prometheus's scrapes."""
    want = {"regmirror": ["10.77.0.40:9070", "10.77.0.41:9070"], "kamailio": ["10.77.0.20:5080"],
            "asterisk": ["10.77.0.31:8088", "10.77.0.32:8088"]}

    def scraped():
        got = {}
        for t in api("targets")["activeTargets"]:
            if t["health"] == "up":
                got.setdefault(t["labels"]["job"], []).append(t["labels"]["instance"])
        return {job: sorted(i) for job, i in got.items()}
    ok, _ = poll(lambda: scraped() == want, 30, 1)
    assert ok, (scraped(), [t.get("lastError") for t in api("targets")["activeTargets"]])
    # Real series from each: Kamailio's received requests, the nodes' uptime.
    for query in ('kamailio_core_rcv_requests', 'asterisk_core_uptime_seconds'):
        result = api("query", query=query)["result"]
        assert result, query
    rules = [r for g in api("rules")["groups"] for r in g["rules"]]
    assert len(rules) == 9 and all(r["health"] == "ok" for r in rules), rules
    # Exactly one active instance, and both nodes up on it: nothing fires.
    active = api("query", query="sum(regmirror_ha_active)")["result"]
    assert float(active[0]["value"][1]) == 1, active
    firing = [a["labels"]["alertname"] for a in api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == [], firing


def test_a_killed_node_fires_node_down_then_it_clears(stack, prometheus):
    assert node_down_alerts("ast2") == []
    subprocess.run([DOCKER, "kill", cid("ast2")], check=True, capture_output=True)
    start = time.monotonic()
    try:
        ok, took = poll(lambda: any(a["state"] == "firing" for a in node_down_alerts("ast2")),
                        120, 1)
        assert ok, node_down_alerts("ast2")
        alert = node_down_alerts("ast2")[0]
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["instance"] == "10.77.0.40:9070", alert
        print(f"\nRegmirrorNodeDown firing {took:.0f} s after ast2 was killed")
    finally:
        subprocess.run([DOCKER, "start", cid("ast2")], capture_output=True)
        wait_healthy("ast2")
    ok, took = poll(lambda: node_down_alerts("ast2") == [], 60, 1)
    assert ok, node_down_alerts("ast2")
    print(f"cleared {took:.0f} s after ast2 was healthy again "
          f"({time.monotonic() - start:.0f} s in all)")
    # As the next tests expect it: every binding back on ast2.
    assert poll(lambda: metric("regmirror", "regmirror_node_coverage_ratio", 'node="ast2"') == 1,
                120, 1)[0]
