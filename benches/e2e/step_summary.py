#!/usr/bin/env python3
"""benches/e2e helper: one CSV row per step, or (--table results.csv) the markdown table.

Step: step_summary.py DIR MODE RATE SENT BURST_MS ACCEPTED AST1 AST2 CONVERGE
  DIR holds SIPp's stat.csv (-trace_stat), rtt.csv (-trace_rtt, rtt_freq 1) and docker-stats.txt.
SQL profile: step_summary.py --sql-profile DIR REGISTRATIONS (DIR/general-log.tsv and
  status-before.txt / status-after.txt from run.sh SQL_PROFILE=1).
"""

import csv
import re
import sys


def final_stats(path):
    """(successful, failed) from the last row of SIPp's -trace_stat file."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return None, None
    if len(rows) < 2:
        return None, None
    head, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(head)}

    def get(name):
        i = col.get(name)
        return int(last[i]) if i is not None and i < len(last) and last[i].strip() else None

    return get("SuccessfulCall(C)"), get("FailedCall(C)")


def latencies(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) < 2:
                    continue
                try:
                    out.append(float(parts[1]))
                except ValueError:
                    continue  # header
    except OSError:
        pass
    return sorted(out)


def pct(values, p):
    if not values:
        return ""
    k = min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))
    return f"{values[k]:.1f}"


def cpu(path):
    """Container service name -> CPU% from `docker stats --no-stream`."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) >= 2:
                    # regmirror_kamailio_1 -> kamailio (compose v1 names)
                    name = parts[0].split("_")
                    svc = name[1] if len(name) >= 3 else parts[0]
                    out[svc] = parts[1].rstrip("%")
    except OSError:
        pass
    return out


def step(argv):
    d, mode, rate, sent, burst_ms, accepted, a1, a2, conv = argv
    ok, failed = final_stats(f"{d}/stat.csv")
    lat = latencies(f"{d}/rtt.csv")
    c = cpu(f"{d}/docker-stats.txt")
    row = [mode, rate, sent, ok if ok is not None else "", failed if failed is not None else "",
           f"{int(burst_ms) / 1000:.1f}", pct(lat, 50), pct(lat, 99),
           f"{lat[-1]:.1f}" if lat else "", accepted, a1, a2, conv]
    row += [c.get(s, "") for s in ("mariadb", "kamailio", "ast1", "ast2", "regmirror", "regmirror2")]
    csv.writer(sys.stdout, lineterminator="\n").writerow(row)


def table(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    print("| mode | rate/s (offered) | sent | failed (phone) | burst s | p50 ms | p99 ms | max ms "
          "| accepted (location) | on ast1 | on ast2 | converged after | CPU % mariadb / kamailio / ast1 / ast2 / regmirror / regmirror2 | clean |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    clean = {}
    p99 = {}
    for r in rows:
        is_clean = clean_row(r)
        if r["p99_ms"]:
            p99[(r["mode"], int(r["rate"]))] = float(r["p99_ms"])
        if is_clean:
            clean[r["mode"]] = max(clean.get(r["mode"], 0), int(r["rate"]))
        cpus = " / ".join(r[k] or "-" for k in ("cpu_mariadb", "cpu_kamailio", "cpu_ast1", "cpu_ast2",
                                                  "cpu_regmirror", "cpu_regmirror2"))
        conv = r["converge_s"] + (" s" if not r["converge_s"].startswith("no") else "")
        print(f"| {r['mode']} | {r['rate']} | {r['sent']} | {r['failed']} | {r['burst_s']} | {r['p50_ms']} "
              f"| {r['p99_ms']} | {r['max_ms']} | {r['accepted']} | {r['ast1']} | {r['ast2']} | {conv} "
              f"| {cpus} | {'yes' if is_clean else 'no'} |")
    print()
    for mode, rate in clean.items():
        print(f"- clean rate ({mode}): {rate}/s (highest clean step)")
    for mode in ("regmirror1", "regmirror"):
        if mode in clean and clean.get("tutorial"):
            print(f"- ratio {mode} / tutorial clean rate: {clean[mode] / clean['tutorial']:.2f}")
    # what each design adds to the phone's p99 over Kamailio alone, at the rates both ran
    for mode in ("tutorial", "regmirror1", "regmirror"):
        diffs = [f"{rate}/s {p99[(m, rate)] - p99[('none', rate)]:+.0f}"
                 for (m, rate) in sorted(p99) if m == mode and ("none", rate) in p99]
        if diffs:
            print(f"- phone p99 added by {mode} over none (ms): " + ", ".join(diffs))


def clean_row(r):
    """No phone failure, every accepted binding on both nodes (none: no nodes), rate absorbed."""
    on_nodes = r["mode"] == "none" or (r["ast1"] == r["sent"] and r["ast2"] == r["sent"])
    return (r["failed"] == "0" and r["ok"] == r["sent"] and r["accepted"] == r["sent"] and on_nodes
            and not r["converge_s"].startswith("no")
            # the offered rate was absorbed: the burst took at most 10% longer than planned
            and float(r["burst_s"]) <= 1.1 * int(r["sent"]) / int(r["rate"]))


def last_clean(path):
    """Exit status 0 when the last step in results.csv was clean (run.sh's early stop)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return 0 if rows and clean_row(rows[-1]) else 1


CLIENTS = {"10.77.0.20": "kamailio", "10.77.0.31": "ast1", "10.77.0.32": "ast2", "10.77.0.33": "ast3",
           "10.77.0.40": "regmirror", "10.77.0.41": "regmirror2", "10.78.0.50": "tester"}
COMMANDS = ("Query", "Execute")  # statements run; Prepare / Close stmt are extra round trips


def client(user_host):
    """`asterisk[asterisk] @  [10.77.0.31]` -> ast1 (by address, the user is shared by nodes)."""
    m = re.search(r"\[([0-9.]+)\]\s*$", user_host)
    if m:
        return CLIENTS.get(m.group(1), m.group(1))
    return user_host.split("[")[0] or "?"


def normalize(sql):
    """One shape per statement: literals and IN/VALUES lists become ?."""
    sql = sql.replace("\\n", " ").replace("\\t", " ")
    sql = re.sub(r"'(?:[^'\\]|\\.|'')*'", "?", sql)
    sql = re.sub(r"\b\d+(?:\.\d+)?\b", "?", sql)
    sql = re.sub(r"\(\s*\?(?:\s*,\s*\?)*\s*\)(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))*", "(?)", sql)
    sql = re.sub(r"\s+", " ", sql).strip()
    return sql if len(sql) <= 160 else sql[:157] + "..."


def status(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def sql_profile(d, registrations):
    """Markdown: statements per phone registration by client and shape, from general-log.tsv."""
    n = int(registrations)
    by_client = {}
    shapes = {}
    with open(f"{d}/general-log.tsv", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 3)
            if len(parts) < 4:
                continue
            _, user_host, cmd, arg = parts
            who = client(user_host)
            if who == "root" or "localhost" in user_host:
                continue  # the benchmark's own probes
            c = by_client.setdefault(who, {})
            c[cmd] = c.get(cmd, 0) + 1
            if cmd in COMMANDS:
                key = (who, normalize(arg))
                shapes[key] = shapes.get(key, 0) + 1
    print(f"SQL profile of {d.rstrip('/').rsplit('/', 1)[-1]}: {n} phone registrations\n")
    print("| client | statements | per registration | round trips (all commands) | by command |")
    print("| --- | ---: | ---: | ---: | --- |")
    tot_st = tot_rt = 0
    for who in sorted(by_client):
        c = by_client[who]
        st = sum(v for k, v in c.items() if k in COMMANDS)
        rt = sum(c.values())
        tot_st += st
        tot_rt += rt
        cmds = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        print(f"| {who} | {st} | {st / n:.2f} | {rt} ({rt / n:.2f}) | {cmds} |")
    print(f"| **all** | {tot_st} | **{tot_st / n:.2f}** | {tot_rt} ({tot_rt / n:.2f}) | |")
    print("\n| client | count | per registration | statement |")
    print("| --- | ---: | ---: | --- |")
    for (who, shape), count in sorted(shapes.items(), key=lambda kv: (kv[0][0], -kv[1])):
        print(f"| {who} | {count} | {count / n:.2f} | `{shape}` |")
    before, after = status(f"{d}/status-before.txt"), status(f"{d}/status-after.txt")
    if before and after:
        print("\nServer counters over the window (all clients, the benchmark's probes included), per registration:\n")
        print("| counter | delta | per registration |")
        print("| --- | ---: | ---: |")
        for k in sorted(after):
            delta = after[k] - before.get(k, 0)
            if delta:
                print(f"| {k} | {delta} | {delta / n:.2f} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        table(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--last-clean":
        sys.exit(last_clean(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--sql-profile":
        sql_profile(sys.argv[2], sys.argv[3])
    else:
        step(sys.argv[1:])
