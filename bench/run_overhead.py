"""Per-step overhead of `bulkhead run` against running the same command directly.

For each command (`/bin/true`, `/usr/bin/python3 -c pass`) and each round: run it STEPS times
directly (fork+exec+wait from this script, one after the other), then `bulkhead run --steps
1-STEPS -- COMMAND` once, without and with `--state` (a fresh directory per round); rounds are
interleaved so that machine load hits every variant alike. Reports the median per-step wall time
of each and the overhead per step (bulkhead's whole run, start-up included, divided by STEPS,
minus the direct per-step time). Target: <= 50 ms per step.

Usage: /usr/bin/python3 bench/run_overhead.py [--bulkhead build/bulkhead] [--steps 20]
       [--rounds 5]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import machine_line  # noqa: E402

COMMANDS = [("/bin/true", ["/bin/true"]), ("python3 -c pass", ["/usr/bin/python3", "-c", "pass"])]


def direct(command, steps):
    start = time.monotonic()
    for _ in range(steps):
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return (time.monotonic() - start) / steps


def via_bulkhead(binary, command, steps, state):
    args = [binary, "run", "--steps", "1-%d" % steps]
    if state:
        args += ["--state", state]
    start = time.monotonic()
    p = subprocess.run(args + ["--"] + command, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    if p.returncode != 0:
        raise SystemExit("bulkhead run exited %d" % p.returncode)
    return elapsed / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bulkhead", default=os.path.join(os.path.dirname(HERE), "build",
                                                           "bulkhead"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine_line())
    print("load average at start: %s" % open("/proc/loadavg").read().split()[:3])
    rows = []
    for label, command in COMMANDS:
        samples = {"direct": [], "run": [], "run --state": []}
        for _ in range(args.rounds):
            samples["direct"].append(direct(command, args.steps))
            samples["run"].append(via_bulkhead(args.bulkhead, command, args.steps, None))
            state = tempfile.mkdtemp(prefix="bulkhead-bench-state-")
            try:
                samples["run --state"].append(
                    via_bulkhead(args.bulkhead, command, args.steps, state))
            finally:
                shutil.rmtree(state, ignore_errors=True)
        med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
        rows.append((label, med))
    print()
    print("%d steps, %d interleaved rounds, medians, ms per step" % (args.steps, args.rounds))
    print("%-18s %10s %10s %14s %12s %16s" % ("command", "direct", "run", "run --state",
                                               "overhead", "overhead+state"))
    for label, med in rows:
        print("%-18s %10.2f %10.2f %14.2f %12.2f %16.2f" % (
            label, med["direct"], med["run"], med["run --state"], med["run"] - med["direct"],
            med["run --state"] - med["direct"]))
    print("target: overhead <= 50 ms per step")


if __name__ == "__main__":
    main()
