"""What ``Client`` and ``AsyncClient`` (and their job handles) share, sans-I/O.

This module owns a client's settings (URL, default timeout, margins, body bound), the plan of
each request (path, headers, how long to wait for the answer) and what a job handle keeps (its
id, its final answer once read).  The transports (``bulkhead.client``, ``bulkhead.aio``) subclass
these and only send: each public method there is "plan here, send there, read with
``bulkhead._http``".  Nothing here opens a socket or sleeps.
"""

import time

from ._h1 import encode_head, finish_request, host_header
from ._http import (
    ACK_TIMEOUT, DEFAULT_MAX_RESPONSE_BODY, MAX_POLL_WAIT, TIMEOUT_MARGIN, PollClock, _describe,
    answer_timeout, check_job_id, check_max_response_body, encode_json_payload, encode_payload,
    final_summary, job_path, job_request_headers, job_state, parse_url, poll_path,
    pool_jobs_path, resolve_url, timeout_header)

# Job request heads kept per client; past this many (pools x timeouts x allow_poison) the
# cache starts over, so callers passing ever-new timeouts do not grow it.
_HEADS_MAX = 256
from .errors import ClientTimeout, ResponseTooLarge, TransportError


class ClientCore(object):
    """A client's settings and request plans (see ``Client`` for their meaning)."""

    timeout_margin = TIMEOUT_MARGIN
    max_poll_wait = MAX_POLL_WAIT
    ack_timeout = ACK_TIMEOUT
    _handle_class = None          # the job handle class of the transport

    def __init__(self, url=None, timeout=None, max_response_body=DEFAULT_MAX_RESPONSE_BODY):
        if timeout is not None:
            timeout_header(timeout)  # validate now rather than on the first call
        check_max_response_body(max_response_body)
        url = resolve_url(url)
        kind, where, prefix = parse_url(url)
        self.url = url
        self.timeout = timeout
        self.max_response_body = max_response_body
        self._kind = kind
        self._where = where
        self._prefix = prefix
        self._host = "localhost" if kind == "unix" else host_header(*where)
        self._job_paths = {}
        self._heads = {}             # (pool, timeout, allow_poison) -> (path, encoded head)

    def job(self, job_id, pool=None):
        """A handle for an existing job id (from a handle's ``id``, another process, or the
        ``X-Bulkhead-Job`` / ``JobFailed.job_id`` of a sync call).  Nothing is sent until it is
        used; an unknown id raises ``ApiError`` (``error == "unknown_job"``, status 404) then."""
        return self._handle_class(self, check_job_id(job_id), pool=pool)

    def __repr__(self):
        return "%s(%r)" % (self._name, self.url)

    def _pool_view_path(self, pool):
        """``{prefix}/v1/pools/{pool}`` (the name checked and quoted as for jobs)."""
        return self._pool_path(pool)[:-len("/jobs")]

    def _pool_path(self, pool):
        path = self._job_paths.get(pool)
        if path is None:
            path = self._job_paths[pool] = pool_jobs_path(self._prefix, pool)
        return path

    def _call_plan(self, pool, payload, timeout, allow_poison, as_json=False):
        """``(path, body, content_type, headers, answer wait)`` of a sync job: its ``timeout``
        (else the client's) is the job's deadline, and the answer is awaited a margin longer."""
        body, content_type = _payload(payload, as_json)
        path = self._pool_path(pool)
        if timeout is None:
            timeout = self.timeout
        headers = job_request_headers(timeout, deadline=True, allow_poison=allow_poison)
        return path, body, content_type, headers, answer_timeout(timeout, self.timeout_margin)

    def _job_request(self, pool, payload, timeout, allow_poison, as_json=False):
        """``(path, request parts, answer wait)`` of a sync job: ``_call_plan`` encoded
        (``bulkhead._h1.finish_request``).  The head (request line, ``Host``, deadline headers)
        of each pool, timeout and ``allow_poison`` is checked and encoded once, then reused:
        what a call does per request is only its payload and ``Content-Length``.  Raises
        ``LocalProtocolError`` for a head that cannot be written."""
        if timeout is None:
            timeout = self.timeout
        try:   # True == 1 as a key, but is no timeout: it takes the checks that refuse it
            head = None if timeout is True else self._heads.get((pool, timeout, allow_poison))
        except TypeError:
            head = None      # an unhashable pool or flag: the checks below say what is wrong
        if head is None:
            head = self._job_head(pool, timeout, allow_poison)
        if as_json:
            body, content_type = encode_json_payload(payload), "application/json"
        elif type(payload) is bytes:
            body, content_type = payload, None     # octet-stream: no Content-Type line
        else:
            body, content_type = encode_payload(payload)
        wait = None if timeout is None else answer_timeout(timeout, self.timeout_margin)
        return head[0], finish_request(head[1], body, content_type), wait

    def _job_head(self, pool, timeout, allow_poison):
        path = self._pool_path(pool)
        headers = job_request_headers(timeout, deadline=True, allow_poison=allow_poison)
        head = (path, encode_head("POST", path, self._host, headers))
        if len(self._heads) >= _HEADS_MAX:
            self._heads.clear()
        self._heads[(pool, timeout, allow_poison)] = head
        return head

    def _submit_plan(self, pool, payload, timeout, idempotency_key, allow_poison, as_json=False):
        """``(path, body, content_type, headers, idempotent)`` of an async submission: its
        ``timeout`` is the run limit only; with a key it may be resent."""
        body, content_type = _payload(payload, as_json)
        path = self._pool_path(pool) + "?wait=0"
        headers = job_request_headers(self.timeout if timeout is None else timeout,
                                      idempotency_key, allow_poison=allow_poison)
        return path, body, content_type, headers, idempotency_key is not None


    # -- the exceptions of a failed round trip, worded alike for both transports

    def _no_answer_in_time(self, wait, method, path, sent):
        return ClientTimeout("no response from bulkhead at %s within %g s (%s %s); the job may "
                             "still be running" % (self.url, wait, method, path),
                             job_may_have_run=sent)

    def _answer_too_large(self, method, path, exc):
        return ResponseTooLarge("answer from bulkhead at %s (%s %s) refused: %s"
                                % (self.url, method, path, exc), job_may_have_run=True,
                                limit=self.max_response_body)

    def _lost_after_sending(self, method, path, exc, idempotent):
        return TransportError("connection to bulkhead at %s lost after the request was sent "
                              "(%s %s): %s; the job may have run, so it was not sent again"
                              % (self.url, method, path, _describe(exc)),
                              job_may_have_run=not idempotent)


def quarantine_entries(document):
    """The entries of ``GET /v1/quarantine``'s ``{"quarantine": [...]}`` (a list of dicts)."""
    entries = document.get("quarantine") if isinstance(document, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _payload(payload, as_json):
    if as_json:
        return encode_json_payload(payload), "application/json"
    return encode_payload(payload)


class JobHandleCore(object):
    """A job handle's state: ``id``, ``pool``, ``duplicate``, ``location``, and its final answer
    ``(status, response, data)`` once read (then ``result`` and ``status`` ask nothing more)."""

    def __init__(self, client, job_id, pool=None, duplicate=False, location=None, final=None):
        self.client = client
        self.id = job_id
        self.pool = pool
        self.duplicate = duplicate
        self.location = location
        self._path = job_path(client._prefix, job_id)
        self._final = final

    def __repr__(self):
        return "%s(id=%r, pool=%r%s)" % (self._name, self.id, self.pool,
                                         ", duplicate=True" if self.duplicate else "")

    def _poll_plan(self, wait, answer_wait=None):
        """``(method, path, answer wait)`` of one ``GET /v1/jobs/{id}`` waiting up to ``wait``."""
        if answer_wait is None:
            answer_wait = wait + self.client.timeout_margin
        return "GET", poll_path(self._path, wait), answer_wait

    def _take(self, answer):
        """Reads one poll's answer: None when it was the final one (kept), else the job's
        state (a dict); raises for answers that are neither."""
        state = job_state(*answer, self.id)
        if state is None:
            self._final = answer
        return state

    def _summary(self):
        return final_summary(self._final, self.id)


class ResultRounds(object):
    """The long-polls of one ``result(timeout)``: when to poll, how long each waits, when to
    pause, when to give up (``PollClock``).  A transport runs it as::

        rounds = ResultRounds(handle, timeout)
        while not rounds.done:
            if rounds.pause:
                sleep(rounds.pause)
            rounds.answered(send(*rounds.next_poll()))

    ``answered`` keeps the final answer in the handle, or raises ``ClientTimeout`` once
    ``timeout`` has passed (or the answer's exception, for answers that are not about the job).
    """

    def __init__(self, handle, timeout):
        self.handle = handle
        self.pause = 0.0
        self._clock = PollClock(timeout, handle.client.max_poll_wait)
        self._wait = 0.0
        self._started = 0.0

    @property
    def done(self):
        return self.handle._final is not None

    def next_poll(self):
        """``(method, path, answer wait)`` of the next poll, which starts now."""
        self._wait = self._clock.next_wait()
        self._started = time.monotonic()
        return self.handle._poll_plan(self._wait)

    def answered(self, answer):
        if self.handle._take(answer) is None:
            return
        pause = self._clock.after_pending(self._wait, time.monotonic() - self._started)
        if pause is None:
            raise self._clock.timeout_error(self.handle.id)
        self.pause = pause
