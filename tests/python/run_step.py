"""Step programs for tests/python/test_run.py (stdlib only): ``run_step.py MODE ARGS...``.

Modes:
  folds DIR FOLD[,FOLD...]  leaky folds in miniature: each fold leaks 1,000 anonymous maps, 20
                            live threads and 50 MB, then holds 1.5 s so the runner samples it;
                            writes {"folds": [...], "threads": N, "maps": N} as its result.
  marker DIR STEP           appends STEP to DIR/starts, writes DIR/started-STEP, and while
                            DIR/hold-STEP exists waits; then writes {"step": STEP} as its result.
  session DIR STEP          starts a grandchild in its own session (sleep), writes its pid to
                            DIR/grandchild, DIR/started-STEP, then waits forever.
  overlap DIR STEP OTHER    writes DIR/started-STEP and waits (up to 60 s) for
                            DIR/started-OTHER: exits 0 only if both ran at once.
  oom MB                    touches MB megabytes.
  segv                      prints to stderr, then SIGSEGV.
  threads N                 starts N threads that stay alive (fails under a small pids limit).
  sleep                     sleeps forever.
  exit CODE                 prints to stderr and exits CODE.
"""

import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time


def result(value):
    path = os.environ.get("BULKHEAD_STEP_RESULT")
    if path:
        with open(path, "w") as f:
            json.dump(value, f)


def touch(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)


KEEP = []


def fold(n):
    stop = threading.Event()
    # Adjacent anonymous maps with the same protection merge into one; alternating the
    # protection keeps 1,000 separate maps (as a leaking library's would be).
    for i in range(1000):
        prot = mmap.PROT_READ if i % 2 else mmap.PROT_READ | mmap.PROT_WRITE
        KEEP.append(mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=prot))
    block = bytearray(50 << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    KEEP.append(block)
    for _ in range(20):
        t = threading.Thread(target=stop.wait, daemon=True)
        t.start()
        KEEP.append(t)
    print("fold %s done: threads=%d" % (n, threading.active_count()), flush=True)


def maps_count():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def main():
    mode = sys.argv[1]
    if mode == "folds":
        folds = sys.argv[3].split(",")
        for n in folds:
            print("fold %s/%s START" % (n, folds[-1]), flush=True)
            fold(n)
        result({"folds": folds, "threads": threading.active_count(), "maps": maps_count()})
        time.sleep(1.5)  # the workload holding its state, so that the runner samples its peaks
    elif mode == "marker":
        directory, step = sys.argv[2], sys.argv[3]
        with open(os.path.join(directory, "starts"), "a") as f:
            f.write(step + "\n")
        touch(os.path.join(directory, "started-" + step))
        while os.path.exists(os.path.join(directory, "hold-" + step)):
            time.sleep(0.05)
        result({"step": step})
    elif mode == "session":
        directory, step = sys.argv[2], sys.argv[3]
        child = subprocess.Popen(["/bin/sleep", "1000"], start_new_session=True)
        with open(os.path.join(directory, "grandchild"), "w") as f:
            f.write(str(child.pid))
        touch(os.path.join(directory, "started-" + step))
        while True:
            time.sleep(1)
    elif mode == "overlap":
        directory, step, other = sys.argv[2], sys.argv[3], sys.argv[4]
        touch(os.path.join(directory, "started-" + step))
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(directory, "started-" + other)):
            if time.monotonic() > deadline:
                sys.exit(1)
            time.sleep(0.05)
    elif mode == "oom":
        block = bytearray(int(sys.argv[2]) << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
    elif mode == "segv":
        sys.stderr.write("about to segfault\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "threads":
        stop = threading.Event()
        for _ in range(int(sys.argv[2])):
            threading.Thread(target=stop.wait, daemon=True).start()
    elif mode == "sleep":
        while True:
            time.sleep(1)
    elif mode == "garbage":
        # What a native library may leave on stderr, ending inside a 3-byte character.
        sys.stderr.buffer.write(b"\xff\xfe not utf-8 \xe2\x82")
        sys.stderr.flush()
        with open(os.environ["BULKHEAD_STEP_RESULT"], "wb") as f:
            f.write(b'{"note": "\xff"}')
        sys.exit(3)
    elif mode == "exit":
        sys.stderr.write("the step failed on its own\n")
        sys.exit(int(sys.argv[2]))


if __name__ == "__main__":
    main()
