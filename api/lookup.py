"""Finding a client's own session for a request; another client's is answered as unknown."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.views import APIView

from actions import services as actions
from base.audit import Actor
from base.errors import ApiError
from base.statements import Param, Statement, first_together
from keys.authentication import USABLE_KEY, bearer_key, key_prefix, remember_key
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
    read = getattr(request, _READ, None)
    if read is not None and read[0] == parsed:
        # Read with the API key (SessionCallView): another client's is not found, as below.
        session = read[1] if read[1] is not None and read[1].client_id == client.pk else None
    else:
        session = _OWN_SESSION.first(parsed, client.pk)
    if session is None:
        raise ApiError(404, "context_not_found", "No such context.")
    return actions.ensure_current(session)


def _own_session(session_id: uuid.UUID, client_id: int) -> QuerySet[KeySession]:
    # The primary key names one row: no ordering is needed for the first.
    return KeySession.objects.select_related("model_version", "client").filter(pk=session_id, client_id=client_id)


class SessionCallView(APIView):
    """A view whose URL names a session (``context_id``): its API key and its session are read
    in one round trip, before the key is checked (``initial``).

    Every such call read its API key, then its session: two database round trips on every
    job's submission. Nothing else changes: the key is checked by the authentication as if it
    had read it itself, a wrong key is refused whatever the session read found, and the
    session is used only if it is the authenticated client's (:func:`own_session_or_404`).
    """

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        _read_with_api_key(request, kwargs.get("context_id"))
        super().initial(request, *args, **kwargs)


def _read_with_api_key(request: Request, context_id: object) -> None:
    try:
        prefix = key_prefix(bearer_key(request))
        session_id = uuid.UUID(context_id) if isinstance(context_id, str) else None
    except (ApiError, ValueError):
        return  # refused or not found as without this read
    if prefix is None or session_id is None:
        return
    api_key, session = first_together(USABLE_KEY, (prefix,), SESSION, (session_id,))
    remember_key(request, prefix, api_key)
    setattr(request, _READ, (session_id, session))


def _session(session_id: uuid.UUID) -> QuerySet[KeySession]:
    return KeySession.objects.select_related("model_version", "client").filter(pk=session_id)


# Read with the API key of a call naming a session, whoever's it is (SessionCallView).
SESSION = Statement(_session, Param(KeySession._meta.pk, uuid.UUID(int=1)))
_READ = "moai_session_read"


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
