"""Finding a client's own session for a request; another client's is answered as unknown."""

from __future__ import annotations

import uuid

from rest_framework.request import Request

from actions import services as actions
from base.audit import Actor
from base.errors import ApiError
from keys.models import ApiClient
from sessions.models import KeySession
from sessions.status import ENDED


def client_actor(request: Request) -> Actor:
    client = request.user
    assert isinstance(client, ApiClient)
    return Actor.client(client.name, request.META.get("REMOTE_ADDR", ""))


def own_session_or_404(request: Request, context_id: str) -> KeySession:
    try:
        parsed = uuid.UUID(context_id)
    except ValueError:
        raise ApiError(404, "context_not_found", "No such context.") from None
    client = request.user
    assert isinstance(client, ApiClient)
    session = KeySession.objects.select_related("model_version", "client").filter(pk=parsed, client=client).first()
    if session is None:
        raise ApiError(404, "context_not_found", "No such context.")
    return actions.ensure_current(session)


def active_session_or_error(request: Request, context_id: str) -> KeySession:
    session = own_session_or_404(request, context_id)
    ended = ENDED.get(session.status)
    if ended is not None:
        raise ApiError(ended.http_status, ended.code, ended.message)
    return session
