#!/usr/bin/env python3
"""Time to callable (issue 14), run inside the tester container next to a registration burst.

SAMPLES phones are spread evenly over the burst's SECONDS. Each answers calls on its own port
(SIPp uas-answer.xml), registers through Kamailio with its Contact at that port
(register-contact.xml), and the moment the REGISTER's 200 OK is in, a caller calls it
(uac-call.xml); a call that fails is placed again every RETRY_MS until one is answered or
GIVE_UP_S pass. Per sample: time from the 200 OK to the first answered call, and how many calls
failed before it (each a call to a registered phone that failed). The time is taken when the
call that got through was placed.

    callable_probe.py OUT_CSV SECONDS SAMPLES FIRST_PORT USERS_CSV
USERS_CSV rows: callee;password;caller;caller_password (one per sample).
Prints one summary line; OUT_CSV gets a row per sample.
"""

import csv
import os
import subprocess
import sys
import threading
import time

SIPP_DIR = "/work/tests/sipp"
KAMAILIO = "10.78.0.20:5060"
TESTER = "10.78.0.50"
REALM = "regmirror.test"
RETRY_MS = 1000
GIVE_UP_S = 120


def now_ms():
    return time.time() * 1000


def sipp(scenario, port, rows, workdir, *, timeout, extra=()):
    cmd = ["sipp", "-sf", f"{SIPP_DIR}/{scenario}", "-i", TESTER, "-p", str(port),
           "-mp", str(30000 + (port % 2000) * 4), "-s", REALM, "-m", "1", "-nostdin",
           "-timeout", str(timeout), "-timeout_error", *extra, KAMAILIO]
    if rows:
        inf = os.path.join(workdir, f"{scenario}-{port}.csv")
        with open(inf, "w") as f:
            f.write("SEQUENTIAL\n" + "".join(";".join(map(str, r)) + "\n" for r in rows))
        cmd[3:3] = ["-inf", inf]
    return cmd


def probe(i, start_at, callee, password, caller, caller_pw, port, workdir, results):
    while time.time() < start_at:
        time.sleep(min(0.01, max(0, start_at - time.time())))
    uas = subprocess.Popen(sipp("uas-answer.xml", port, [], workdir, timeout=GIVE_UP_S + 30,
                                extra=["-rtp_echo"])[:-1],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.2)  # bound before the INVITE can come
    contact = f"sip:{callee}@{TESTER}:{port}"
    reg = subprocess.run(sipp("register-contact.xml", port + 1,
                              [(callee, password, 3600, contact)], workdir, timeout=30),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t200 = now_ms()
    row = {"sample": i, "callee": callee, "registered": reg.returncode == 0,
           "t_200_ms": round(t200), "callable_ms": "", "failed_calls": 0}
    if reg.returncode == 0:
        deadline = time.time() + GIVE_UP_S
        while time.time() < deadline:
            placed = now_ms()
            call = subprocess.run(sipp("uac-call.xml", port + 2, [(caller, caller_pw, callee)],
                                       workdir, timeout=20),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if call.returncode == 0:
                row["callable_ms"] = round(placed - t200)
                break
            row["failed_calls"] += 1
            time.sleep(RETRY_MS / 1000)
    uas.kill()
    uas.wait()
    results.append(row)


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    out_csv, seconds, samples, first_port, users_csv = sys.argv[1:6]
    seconds, samples, first_port = float(seconds), int(samples), int(first_port)
    users = [r.strip().split(";") for r in open(users_csv) if r.strip()][:samples]
    workdir = os.path.dirname(os.path.abspath(out_csv))
    t0 = time.time()
    results, threads = [], []
    for i, (callee, pw, caller, caller_pw) in enumerate(users):
        at = t0 + seconds * (i + 0.5) / len(users)
        t = threading.Thread(target=probe, args=(i, at, callee, pw, caller, caller_pw,
                                                 first_port + 4 * i, workdir, results))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    results.sort(key=lambda r: r["sample"])
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    # A call that did not go through (the phone not registered, or never answered) counts as
    # not callable: reported apart, never as a time.
    times = [r["callable_ms"] for r in results if r["callable_ms"] != ""]
    failed = sum(r["failed_calls"] for r in results)
    never = sum(1 for r in results if r["registered"] and r["callable_ms"] == "")
    print(f"samples={len(results)} registered={sum(r['registered'] for r in results)} "
          f"callable={len(times)} never={never} failed_calls={failed} "
          f"p50_ms={pct(times, 0.5)} p99_ms={pct(times, 0.99)} max_ms={max(times, default='nan')}")


if __name__ == "__main__":
    main()
