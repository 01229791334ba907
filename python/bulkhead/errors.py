"""Exceptions raised by the bulkhead client: one class per job outcome (docs/api.md).

Every job that does not end ``ok`` comes back as ``application/problem+json`` carrying its
``outcome`` and the evidence of every attempt; ``error_from_problem`` maps that document to the
exception class for the outcome (``OUTCOME_EXCEPTIONS``; an outcome this version does not know
becomes a plain ``JobFailed``).  Errors that are not job outcomes (unknown pool, bad request, ...)
are ``ApiError`` and its subclasses.  Transport failures (cannot connect, connection lost, client
side timeout) are ``TransportError``.

A job that crashed (hung, was OOM-killed, ...) on ``poison_after`` workers raises the class of
its own outcome with ``quarantined`` True; only a later submission of the same payload, refused
without running, raises ``Poisoned``.  ``JobTimedOut.stage`` says whether the deadline passed
while the job was ``"queued"`` or ``"running"``.

This module imports nothing, so ``import bulkhead`` stays cheap in worker processes.
"""

__all__ = [
    "BulkheadError", "JobFailed", "HandlerError", "WorkerCrashed", "JobTimedOut", "WorkerHung",
    "OomKilled", "ResourceExhausted", "Poisoned", "Overloaded", "Unavailable", "Cancelled",
    "ApiError", "UnknownPool", "UnknownJob", "BadRequest", "PayloadTooLarge", "TransportError",
    "ClientTimeout", "ResponseTooLarge", "OUTCOME_EXCEPTIONS", "error_from_problem",
]

_STDERR_LINES = 5      # lines of stderr_tail shown by str(JobFailed)
_TRACEBACK_LINES = 3   # lines of a remote traceback's end shown by str(HandlerError)


class BulkheadError(Exception):
    """Base class of every exception this package raises."""


def _as_problem(problem):
    if problem is None:
        return {}
    if isinstance(problem, dict):
        return problem
    return {"detail": str(problem)}


def _int_or_none(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _last_lines(text, count):
    lines = [line for line in str(text).rstrip("\n").split("\n")]
    if len(lines) > count:
        return ["..."] + lines[-count:]
    return lines


class JobFailed(BulkheadError):
    """A job ended with an outcome other than ``ok``.

    ``problem`` is the whole problem+json document (a dict), ``status`` the HTTP status,
    ``retry_after`` the ``Retry-After`` header in seconds (or None).  Attributes: ``outcome``,
    ``attempts`` (list of dicts, one per attempt, oldest first), ``detail``, ``job_id``, ``pool``,
    ``timings``, ``problem``, ``status``, ``retry_after``, ``quarantined`` (True when this job's
    failures got its payload quarantined: resubmitting it is refused as ``poison``), and with
    ``[cluster]`` ``node`` (the node that ran it) and ``runs`` (times the cluster handed it to a
    node; None otherwise).
    """

    outcome_name = None  # the outcome this class stands for
    _quarantined_default = False  # when the problem does not say

    def __init__(self, problem=None, status=None, retry_after=None):
        problem = _as_problem(problem)
        super().__init__(problem, status, retry_after)
        self.problem = problem
        self.outcome = problem.get("outcome") or self.outcome_name
        attempts = problem.get("attempts")
        self.attempts = [a for a in attempts if isinstance(a, dict)] \
            if isinstance(attempts, list) else []
        self.status = status if status is not None else _int_or_none(problem.get("status"))
        self.retry_after = retry_after
        self.detail = problem.get("detail") or problem.get("title") or ""
        self.job_id = problem.get("job")
        self.pool = problem.get("pool")
        timings = problem.get("timings")
        self.timings = timings if isinstance(timings, dict) else {}
        quarantined = problem.get("quarantined")
        self.quarantined = (quarantined if isinstance(quarantined, bool)
                            else self._quarantined_default)
        node = problem.get("node")
        self.node = node if isinstance(node, str) else None
        self.runs = _int_or_none(problem.get("runs"))

    @property
    def last_attempt(self):
        """The last attempt's evidence (a dict), or an empty dict."""
        return self.attempts[-1] if self.attempts else {}

    def _summary_lines(self):
        """Extra lines for __str__; subclasses add their own evidence."""
        lines = []
        last = self.last_attempt
        if last:
            facts = []
            if last.get("worker"):
                facts.append("worker %s" % last["worker"])
            if last.get("pid") is not None:
                facts.append("pid %s" % last["pid"])
            if last.get("signal"):
                number = last.get("signal_number")
                facts.append("signal %s%s" % (last["signal"],
                                              " (%s)" % number if number is not None else ""))
            if last.get("exit_code") is not None:
                facts.append("exit code %s" % last["exit_code"])
            if last.get("core_dumped"):
                facts.append("core dumped")
            if last.get("cause"):
                facts.append("cause: %s" % last["cause"])
            count = len(self.attempts)
            lines.append("last of %d attempt%s: %s" % (count, "" if count == 1 else "s",
                                                       ", ".join(facts) or "no details"))
            tail = last.get("stderr_tail")
            if tail:
                lines.append("stderr tail:")
                lines.extend("    " + line for line in _last_lines(tail, _STDERR_LINES))
        if self.quarantined:
            lines.append("payload quarantined: resubmitting it is refused as poison")
        if self.retry_after is not None:
            lines.append("retry after %g s" % self.retry_after)
        return lines

    def __str__(self):
        head = self.outcome or "failed"
        if self.status is not None:
            head += " (HTTP %s)" % self.status
        if self.detail:
            head += ": %s" % self.detail
        where = []
        if self.job_id is not None:
            where.append("job %s" % self.job_id)
        if self.pool is not None:
            where.append("pool %s" % self.pool)
        lines = [head]
        if where:
            lines.append(" in ".join(where))
        lines.extend(self._summary_lines())
        return "\n  ".join(lines)

    def __repr__(self):
        return "%s(outcome=%r, status=%r, detail=%r)" % (
            type(self).__name__, self.outcome, self.status, self.detail)


class HandlerError(JobFailed):
    """The handler raised (never retried).  ``error_type``, ``error_message`` and
    ``remote_traceback`` come from the last attempt's ``error`` object."""

    outcome_name = "handler_error"

    def __init__(self, problem=None, status=None, retry_after=None):
        super().__init__(problem, status, retry_after)
        error = self.last_attempt.get("error")
        if not isinstance(error, dict):
            error = self.problem.get("error")
            error = error if isinstance(error, dict) else {}
        self.error_type = error.get("type")
        self.error_message = error.get("message")
        self.remote_traceback = error.get("traceback")

    def _summary_lines(self):
        lines = []
        if self.error_type or self.error_message:
            lines.append("%s: %s" % (self.error_type or "error", self.error_message or ""))
        if self.remote_traceback:
            lines.append("remote traceback (end):")
            lines.extend("    " + line for line in
                         _last_lines(self.remote_traceback, _TRACEBACK_LINES))
        return lines + super()._summary_lines()


class WorkerCrashed(JobFailed):
    """The worker died mid-job (signal or exit), or broke the protocol."""
    outcome_name = "crashed"


class JobTimedOut(JobFailed):
    """The job's deadline passed.  ``stage`` says where it was then: ``"running"`` (the stacks
    of every thread were captured before the kill), ``"queued"`` (it never ran: no worker was
    free within the caller's ``X-Bulkhead-Deadline``), or None when the daemon does not say."""

    outcome_name = "timed_out"

    def __init__(self, problem=None, status=None, retry_after=None):
        super().__init__(problem, status, retry_after)
        stage = self.problem.get("stage")
        self.stage = stage if isinstance(stage, str) and stage else None

    def _summary_lines(self):
        lines = ["stage: %s" % self.stage] if self.stage else []
        return lines + super()._summary_lines()


class WorkerHung(JobFailed):
    """The worker stopped making progress; stacks were captured before the kill."""
    outcome_name = "hung"


class OomKilled(JobFailed):
    """The kernel killed the worker at its memory limit."""
    outcome_name = "oom_killed"


class ResourceExhausted(JobFailed):
    """A hard limit other than memory (pids, fds) failed the worker."""
    outcome_name = "resource_exhausted"


class Poisoned(JobFailed):
    """Refused without running: this payload crashed ``poison_after`` different workers before
    and is quarantined (``attempts`` are that earlier job's evidence).  The job that crashed them
    ended with its own outcome (``WorkerCrashed``, ...) and ``quarantined`` True."""
    outcome_name = "poison"
    _quarantined_default = True   # a poison refusal is one because the payload is quarantined


class Overloaded(JobFailed):
    """The queue was full (429), or no worker became free in time (503).  See ``retry_after``.
    (A job whose own ``X-Bulkhead-Deadline`` passed in the queue is ``JobTimedOut`` instead.)"""
    outcome_name = "overloaded"


class Unavailable(JobFailed):
    """No worker of the pool can start, or the daemon is shutting down.  See ``retry_after``."""
    outcome_name = "unavailable"


class Cancelled(JobFailed):
    """The job was cancelled."""
    outcome_name = "cancelled"


OUTCOME_EXCEPTIONS = {
    cls.outcome_name: cls
    for cls in (HandlerError, WorkerCrashed, JobTimedOut, WorkerHung, OomKilled,
                ResourceExhausted, Poisoned, Overloaded, Unavailable, Cancelled)
}


class ApiError(BulkheadError):
    """The API refused the request (not a job outcome).  ``status``, ``problem``, ``error``
    (the problem's ``error`` kind, e.g. ``"not_found"``), ``detail``."""

    def __init__(self, problem=None, status=None, retry_after=None):
        problem = _as_problem(problem)
        super().__init__(problem, status, retry_after)
        self.problem = problem
        self.status = status if status is not None else _int_or_none(problem.get("status"))
        self.retry_after = retry_after
        error = problem.get("error")
        self.error = error if isinstance(error, str) else None
        self.detail = problem.get("detail") or problem.get("title") or ""

    def __str__(self):
        head = "HTTP %s" % (self.status if self.status is not None else "?")
        if self.error:
            head += " %s" % self.error
        return head + (": %s" % self.detail if self.detail else "")

    def __repr__(self):
        return "%s(status=%r, error=%r, detail=%r)" % (
            type(self).__name__, self.status, self.error, self.detail)


class UnknownPool(ApiError):
    """404 ``unknown_pool``: no pool of that name."""


class UnknownJob(ApiError):
    """404 ``unknown_job``: no job with that id in the journal (or no journal)."""


class BadRequest(ApiError):
    """The request was refused as malformed: 400 (e.g. a bad timeout), 405, 411, 413 (see
    ``PayloadTooLarge``), ..."""


class PayloadTooLarge(BadRequest):
    """413 ``payload_too_large``: the payload is larger than the daemon accepts (``[server]
    max_request_body``, or the pool's ``max_payload``); nothing ran."""


class TransportError(BulkheadError):
    """Talking to the daemon failed (cannot connect, connection lost, client-side timeout).

    ``job_may_have_run`` is True when the request was completely sent before the failure: the
    daemon may have run (or still be running) the job, so the client did not resend it.
    """

    def __init__(self, message, job_may_have_run=False):
        super().__init__(message, job_may_have_run)
        self.message = message
        self.job_may_have_run = job_may_have_run

    def __str__(self):
        return self.message


class ClientTimeout(TransportError):
    """No response within the client's socket timeout (the job's timeout plus a margin)."""


class ResponseTooLarge(TransportError):
    """The daemon's answer has a body larger than the client accepts (``max_response_body`` of
    ``Client`` and ``AsyncClient``); it was not read, and its connection was closed.  ``limit``:
    that bound."""

    def __init__(self, message, job_may_have_run=False, limit=None):
        TransportError.__init__(self, message, job_may_have_run)
        self.args = (message, job_may_have_run, limit)
        self.limit = limit


_BAD_REQUEST_STATUSES = frozenset((400, 405, 411, 413, 414, 415, 431))
_BAD_REQUEST_KINDS = frozenset(("bad_request", "method_not_allowed", "length_required",
                                "payload_too_large"))


def error_from_problem(status, problem, retry_after=None):
    """The exception for a non-200 response whose body parsed to ``problem`` (a dict)."""
    problem = _as_problem(problem)
    outcome = problem.get("outcome")
    if isinstance(outcome, str) and outcome:
        return OUTCOME_EXCEPTIONS.get(outcome, JobFailed)(problem, status, retry_after)
    kind = problem.get("error")
    if kind == "unknown_pool":
        return UnknownPool(problem, status, retry_after)
    if kind == "unknown_job":
        return UnknownJob(problem, status, retry_after)
    if kind == "payload_too_large" or status == 413:
        return PayloadTooLarge(problem, status, retry_after)
    if kind in _BAD_REQUEST_KINDS or status in _BAD_REQUEST_STATUSES:
        return BadRequest(problem, status, retry_after)
    return ApiError(problem, status, retry_after)
