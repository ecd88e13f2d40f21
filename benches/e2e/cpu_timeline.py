#!/usr/bin/env python3
"""CPU per process name on the whole host (containers included), every 50 ms, from /proc.
Usage: cpu_timeline.py SECONDS OUT.txt  (start it with a burst; one line per sample:
`<unix time> name=ticks ...`, ticks of 10 ms). Showed that no process saturates during the
phones' stalls in runs 14-16 and that docker's healthcheck execs come in bursts (BENCHMARKS.md).
"""
import collections
import os
import sys
import time


def sample():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        r = s.rfind(")")
        fields = s[r + 2:].split()
        out[pid] = (s[s.find("(") + 1:r], int(fields[11]) + int(fields[12]))
    return out


def main(seconds, path):
    end = time.time() + seconds
    prev = sample()
    with open(path, "w") as out:
        while time.time() < end:
            time.sleep(0.05)
            t, cur = time.time(), sample()
            per_name = collections.Counter()
            for pid, (name, ticks) in cur.items():
                if pid in prev:
                    per_name[name] += ticks - prev[pid][1]
            prev = cur
            out.write(f"{t:.3f} " + " ".join(f"{k}={v}" for k, v in per_name.items() if v) + "\n")


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2])
