"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe``: the browser reads commands on its fd 3 and writes answers and events
on its fd 4, each message JSON ending in a NUL byte. No port, no websocket library, nothing from
PyPI. One page per browser, attached with ``flatten`` so its commands carry a ``sessionId``.

Every wait is bounded and waits on state (an answer, an event, a DOM condition), never on time.
The browser's user data directory is a temporary one, removed on close.
"""

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class BrowserError(Exception):
    pass


class ScriptError(BrowserError):
    """The page's JavaScript threw while evaluating an expression."""


class Browser:
    def __init__(self, timeout=60):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="bulkhead-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The shell puts our pipe ends on fds 3 and 4, where Chromium expects them, and execs it.
        argv = [CHROMIUM, "--headless=new", "--remote-debugging-pipe", "--no-sandbox",
                "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-dev-shm-usage", "--mute-audio",
                "--window-size=1280,900", "--user-data-dir=" + self.profile, "about:blank"]
        self.proc = subprocess.Popen(
            ["bash", "-c", 'exec 3<&%d 4>&%d; exec "$@"' % (to_browser_r, from_browser_w), "_"]
            + argv,
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._lock = threading.Condition()
        self._answers = {}
        self._next_id = 1
        self.events = []  # (method, params, sessionId), in arrival order
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = None

    # -- the pipe ---------------------------------------------------------------------------

    def _read(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self._take(json.loads(message))

    def _take(self, message):
        with self._lock:
            if "id" in message:
                self._answers[message["id"]] = message
            else:
                self.events.append((message.get("method"), message.get("params", {}),
                                    message.get("sessionId")))
            self._lock.notify_all()

    def send(self, method, params=None, session=None, timeout=None):
        """Sends one command and returns its result; raises BrowserError on an error answer."""
        with self._lock:
            ident = self._next_id
            self._next_id += 1
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._lock:
            while ident not in self._answers:
                if self._closed:
                    raise BrowserError("chromium exited: %s" % self._stderr_tail())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError("no answer to %s within %ss" % (method, timeout))
                self._lock.wait(left)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise BrowserError("%s: %s" % (method, answer["error"]))
        return answer.get("result", {})

    def _stderr_tail(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read()[-2000:].decode(errors="replace")

    # -- one page ---------------------------------------------------------------------------

    def open(self, url):
        """Opens a page on url with the Runtime, Log, Network and Page domains on."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(domain + ".enable", session=self.session)
        self.send("Page.navigate", {"url": url}, session=self.session)

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                           session=self.session)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise ScriptError("%s: %s" % (expression, details.get("exception", {}).get(
                "description", details.get("text"))))
        return result["result"].get("value")

    def wait_for(self, expression, timeout, what):
        """Polls a JavaScript expression until it is truthy; returns its value. An expression
        that throws (the page is not there yet) counts as false."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            try:
                value = self.evaluate(expression)
            except ScriptError as error:
                value, last_error = None, error
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("%s: not within %ss (last error: %s)"
                                     % (what, timeout, last_error))
            time.sleep(0.02)

    def page_errors(self):
        """Console errors, uncaught exceptions and failed loads the page reported so far."""
        errors = []
        with self._lock:
            events = list(self.events)
        for method, params, session in events:
            if session != self.session:
                continue
            if method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "")
                              + " " + json.dumps(params["exceptionDetails"].get("exception", {})))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console.%s: %s" % (params["type"], json.dumps(params.get("args"))))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append("log: %s %s" % (params["entry"].get("text"),
                                              params["entry"].get("url", "")))
        return errors

    def requested_urls(self):
        with self._lock:
            return [params["request"]["url"] for method, params, session in self.events
                    if method == "Network.requestWillBeSent" and session == self.session]

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                         session=self.session)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=10)
                except BrowserError:
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        finally:
            # Its renderers and zygotes share its session: none may outlive the test.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for fd in (self._to_browser,):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._reader.join(10)
            try:
                os.close(self._from_browser)
            except OSError:
                pass
            shutil.rmtree(self.profile, ignore_errors=True)
