"""Finding a client's own session for a request; another client's is answered as unknown."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet
from rest_framework.request import Request

from actions import services as actions
from base.audit import Actor
from base.errors import ApiError
from base.statements import Param, Statement
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
    session = _OWN_SESSION.first(parsed, client.pk)
    if session is None:
        raise ApiError(404, "context_not_found", "No such context.")
    return actions.ensure_current(session)


def _own_session(session_id: uuid.UUID, client_id: int) -> QuerySet[KeySession]:
    # The primary key names one row: no ordering is needed for the first.
    return KeySession.objects.select_related("model_version", "client").filter(pk=session_id, client_id=client_id)


# Read on every call naming a session: compiled once per thread (base.statements).
_OWN_SESSION = Statement(
    _own_session,
    Param(KeySession._meta.pk, uuid.UUID(int=1)),
    Param(KeySession._meta.get_field("client"), 9_000_000_000_002),
)


def active_session_or_error(request: Request, context_id: str) -> KeySession:
    session = own_session_or_404(request, context_id)
    ended = ENDED.get(session.status)
    if ended is not None:
        raise ApiError(ended.http_status, ended.code, ended.message)
    return session
