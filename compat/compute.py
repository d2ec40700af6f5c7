"""``compute`` of the example-server protocols: one job, submitted and waited for in one request.

Those clients post a ciphertext and read the result from the same response, so the
request holds one of the client's wait slots and its thread until the job ends (woken by
the worker, jobs.waits), up to COMPUTE_SECONDS.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

from django.http import FileResponse

from base import blobs
from base.audit import Actor
from base.errors import ApiError
from jobs import services, waits
from jobs.models import Job
from jobs.services import JobInputs, SessionEndedError
from sessions.models import KeySession
from sessions.status import HTTP_STATUS_OF_CODE

COMPUTE_SECONDS = 110.0  # under gunicorn's and the proxies' 120 s

# A failed job's code, as the status the old clients see (any status but 200 is an error to them).
_FAILED_STATUS = {
    "invalid_ciphertext": 400,
    "circuit_aborted": 400,
    **HTTP_STATUS_OF_CODE,  # a session that ended under the job, as the API answers it
    "internal_error": 500,
}


def compute(session: KeySession, ciphertext: Path, actor: Actor) -> FileResponse:
    # The slot before the job: this protocol has no way to come back for a result, so a client
    # over its cap of waiting requests is refused before anything runs for it.
    with waits.wait_slot(session.client_id, COMPUTE_SECONDS) as held:
        if not held:
            error = ApiError(429, "rate_limited", "This client already holds as many waiting requests as it may.")
            error.retry_after = 1
            raise error
        try:
            # One input whose client waits for it, as POST .../jobs?wait=N: on an idle service its
            # insert claims it, and its worker runs it without a claim of its own.
            job, _ = services.submit_job(session, JobInputs([ciphertext]), None, actor, claim_if_idle=True)
        except SessionEndedError:
            raise ApiError(410, "context_invalidated", "The session ended while the job was submitted.") from None
        waits.wait_until_ended(job, COMPUTE_SECONDS)
    if job.status not in Job.FINISHED:
        # Nobody will fetch this job's result: a job still queued is cancelled (a running one ends by itself).
        services.cancel_job(job, actor)
        raise ApiError(504, "job_timeout", f"The job did not end within {COMPUTE_SECONDS:g} s.", job_id=str(job.pk))
    if job.status != Job.Status.SUCCEEDED:
        code = job.error_code or str(job.status)
        raise ApiError(
            _FAILED_STATUS.get(code, 503), code, f"The job ended {job.status}: {job.error_message or code}.",
            job_id=str(job.pk),
        )  # fmt: skip
    erased = ApiError(410, "result_erased", "The result was erased when its session ended.", job_id=str(job.pk))
    if job.blobs_erased:
        raise erased
    delivered = waits.delivered_output(job, 0)  # brought by the job's end notice, when small
    stream: IO[bytes]
    if delivered is not None:
        stream, size = io.BytesIO(delivered), len(delivered)
    else:
        try:
            stream, size = blobs.open_read(job.output_name(0))  # one request to an object store, no HEAD first
        except FileNotFoundError:
            raise erased from None
    response = FileResponse(stream, content_type="application/octet-stream")
    response["Content-Length"] = str(size)
    return response
