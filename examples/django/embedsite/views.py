"""The embedding view, done right (examples/django/README.md).

- One ``bulkhead.Client`` per process, made at import: Django's threads share it, its
  keep-alive connections are reused, and a process forked from this one (gunicorn's
  ``--preload``) opens its own.  No connection per request, and no subprocess per request.
- The model lives in the bulkhead worker, loaded once by the pool's ``preload``: this process
  imports neither NumPy nor the model, and a crash in the model cannot take it down.
- A failed job is a typed exception: the view answers the daemon's status for the outcome (502
  for a crash) with its evidence as JSON, and the site keeps serving.
"""

import json
import math

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import bulkhead

CLIENT = bulkhead.Client(settings.BULKHEAD_URL, timeout=settings.BULKHEAD_TIMEOUT)


def failure_evidence(exc):
    last = exc.last_attempt
    return {"outcome": exc.outcome, "detail": exc.detail, "job": exc.job_id,
            "attempts": len(exc.attempts), "signal": last.get("signal"),
            "exit_code": last.get("exit_code"), "stderr_tail": last.get("stderr_tail"),
            "quarantined": exc.quarantined}


@csrf_exempt        # an API for programs, not a form: there is no CSRF token to send
@require_POST
def embed(request):
    try:
        answer = CLIENT.call(settings.BULKHEAD_POOL, request.body)
    except bulkhead.JobFailed as exc:
        response = JsonResponse(failure_evidence(exc), status=exc.status or 502)
        if exc.retry_after:
            response["Retry-After"] = str(math.ceil(exc.retry_after))
        return response
    except bulkhead.TransportError as exc:
        return JsonResponse({"outcome": "unreachable", "detail": str(exc)}, status=503)
    return JsonResponse(json.loads(answer))


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})
