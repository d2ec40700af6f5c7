"""REST views of jobs: submit (optionally waiting for the output), read, cancel, fetch a result.
Thin: checks and state changes live in jobs.services."""

from __future__ import annotations

import io
import uuid
from typing import IO

from django.conf import settings
from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.lookup import active_session_or_error, client_actor
from base import blobs
from base.errors import ApiError
from base.schema import BINARY, errors
from jobs import services, waits
from jobs.ciphertexts import received_inputs
from jobs.models import Job
from jobs.representations import job_json
from jobs.serializers import BatchIn, JobOut
from jobs.services import IdempotencyConflict, SessionEndedError
from keys.models import ApiClient


class JobSubmitView(APIView):
    throttle_scope = "jobs"  # on top of the per-client limit of every call (keys.throttling)

    @extend_schema(
        operation_id="submit_job",
        request={"application/octet-stream": BINARY, "multipart/form-data": BatchIn},
        parameters=[
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False),
            OpenApiParameter(
                "wait",
                float,
                description="single input only: hold up to this many seconds (max 30) and answer 200 with the "
                "output bytes if the job ends meanwhile (202 with the job otherwise)",
            ),
        ],
        responses={
            202: JobOut,
            (200, "application/octet-stream"): OpenApiResponse(BINARY),
            **errors(400, 404, 409, 410, 411, 413, 415),
        },
    )
    def post(self, request: Request, context_id: str) -> Response | FileResponse:
        """One input with ``?wait=N``: submit, run and answer with the output in one round trip."""
        session = active_session_or_error(request, context_id)
        key = request.headers.get("Idempotency-Key") or None
        wait = _wait_seconds(request)
        if key is not None and len(key) > 200:
            raise ApiError(400, "invalid_request", "Idempotency-Key is longer than 200 characters.")
        max_inputs, cap = settings.MOAI_MAX_BATCH_INPUTS, settings.MOAI_MAX_CIPHERTEXT_BYTES
        with received_inputs(request._request, session.model_version, max_inputs, cap) as inputs:
            if wait and inputs.count > 1:
                raise ApiError(
                    400,
                    "invalid_request",
                    "wait applies to single-input submissions; for a batch, submit and wait on its results.",
                )
            try:
                job, _created = services.submit_job(
                    session, inputs, key, client_actor(request), claim_if_idle=bool(wait)
                )
            except SessionEndedError:
                raise ApiError(410, "context_invalidated", "The session ended while the job was submitted.") from None
            except IdempotencyConflict as exc:
                raise ApiError(
                    409,
                    "idempotency_key_conflict",
                    "This Idempotency-Key was used for a different body.",
                    job_id=str(exc),
                ) from None
        held = waits.hold_until_ended(job, wait)
        if wait and job.status in Job.FINISHED:
            return _ended_submission(job)
        response = Response(
            job_json(job), status=status.HTTP_202_ACCEPTED, headers={"Location": f"/api/v1/jobs/{job.id}"}
        )
        return _mark_refused_wait(response, held)


def _ended_submission(job: Job) -> FileResponse:
    """The answer to ``POST .../jobs?wait=N`` for a job that ended within the wait: its output, or why not."""
    if job.status != Job.Status.SUCCEEDED:
        error = job.error_code or job.status
        raise ApiError(
            409, "job_failed", f"The job ended {job.status} ({error}); it has no result.", job_id=str(job.id)
        )
    response = _output_response(job, 0)
    response.status_code = status.HTTP_200_OK
    response["Location"] = f"/api/v1/jobs/{job.id}"
    response["X-Moai-Job-Id"] = str(job.id)
    return response


def _output_response(job: Job, index: int) -> FileResponse:
    erased = ApiError(410, "result_erased", "The result was erased when its session ended or retention passed.")
    if job.blobs_erased:
        raise erased
    stream, size = _output(job, index, erased)
    response = FileResponse(stream, content_type="application/octet-stream")
    response["Content-Length"] = str(size)
    response["X-Moai-Output-Index"] = str(index)
    return response


def _output(job: Job, index: int, erased: ApiError) -> tuple[IO[bytes], int]:
    """The output's bytes as the job's end notice brought them to a held request, else as stored."""
    delivered = waits.delivered_output(job, index)
    if delivered is not None:
        return io.BytesIO(delivered), len(delivered)
    try:
        # Read at once, not asked about first: one request to an object store, not two or three.
        return blobs.open_read(job.output_name(index))  # the attempt that succeeded
    except FileNotFoundError:
        raise erased from None


def _job_or_404(request: Request, job_id: str) -> Job:
    client = request.user
    assert isinstance(client, ApiClient)
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise ApiError(404, "job_not_found", "No such job.") from None
    job = Job.objects.select_related("model_version", "session").filter(pk=parsed, client=client).first()
    if job is None:
        raise ApiError(404, "job_not_found", "No such job.")
    return job


class JobDetailView(APIView):
    @extend_schema(
        operation_id="get_job",
        parameters=[OpenApiParameter("wait", float, description="hold up to this many seconds (max 30) for the end")],
        responses={200: JobOut, **errors(400, 404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        """``?wait=N`` (seconds, at most 30) holds the answer until the job ends or N passes."""
        job = _job_or_404(request, job_id)
        held = waits.hold_until_ended(job, _wait_seconds(request))
        return _mark_refused_wait(Response(job_json(job)), held)

    @extend_schema(operation_id="cancel_job", responses={202: JobOut, **errors(404, 409)})
    def delete(self, request: Request, job_id: str) -> Response:
        job = _job_or_404(request, job_id)
        if not services.cancel_job(job, client_actor(request)):
            raise ApiError(409, "job_not_cancellable", f"The job is {job.status}; only queued jobs can be cancelled.")
        return Response(job_json(job), status=status.HTTP_202_ACCEPTED)


class JobResultView(APIView):
    @extend_schema(
        operation_id="get_job_result",
        parameters=[
            OpenApiParameter("index", int, description="which input's output (default 0)"),
            OpenApiParameter("wait", float, description="hold up to this many seconds (max 30) for the job's end"),
        ],
        responses={(200, "application/octet-stream"): OpenApiResponse(BINARY), **errors(400, 404, 409, 410)},
    )
    def get(self, request: Request, job_id: str) -> FileResponse:
        """``?wait=N`` holds the answer until the job ends or N passes: submit, then one request for the result."""
        job = _job_or_404(request, job_id)
        index = _index(request, job)
        held = waits.hold_until_ended(job, _wait_seconds(request))
        if job.status in (Job.Status.QUEUED, Job.Status.RUNNING):
            unfinished = ApiError(
                409, "job_not_finished", f"The job is {job.status}; poll GET /jobs/{{id}} until it ends."
            )
            if held is False:
                unfinished.retry_after = 1
            raise unfinished
        if job.status != Job.Status.SUCCEEDED:
            error = job.error_code or job.status
            raise ApiError(409, "job_failed", f"The job ended {job.status} ({error}); it has no result.")
        return _output_response(job, index)


def _mark_refused_wait(response: Response, held: bool | None) -> Response:
    """A wait refused for the client's cap is answered at once; Retry-After tells it not to spin."""
    if held is False:
        response["Retry-After"] = "1"
    return response


def _wait_seconds(request: Request) -> float:
    return waits.wait_seconds(request.query_params.get("wait"))


def _index(request: Request, job: Job) -> int:
    raw = request.query_params.get("index", "0")
    # str.isdigit also accepts digits int() refuses ("²"): ASCII digits only, and few of them.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or int(raw) >= job.input_count:
        raise ApiError(
            400, "invalid_index", f"index must be an integer from 0 to {job.input_count - 1}.", inputs=job.input_count
        )
    return int(raw)
