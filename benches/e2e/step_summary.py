#!/usr/bin/env python3
"""benches/e2e helper: one CSV row per step, or (--table results.csv) the markdown table.

Step: step_summary.py DIR MODE RATE SENT BURST_MS ACCEPTED AST1 AST2 CONVERGE
  DIR holds SIPp's stat.csv (-trace_stat), rtt.csv (-trace_rtt, rtt_freq 1) and docker-stats.txt.
"""

import csv
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
    for r in rows:
        is_clean = (r["failed"] == "0" and r["ok"] == r["sent"]
                    and r["accepted"] == r["sent"] and r["ast1"] == r["sent"] and r["ast2"] == r["sent"]
                    and not r["converge_s"].startswith("no")
                    # the offered rate was absorbed: the burst took at most 10% longer than planned
                    and float(r["burst_s"]) <= 1.1 * int(r["sent"]) / int(r["rate"]))
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
        print(f"- clean rate ({mode}): {rate}/s")
    if "regmirror" in clean and clean.get("tutorial"):
        print(f"- ratio regmirror / tutorial clean rate: {clean['regmirror'] / clean['tutorial']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        table(sys.argv[2])
    else:
        step(sys.argv[1:])
