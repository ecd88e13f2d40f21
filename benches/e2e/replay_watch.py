#!/usr/bin/env python3
"""benches/e2e/replay.sh helper: times one replay onto a re-created node and reports its errors.

  replay_watch.py metrics ADMIN                       print the instance's /metrics (a snapshot)
  replay_watch.py wait ADMIN N TIMEOUT                until every node holds N registered bindings,
                                                      none queued; prints the seconds it took
  replay_watch.py watch ADMIN NODE N RATE BEFORE OUT  run while NODE's container is re-created:
                                                      see below; writes OUT (JSON), prints a summary

watch polls regmirror's /metrics every 100 ms and the node container's health every 0.5 s:
  t_create  this script's start (replay.sh starts it right before `docker-compose up -d ast1`)
  t_healthy the container's healthcheck passes
  t_up      regmirror's probe sees the node answer (regmirror_node_up 1): the replay starts
  t_full    the node has answered N REGISTERs with 200 since BEFORE and none is queued
CPU: each container's cgroup v1 cpuacct usage between t_up and t_full (% of one core), and one
`docker stats --no-stream` started in the middle of the expected replay (the brief's measure; for
replays shorter than its ~2 s sampling window it undercounts). Errors: deltas of the counters
between BEFORE (a `metrics` snapshot taken after the node was marked down) and 1 s after t_full;
the worst `failed` binding count seen on the node; times the node was marked down again; the
node's own WARNING/ERROR log lines from t_up on.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
PROJECT = os.environ.get("COMPOSE_PROJECT_NAME", "regmirror")
SERVICES = ("mariadb", "kamailio", "ast1", "ast2", "regmirror", "regmirror2")


def fetch(admin):
    try:
        return urllib.request.urlopen(f"{admin}/metrics", timeout=3).read().decode()
    except OSError:
        return ""


def parse(text):
    """{(name, labels): value} from the Prometheus text format."""
    out = {}
    for m in re.finditer(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", text, re.M):
        try:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
        except ValueError:
            continue
    return out


def get(m, name, labels=""):
    return m.get((name, labels))


def bindings(m, node, state):
    return get(m, "regmirror_bindings", f'{{node="{node}",state="{state}"}}')


def nodes_of(m):
    return sorted({re.search(r'node="([^"]+)"', k[1]).group(1)
                   for k in m if k[0] == "regmirror_bindings"})


def cid(service):
    out = subprocess.run([DOCKER, "ps", "-q", "--no-trunc",
                          "--filter", f"label=com.docker.compose.project={PROJECT}",
                          "--filter", f"label=com.docker.compose.service={service}"],
                         capture_output=True, text=True).stdout.split()
    return out[0] if out else None


def cpu_ns(container):
    try:
        with open(f"/sys/fs/cgroup/cpuacct/docker/{container}/cpuacct.usage") as f:
            return int(f.read())
    except (OSError, ValueError, TypeError):
        return None


def health(container):
    res = subprocess.run([DOCKER, "inspect", "-f", "{{.State.Health.Status}}", container],
                         capture_output=True, text=True)
    return res.stdout.strip()


def docker_stats(out):
    res = subprocess.run([DOCKER, "stats", "--no-stream", "--format",
                          "{{.Name}};{{.CPUPerc}};{{.MemUsage}}"], capture_output=True, text=True)
    out["text"] = res.stdout
    cpu = {}
    for line in res.stdout.splitlines():
        parts = line.split(";")
        name = parts[0].split("_")
        if len(parts) >= 2 and len(name) >= 3:
            cpu[name[1]] = parts[1].rstrip("%")
    out["cpu"] = cpu


def wait(admin, n, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        m = parse(fetch(admin))
        nodes = nodes_of(m)
        if nodes and get(m, "regmirror_queued_bindings") == 0 and all(
                bindings(m, node, "registered") == n for node in nodes):
            print(f"{time.monotonic() - t0:.1f}")
            return 0
        time.sleep(0.2)
    m = parse(fetch(admin))
    print("timeout: " + ", ".join(f"{node} {bindings(m, node, 'registered')}"
                                  for node in nodes_of(m)), file=sys.stderr)
    return 1


def watch(admin, node, n, rate, before_path, out_path):
    t_create = time.time()
    with open(before_path) as f:
        before = parse(f.read())

    def done(m):
        """REGISTERs the node accepted since BEFORE: its final answers minus its challenges,
        minus every answer other than 200/401 (those are counted for all nodes together). A
        replayed binding still shows `registered` while it waits (its last state), so the
        `regmirror_bindings` gauge cannot tell when the replay is over."""
        lat = f'{{node="{node}"}}'
        finals = (get(m, "regmirror_register_latency_seconds_count", lat) or 0) - (
            get(before, "regmirror_register_latency_seconds_count", lat) or 0)
        chal = (get(m, "regmirror_register_challenges_total", lat) or 0) - (
            get(before, "regmirror_register_challenges_total", lat) or 0)
        bad = sum(v - (get(before, k[0], k[1]) or 0) for k, v in m.items()
                  if k[0] == "regmirror_register_responses_total"
                  and not re.search(r'code="(200|401)"', k[1]))
        # the AMI audit may find replayed-but-not-yet-sent bindings missing and send them early
        repaired = (get(m, "regmirror_drift_repaired_total") or 0) - (
            get(before, "regmirror_drift_repaired_total") or 0)
        return finals - chal - bad - repaired

    expected = n / rate if rate else n / 10000
    deadline = t_create + 90 + 3 * expected
    t = {"t_create": t_create, "t_healthy": None, "t_up": None, "t_full": None}
    container, last_health = None, 0.0
    down_again, worst_failed, was_up = 0, 0, False
    cpu0, stats, sampler = {}, {}, None
    while time.time() < deadline:
        now = time.time()
        if container is None:
            container = cid(node)
        if container and t["t_healthy"] is None and now - last_health >= 0.5:
            last_health = now
            if health(container) == "healthy":
                t["t_healthy"] = time.time()
        m = parse(fetch(admin))
        up = get(m, "regmirror_node_up", f'{{node="{node}"}}')
        failed = bindings(m, node, "failed") or 0
        if up == 1 and t["t_up"] is None:
            t["t_up"] = now
            cpu0 = {s: cpu_ns(cid(s)) for s in SERVICES}
            # one `docker stats` (~2 s of sampling) centred on the middle of the replay
            delay = max(0.0, expected / 2 - 1.0)
            sampler = threading.Timer(delay, docker_stats, args=(stats,))
            sampler.start()
        if t["t_up"] is not None:
            worst_failed = max(worst_failed, failed)
            if was_up and up == 0:
                down_again += 1
            was_up = up == 1
            if done(m) >= n and get(m, "regmirror_queued_bindings") == 0:
                t["t_full"] = now
                break
        time.sleep(0.1)
    end = t["t_full"] or time.time()
    cpu = {}
    if t["t_up"] is not None:
        wall = end - t["t_up"]
        for s in SERVICES:
            c1 = cpu_ns(cid(s))
            if cpu0.get(s) is not None and c1 is not None and wall > 0:
                cpu[s] = round((c1 - cpu0[s]) / 1e9 / wall * 100, 1)
    if sampler:
        sampler.join()
    time.sleep(1)  # late answers and retransmissions land in the counters
    after = parse(fetch(admin))

    def delta(name, labels=""):
        return (get(after, name, labels) or 0) - (get(before, name, labels) or 0)

    codes = {}
    for (name, labels) in set(after) | set(before):
        if name == "regmirror_register_responses_total":
            code = re.search(r'code="([^"]+)"', labels).group(1)
            d = delta(name, labels)
            if d:
                codes[code] = int(d)
    logs = ""
    if container and t["t_up"] is not None:
        res = subprocess.run([DOCKER, "logs", "--since", f"{t['t_up']:.3f}", container],
                             capture_output=True, text=True)
        logs = res.stdout + res.stderr
    bad_lines = [line for line in logs.splitlines() if re.search(r"WARNING|ERROR", line)]
    report = dict(t)
    report.update({
        "n": n, "rate": rate,
        "registered": bindings(after, node, "registered"),
        "accepted": int(done(after)),
        "healthy_s": round(t["t_healthy"] - t_create, 2) if t["t_healthy"] else None,
        "up_s": round(t["t_up"] - t_create, 2) if t["t_up"] else None,
        "replay_s": round(t["t_full"] - t["t_up"], 2) if t["t_full"] and t["t_up"] else None,
        "from_create_s": round(t["t_full"] - t_create, 2) if t["t_full"] else None,
        "codes": codes,
        "bad_codes": sum(v for k, v in codes.items() if k not in ("200", "401")),
        "retransmits": int(delta("regmirror_retransmits_total")),
        "timeouts": int(delta("regmirror_transaction_timeouts_total")),
        "retries": int(delta("regmirror_register_retries_total")),
        "drift_repaired": int(delta("regmirror_drift_repaired_total")),
        "replays": int(delta("regmirror_replays_total")),
        "failed_transitions": int(delta("regmirror_binding_transitions_total",
                                        f'{{node="{node}",state="failed"}}')),
        "preemptive": int(delta("regmirror_register_preemptive_total", f'{{node="{node}"}}')),
        "challenges": int(delta("regmirror_register_challenges_total", f'{{node="{node}"}}')),
        "worst_failed": int(worst_failed),
        "down_again": down_again,
        "ast_bad_lines": len(bad_lines),
        "ast_taskprocessor": sum("taskprocessor" in line.lower() for line in bad_lines),
        "ast_unable": sum("Unable to" in line for line in bad_lines),
        "cpu_window": cpu,
        "docker_stats": stats.get("cpu", {}),
    })
    if report["replay_s"]:
        report["achieved"] = round(n / report["replay_s"], 1)
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)
    with open(out_path.replace(".json", "-ast-log.txt"), "w") as f:
        f.write("\n".join(bad_lines) + "\n")
    with open(out_path.replace(".json", "-docker-stats.txt"), "w") as f:
        f.write(stats.get("text", ""))
    print(json.dumps({k: report.get(k) for k in (
        "healthy_s", "up_s", "replay_s", "achieved", "registered", "codes", "retransmits",
        "timeouts", "worst_failed", "down_again", "ast_bad_lines", "cpu_window")}))
    return 0 if t["t_full"] else 1


def main(argv):
    if len(argv) == 3 and argv[1] == "metrics":
        sys.stdout.write(fetch(argv[2]))
        return 0
    if len(argv) == 5 and argv[1] == "wait":
        return wait(argv[2], int(argv[3]), float(argv[4]))
    if len(argv) == 8 and argv[1] == "watch":
        return watch(argv[2], argv[3], int(argv[4]), int(argv[5]), argv[6], argv[7])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
