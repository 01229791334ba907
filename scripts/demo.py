#!/usr/bin/python3
"""bulkhead demo: a small CNN served from warm workers, while some requests crash them.

Run from anywhere with Debian's Python (torch is optional: the model falls back to NumPy):

    /usr/bin/python3 scripts/demo.py

It starts ``build/bulkhead serve`` on a copy of ``examples/bulkhead.toml`` listening on a free
port, sends normal inferences interleaved with requests that double-free, segfault, deadlock or
raise inside the worker, prints what came back for each (outcome, attempts, worker, signal, the
first line of evidence, latency), then the pool's workers and counters, and stops the daemon with
SIGTERM. It exits 1 if anything did not go as expected (a normal job not ``ok``, a fault not
reported as its outcome, the daemon not exiting 0, a worker process left behind).
"""

import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BULKHEAD_BIN", os.path.join(ROOT, "build", "bulkhead"))
EXAMPLE = os.path.join(ROOT, "examples", "bulkhead.toml")
POOL = "faces"
START_DEADLINE_S = 30
READY_DEADLINE_S = 90      # two workers importing torch on two cores
STOP_DEADLINE_S = 30
# job_timeout limits one attempt's run (waiting in the queue never counts: that is queue_timeout).
# Only the "hang" job keeps the pool's short job_timeout (3 s); the others get a generous run
# limit so a slow first inference on a loaded machine is not mistaken for a hang.
QUEUED_TIMEOUT = "30s"

# What each kind of payload must come back as.
EXPECT = {
    "normal": ("ok", None),
    # Each crashes its worker, is retried once on a fresh one (retries = 1), crashes that one too:
    # the caller hears `crashed` with the evidence of both; two different workers killed by the
    # same payload (poison_after = 2) put it in quarantine ("quarantined": true), so a
    # resubmission is refused as `poison` without risking a worker.
    "double-free": ("crashed", "SIGABRT"),
    "segfault": ("crashed", "SIGSEGV"),
    "hang": ("timed_out", None),
    "raise": ("handler_error", None),
}

_failures = []


def check(condition, message):
    if not condition:
        _failures.append(message)
    return condition


# -- config and daemon ----------------------------------------------------------------------


def write_config(tmpdir):
    """A copy of the example config listening on a free port, with python_path made absolute
    (relative entries resolve against the config file's directory, which is now tmpdir)."""
    with open(EXAMPLE) as f:
        text = f.read()
    base = os.path.dirname(EXAMPLE)
    if tomllib is not None:
        with open(EXAMPLE, "rb") as f:
            paths = tomllib.load(f)["pool"][POOL].get("python_path", [])
    else:
        m = re.search(r"^python_path\s*=\s*\[(.*?)\]", text, re.M)
        paths = re.findall(r'"([^"]*)"', m.group(1)) if m else []
    absolute = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)) for p in paths]
    text, n = re.subn(r'^listen\s*=.*$', 'listen = "127.0.0.1:0"', text, count=1, flags=re.M)
    if n != 1:
        sys.exit("demo: no `listen =` line in %s" % EXAMPLE)
    text = re.sub(r"^python_path\s*=.*$", "python_path = %s" % json.dumps(absolute), text,
                  count=1, flags=re.M)
    path = os.path.join(tmpdir, "bulkhead.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def _stop_with_us():
    """In the daemon's child before exec: SIGTERM it (a clean shutdown) if this script dies
    without stopping it, e.g. killed, or its output piped into `head`."""
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)     # PR_SET_PDEATHSIG


class Daemon:
    def __init__(self, config, tmpdir):
        self.log_path = os.path.join(tmpdir, "daemon.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BIN, "serve", "-c", config], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_stop_with_us)
        self.host = self.port = None
        self.seen_pids = set()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_listening(self):
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit("demo: the daemon exited with %s before listening:\n%s"
                         % (self.proc.returncode, self.log()))
            m = re.search(r"listening on http://([0-9.]+):(\d+)", self.log())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                return
            time.sleep(0.05)
        self.kill()
        sys.exit("demo: the daemon did not log 'listening on' within %d s:\n%s"
                 % (START_DEADLINE_S, self.log()))

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def request(self, method, path, body=None, headers=None, timeout=60):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def pool(self):
        status, _, body = self.request("GET", "/v1/pools", timeout=10)
        for p in json.loads(body)["pools"]:
            self.seen_pids.update(w["pid"] for w in p["workers"] if w.get("pid"))
            if p["name"] == POOL:
                return p
        raise KeyError(POOL)

    def wait_ready(self, what):
        deadline = time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < deadline:
            p = self.pool()
            idle = [w for w in p["workers"] if w["state"] == "idle"]
            if len(idle) >= p["workers_target"]:
                return p
            time.sleep(0.1)
        check(False, "pool %s not back to full strength within %d s (%s)"
              % (POOL, READY_DEADLINE_S, what))
        return self.pool()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# -- jobs -----------------------------------------------------------------------------------


def image_payload(i):
    """Some image-ish bytes: a gradient that differs per job."""
    return bytes((x * (i + 3) + i * 17) % 256 for x in range(3 * 32 * 32))


def run_job(daemon, seq, kind, payload):
    headers = {} if kind == "hang" else {"X-Bulkhead-Timeout": QUEUED_TIMEOUT}
    t0 = time.monotonic()
    try:
        status, hdrs, body = daemon.request("POST", "/v1/pools/%s/jobs" % POOL, payload, headers)
    except OSError as exc:
        return {"seq": seq, "kind": kind, "outcome": "no answer: %s" % exc, "attempts": [],
                "ms": (time.monotonic() - t0) * 1000, "status": None}
    ms = (time.monotonic() - t0) * 1000
    row = {"seq": seq, "kind": kind, "status": status, "ms": ms}
    if status == 200:
        result = json.loads(body)
        row.update(outcome="ok", attempts=int(hdrs.get("x-bulkhead-attempts", "1")),
                   worker=hdrs.get("x-bulkhead-worker", result.get("worker")), result=result)
    else:
        problem = json.loads(body) if body else {}
        row.update(outcome=problem.get("outcome") or problem.get("error") or str(status),
                   problem=problem, attempts=len(problem.get("attempts", [])))
        last = (problem.get("attempts") or [{}])[-1]
        row["worker"] = last.get("worker", "-")
        row["last"] = last
    return row


def _top_frames(stacks, count=2):
    """'func (file.py:LINE) < caller (file.py:LINE)': the innermost frames of the first thread in
    a faulthandler dump (most recent call first)."""
    frames = []
    for line in (stacks or "").splitlines():
        m = re.match(r'\s*File "([^"]+)", line (\d+) in (\S+)', line)
        if m:
            frames.append("%s (%s:%s)" % (m.group(3), os.path.basename(m.group(1)), m.group(2)))
        elif frames:
            break
    return " < ".join(frames[:count])


def evidence(row):
    if row["outcome"] == "ok":
        r = row["result"]
        return "%s (p=%.2f) in %.1f ms on %s" % (r["label"], r["score"], r["latency_ms"],
                                                 r["backend"].split()[0])
    last = row.get("last", {})
    if "error" in last:
        return "%s: %s" % (last["error"].get("type"), last["error"].get("message"))
    for line in (last.get("stderr_tail") or "").splitlines():
        if line.strip():
            return "stderr: " + line.strip()
    frame = _top_frames(last.get("stacks"))
    if frame:
        return "stack: " + frame
    return last.get("cause") or row.get("problem", {}).get("detail", "")


def signal_or_exit(row):
    last = row.get("last", {})
    if last.get("signal"):
        return last["signal"]
    if last.get("exit_code") is not None:
        return "exit %s" % last["exit_code"]
    return "-"


def print_table(rows):
    cols = [("job", 4), ("payload", 12), ("outcome", 13), ("att", 3), ("worker", 9),
            ("signal", 8), ("latency", 9), ("evidence", 0)]
    head = "  ".join(name.ljust(w) if w else name for name, w in cols)
    print(head)
    print("-" * min(110, len(head) + 40))
    for r in rows:
        cells = ["#%d" % r["seq"], r["kind"], r["outcome"], str(r["attempts"]),
                 str(r.get("worker") or "-"), signal_or_exit(r), "%.0f ms" % r["ms"],
                 evidence(r)[:70]]
        print("  ".join(c.ljust(w) if w else c for c, (_, w) in zip(cells, cols)))


def verify(rows):
    for r in rows:
        want_outcome, want_signal = EXPECT[r["kind"]]
        label = "job #%d (%s)" % (r["seq"], r["kind"])
        if not check(r["outcome"] == want_outcome,
                     "%s: outcome %s, expected %s" % (label, r["outcome"], want_outcome)):
            continue
        attempts = r.get("problem", {}).get("attempts", [])
        if want_signal:
            check(all(a.get("signal") == want_signal for a in attempts),
                  "%s: expected every attempt killed by %s" % (label, want_signal))
        if r["kind"] == "double-free":
            check("double free detected" in (attempts[-1].get("stderr_tail") or ""),
                  "%s: glibc's message missing from stderr_tail" % label)
        if r["kind"] in ("double-free", "segfault"):
            check(r.get("problem", {}).get("quarantined") is True,
                  "%s: expected its payload quarantined after two crashed workers" % label)
        if r["kind"] == "hang":
            check("_hang" in (attempts[-1].get("stacks") or ""),
                  "%s: the stacks do not show the deadlocked frame" % label)


def concurrently(daemon, jobs):
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as ex:
        futures = [ex.submit(run_job, daemon, seq, kind, payload) for seq, kind, payload in jobs]
        return [f.result() for f in futures]


def wait_running(daemon, deadline_s=10):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if daemon.pool()["in_flight"] >= 1:
            return
        time.sleep(0.02)
    check(False, "the hang job did not start within %d s" % deadline_s)


def section(title):
    print("\n== %s %s" % (title, "=" * max(0, 76 - len(title))))


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit("demo: %s not found; build it first:\n  cmake -S %s -B %s/build -G Ninja && "
                 "ninja -C %s/build" % (BIN, ROOT, ROOT, ROOT))
    sys.path.insert(0, os.path.join(ROOT, "python"))
    tmpdir = tempfile.mkdtemp(prefix="bulkhead-demo-")
    config = write_config(tmpdir)
    daemon = Daemon(config, tmpdir)
    try:
        daemon.wait_listening()
        section("bulkhead listening on %s; waiting for pool '%s' to warm up" % (daemon.url, POOL))
        t0 = time.monotonic()
        p = daemon.wait_ready("start-up")
        print("%d workers ready in %.1f s: %s" % (
            len(p["workers"]), time.monotonic() - t0,
            ", ".join("%s (pid %s)" % (w["id"], w["pid"]) for w in p["workers"])))

        seq = iter(range(1, 1000))
        before = [(next(seq), "normal", image_payload(i)) for i in range(4)]
        hang = (next(seq), "hang", b"hang")
        mix_kinds = ["normal", "double-free", "normal", "segfault", "normal", "raise", "normal"]
        mix = [(next(seq), k, image_payload(100 + i) if k == "normal" else k.encode())
               for i, k in enumerate(mix_kinds)]

        section("normal inferences, before any fault")
        rows_before = concurrently(daemon, before)
        print_table(rows_before)

        section("normal inferences interleaved with faults, all at once")
        t0 = time.monotonic()
        # The hang goes first and alone until it runs, so that it times out on the pool's
        # job_timeout rather than waiting in the queue; then everything else at once.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
            hang_future = ex.submit(run_job, daemon, *hang)
            wait_running(daemon)
            rows_mix = concurrently(daemon, mix)
            rows_mix = sorted(rows_mix + [hang_future.result()], key=lambda r: r["seq"])
        print_table(rows_mix)
        print("(all %d answered in %.1f s; the supervisor never went down)"
              % (len(rows_mix), time.monotonic() - t0))

        daemon.wait_ready("after the faults")
        after = [(next(seq), "normal", image_payload(200 + i)) for i in range(4)]
        section("normal inferences, after the crashes")
        rows_after = concurrently(daemon, after)
        print_table(rows_after)

        section("the same through the Python client")
        import bulkhead
        client = bulkhead.Client(daemon.url, timeout=20)
        result = client.call_json(POOL, {"pixels": list(range(64))})
        print("client.call_json(pool, {...}) -> label=%s score=%s worker=%s"
              % (result["label"], result["score"], result["worker"]))
        try:
            client.call(POOL, b"raise")
            check(False, "client.call(b'raise') did not raise")
        except bulkhead.HandlerError as exc:
            print("client.call(b'raise') raised %s: %s: %s"
                  % (type(exc).__name__, exc.error_type, exc.error_message))
        pids_before = sorted(w["pid"] for w in daemon.pool()["workers"])
        try:
            client.call(POOL, b"double-free")
            check(False, "the quarantined double-free payload was run again")
        except bulkhead.Poisoned as exc:
            print("client.call(b'double-free') again raised %s at once: %s"
                  % (type(exc).__name__, exc.detail))
        check(sorted(w["pid"] for w in daemon.pool()["workers"]) == pids_before,
              "refusing a quarantined payload must not touch a worker")
        client.close()

        section("pool status")
        p = daemon.pool()
        c = p["counters"]
        print("pool %s: handler %s, %d workers target, queue %d/%d"
              % (p["name"], p["handler"], p["workers_target"], p["queue_length"],
                 p["queue_limit"]))
        z = p.get("zygote")
        if z:
            print("  mode zygote: template pid %s, %s, %d workers forked from it"
                  % (z["pid"], z["state"], z["forked"]))
        for w in p["workers"]:
            print("  %-10s pid %-7s %-9s jobs served %-4s age %.1f s"
                  % (w["id"], w["pid"], w["state"], w.get("jobs_served", "?"),
                     w.get("age_s", 0.0)))
        print("  counters: " + ", ".join("%s=%s" % kv for kv in c.items()))
        restarts = c.get("worker_starts", 0) - p["workers_target"]
        print("  restarts (worker_starts - target): %d; worker deaths: %s"
              % (restarts, c.get("worker_deaths")))

        verify(rows_before + rows_mix + rows_after)
        check(restarts >= 2, "expected the crashed/killed workers to be replaced")
        normal = [r for r in rows_before + rows_mix + rows_after if r["kind"] == "normal"]
        print("\nnormal jobs ok: %d/%d (before the faults: %d/%d, after: %d/%d)" % (
            sum(r["outcome"] == "ok" for r in normal), len(normal),
            sum(r["outcome"] == "ok" for r in rows_before), len(rows_before),
            sum(r["outcome"] == "ok" for r in rows_after), len(rows_after)))
    finally:
        section("SIGTERM")
        rc = daemon.stop() if daemon.proc.poll() is None else daemon.proc.returncode
        print("daemon exited with %s" % rc)
        check(rc == 0, "daemon exit status %r after SIGTERM (expected 0)" % rc)
        deadline = time.monotonic() + 5
        left = sorted(daemon.seen_pids)
        while True:
            left = [pid for pid in left if not _gone(pid)]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        check(not left, "worker processes left after shutdown: %s" % left)
        print("worker processes left: %s" % (left or "none"))

    if _failures:
        print("\nDEMO FAILED:")
        for f in _failures:
            print("  - " + f)
        print("daemon log: %s" % daemon.log_path)
        return 1
    shutil.rmtree(os.path.dirname(daemon.log_path), ignore_errors=True)
    print("\nDEMO OK: every job got exactly one typed outcome; normal jobs before and after the "
          "crashes succeeded.")
    return 0


def _gone(pid):
    """True if pid no longer runs (a zombie only waits to be reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


if __name__ == "__main__":
    sys.exit(main())
