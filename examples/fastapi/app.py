"""FastAPI in front of a bulkhead pool (examples/fastapi/README.md).

    bulkhead serve -c examples/fastapi/bulkhead.toml &
    /usr/bin/python3 -m uvicorn app:app --app-dir examples/fastapi --port 8000
    curl -F file=@photo.jpg 127.0.0.1:8000/classify

``POST /classify`` sends the uploaded file to the ``classifier`` pool and answers the model's
JSON.  The model runs in a bulkhead worker, not in this process: when it crashes (the
``CRASH`` upload makes it abort inside glibc), this app answers ``502`` with the outcome's
evidence and goes on serving; the next request finds a fresh worker.

One ``bulkhead.AsyncClient`` serves the app's whole life: it is opened at start-up, shared by
every request (its keep-alive connections are reused) and closed at shutdown.
"""

import json
import math
import os

from fastapi import FastAPI, File, UploadFile
from fastapi.responses import JSONResponse

import bulkhead

POOL = os.environ.get("BULKHEAD_POOL", "classifier")
TIMEOUT_S = float(os.environ.get("BULKHEAD_TIMEOUT", "10"))

app = FastAPI(title="bulkhead FastAPI example")


@app.on_event("startup")
async def open_bulkhead_client():
    # $BULKHEAD_URL, else http://127.0.0.1:8787.  Creating it opens nothing yet.
    app.state.bulkhead = bulkhead.AsyncClient(timeout=TIMEOUT_S)


@app.on_event("shutdown")
async def close_bulkhead_client():
    await app.state.bulkhead.close()


def failure_evidence(exc):
    """What the caller of this API gets when the job failed: the outcome and, for a worker
    that died, how (signal, exit code) and the end of its stderr."""
    last = exc.last_attempt
    return {"outcome": exc.outcome, "detail": exc.detail, "job": exc.job_id,
            "attempts": len(exc.attempts), "signal": last.get("signal"),
            "exit_code": last.get("exit_code"), "stderr_tail": last.get("stderr_tail"),
            "quarantined": exc.quarantined}


@app.post("/classify")
async def classify(file: UploadFile = File(...)):
    data = await file.read()
    try:
        answer = await app.state.bulkhead.call(POOL, data)
    except bulkhead.JobFailed as exc:
        # The daemon's status for the outcome: 502 crashed/oom_killed, 504 timed_out/hung,
        # 422 handler_error/poison, 429/503 overloaded, 503 unavailable.
        headers = {"Retry-After": str(math.ceil(exc.retry_after))} if exc.retry_after else None
        return JSONResponse(failure_evidence(exc), status_code=exc.status or 502,
                            headers=headers)
    except bulkhead.TransportError as exc:
        return JSONResponse({"outcome": "unreachable", "detail": str(exc)}, status_code=503)
    return JSONResponse(json.loads(answer))


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}
