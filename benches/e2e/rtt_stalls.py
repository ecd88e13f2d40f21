#!/usr/bin/env python3
"""Where a step's slow registrations sit in time: SIPp's rtt.csv (Date_ms;response_time_ms)
bucketed into 100 ms windows. Repeats of one rate append to the same file; each burst is told
apart by SIPp's clock starting again. Usage: rtt_stalls.py DIR/rtt.csv [...] [--slow MS]

Prints, per burst: its p99, how many registrations took >= MS (8, two SIPp ticks), and the
windows holding at least 5 of them (start ms: slow/total <= max ms). Periodic clusters point at
something periodic on the host (BENCHMARKS.md part 4, runs 14-16: the container healthchecks).
"""
import collections
import sys


def bursts(path):
    cur, prev = [], -1.0
    with open(path) as f:
        for line in f:
            if not line[:1].isdigit():
                continue
            t, ms = line.strip().split(";")[:2]
            t = float(t)
            if cur and t + 1000 < prev:
                yield cur
                cur = []
            cur.append((t, float(ms)))
            prev = t
    if cur:
        yield cur


def main(argv):
    slow_ms = 8.0
    if "--slow" in argv:
        i = argv.index("--slow")
        slow_ms = float(argv[i + 1])
        del argv[i:i + 2]
    for path in argv:
        for n, rows in enumerate(bursts(path)):
            t0 = rows[0][0]
            windows = collections.defaultdict(list)
            for t, ms in rows:
                windows[int((t - t0) // 100)].append(ms)
            times = sorted(ms for _, ms in rows)
            p99 = times[int(len(times) * 0.99)]
            slow = sum(1 for _, ms in rows if ms >= slow_ms)
            hot = [f"{k * 100}:{sum(1 for x in v if x >= slow_ms)}/{len(v)}<={max(v):.0f}"
                   for k, v in sorted(windows.items())
                   if sum(1 for x in v if x >= slow_ms) >= 5]
            print(f"{path} burst {n}: p99 {p99:.0f} ms, {slow} of {len(rows)} >= {slow_ms:.0f} ms; "
                  + " ".join(hot))


if __name__ == "__main__":
    main(sys.argv[1:])
