"""A real redis-server for the cluster tests, started on a free loopback port in the test's
directory and killed afterwards. `appendonly=True` keeps an AOF (fsync every write), so a server
killed and started again on the same directory comes back with the streams it held."""

import os
import shutil
import subprocess

import pytest

from conftest import wait_until
from example_apps import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, directory, port, password=None, appendonly=False):
        self.directory, self.port, self.password = directory, port, password
        self.appendonly = appendonly
        self.proc = None

    def start(self):
        import redis
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.directory)]
        args += (["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly
                 else ["--appendonly", "no"])
        if self.password:
            args += ["--requirepass", self.password]
        self.log = open(os.path.join(str(self.directory), "redis.log"), "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
        wait_until(client.ping, 20, "redis-server to answer PING")
        client.close()

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc:
            self.log.close()
        self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path, free_port(), appendonly=True)
    server.start()
    yield server
    server.stop()
