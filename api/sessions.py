"""REST views of key sessions: open one (upload its evaluation keys), read it, close it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.lookup import client_actor, own_session_or_404
from base import uploads
from base.errors import ApiError
from base.schema import BINARY, errors
from jobs.ending import end_session
from keys.evaluation_keys import CheckerBusy, KeyCheckError
from keys.models import ApiClient
from registry.services import newest_active
from sessions import services
from sessions.models import KeySession
from sessions.serializers import SessionDetailOut, SessionOut


def session_json(session: KeySession) -> dict[str, Any]:
    return {
        "context_id": str(session.id),
        "model": session.model_version.name,
        "model_version": session.model_version.version,
        "status": session.status,
        "key_fingerprint": session.key_fingerprint,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "ended_at": session.ended_at,
        "ttl_seconds": session.ttl_seconds,
    }


class SessionCreateView(APIView):
    throttle_scope = "sessions"  # on top of the per-client limit of every call (keys.throttling)

    @extend_schema(
        operation_id="open_session",
        request={"application/octet-stream": BINARY},
        responses={201: SessionOut, **errors(400, 404, 411, 413)},
    )
    def post(self, request: Request, name: str) -> Response:
        model = newest_active(name)
        if model is None:
            raise ApiError(404, "model_not_found", f"No active model named {name!r}.")
        client = request.user
        assert isinstance(client, ApiClient)
        actor = client_actor(request)
        with key_check_errors():
            # Refused here, a body is never read: nothing is spooled for keys of the wrong size.
            declared = uploads.declared_length(request._request, settings.MOAI_MAX_KEY_BYTES)
            services.admit_upload(client, model, declared, actor)
            # With object storage the body goes straight to the session's keys object as it is
            # read, and is removed again if the checks refuse it.
            session_id = uuid.uuid4()
            blob = services.keys_blob_name(session_id)
            with uploads.received_body(request._request, model.evaluation_keys_bytes, blob) as upload:
                session = services.open_session(client, model, upload, actor, session_id)
        # The upload already held this thread; the answer may wait (bounded) for warm keys.
        body = {**session_json(session), "keys_warm": services.keys_warm_at_opening(session)}
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": f"/api/v1/sessions/{session.id}"})


@contextlib.contextmanager
def key_check_errors() -> Iterator[None]:
    """The refusals of a session's opening as API errors; compat's example-server protocols answer the same."""
    try:
        yield
    except KeyCheckError as exc:
        raise ApiError(400, exc.code, str(exc), **exc.details) from None
    except services.SessionLimitError as exc:
        error = ApiError(429, "rate_limited", f"{exc}; end one or wait for one to expire.", limit=exc.limit)
        error.retry_after = exc.retry_after
        raise error from None
    except CheckerBusy:
        error = ApiError(503, "server_busy", "Every evaluation-key checker is busy; retry shortly.")
        error.retry_after = 2
        raise error from None


class SessionDetailView(APIView):
    @extend_schema(operation_id="get_session", responses={200: SessionDetailOut, **errors(404)})
    def get(self, request: Request, context_id: str) -> Response:
        session = own_session_or_404(request, context_id)
        body = session_json(session)
        body["jobs"] = [
            {"job_id": str(job_id), "status": job_status, "submitted_at": submitted}
            for job_id, job_status, submitted in session.jobs.order_by("submitted_at").values_list(
                "id", "status", "submitted_at"
            )[:1000]
        ]
        return Response(body)

    @extend_schema(operation_id="close_session", responses={204: None, **errors(404)})
    def delete(self, request: Request, context_id: str) -> Response:
        session = own_session_or_404(request, context_id)
        end_session(session, KeySession.Status.INVALIDATED, client_actor(request), "closed by the client")
        return Response(status=status.HTTP_204_NO_CONTENT)
