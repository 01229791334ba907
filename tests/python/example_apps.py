"""Helpers for the tests of examples/: the example's own pools for the ``Daemon`` fixture, a web
app run as a real server process on a free loopback port, plain HTTP to it, and the count of
connections a process holds to the daemon (to see that a client is reused, not made per
request).  Every wait is bounded and polls state; every process started is stopped."""

import json
import os
import signal
import socket
import subprocess
import tomllib
import urllib.error
import urllib.request
import uuid

from conftest import REPO, pid_alive, wait_until

EXAMPLES = os.path.join(REPO, "examples")


def example_pools(name):
    """The ``[pool.*]`` tables of examples/<name>/bulkhead.toml, with ``python_path`` made
    absolute (the fixture writes its config elsewhere); its ``[server]`` is the fixture's."""
    directory = os.path.join(EXAMPLES, name)
    with open(os.path.join(directory, "bulkhead.toml"), "rb") as f:
        config = tomllib.load(f)
    pools = {}
    for pool, keys in config["pool"].items():
        keys = dict(keys)
        keys["python_path"] = [os.path.join(directory, p) for p in keys.get("python_path", [])]
        pools[pool] = keys
    return pools


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Answer(object):
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Answer %d %r>" % (self.status, self.body[:2000])


def http(method, url, body=None, headers=None, timeout=30):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, dict(error.headers), error.read())


def multipart(field, filename, data):
    """``(body, headers)`` of a form upload of one file, as a browser or ``curl -F`` sends it."""
    boundary = uuid.uuid4().hex
    body = (("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n" % (boundary, field, filename))
            .encode() + data + ("\r\n--%s--\r\n" % boundary).encode())
    return body, {"Content-Type": "multipart/form-data; boundary=%s" % boundary}


class AppServer(object):
    """A web app's server process (``argv`` run in ``cwd``) on ``port``, its output in a log
    file; ``start()`` returns once ``GET health_path`` answers 200."""

    def __init__(self, argv, cwd, port, env, log_path, health_path="/healthz"):
        self.argv = argv
        self.cwd = cwd
        self.port = port
        self.env = env
        self.log_path = log_path
        self.health_path = health_path
        self.proc = None
        self.base = "http://127.0.0.1:%d" % port

    def start(self, timeout=60):
        env = dict(os.environ)
        env.update(self.env)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s; log:\n%s"
                                     % (self.argv[:4], self.proc.returncode, self.log()))
            return http("GET", self.base + self.health_path, timeout=5).status == 200

        try:
            wait_until(up, timeout, "the app at %s to answer %s" % (self.base, self.health_path),
                       interval=0.1)
        except AssertionError:
            self.stop()
            raise AssertionError("the app never answered; log:\n" + self.log())
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def post(self, path, body, headers=None):
        return http("POST", self.base + path, body, headers)

    def stop(self):
        """SIGTERM to its process group, SIGKILL if it is still there after 15 s."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        except ProcessLookupError:
            pass
        finally:
            self._log.close()
        wait_until(lambda: not pid_alive(self.proc.pid), 10, "the app process to be gone")


def connections_to(pid, port):
    """How many established TCP connections process ``pid`` holds to loopback ``port``."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    count = 0
    with open("/proc/%d/net/tcp" % pid) as f:
        next(f)
        for line in f:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


def daemon_port(d):
    return int(d.url.rsplit(":", 1)[1])
