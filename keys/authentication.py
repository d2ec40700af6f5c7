"""``Authorization: Bearer <api key>`` authentication for the REST API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet
from rest_framework import authentication, permissions
from rest_framework.request import Request

from base.errors import ApiError
from base.statements import Param, Statement
from keys.models import ApiClient, ClientApiKey

if TYPE_CHECKING:
    from rest_framework.views import APIView


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiClient, ClientApiKey] | None:
        raw_key = bearer_key(request)
        prefix = key_prefix(raw_key)
        if prefix is None:
            return accepted(raw_key, None)
        read = getattr(request, _READ, None)
        return accepted(raw_key, read[1] if read is not None and read[0] == prefix else USABLE_KEY.first(prefix))

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="moai"'


_READ = "moai_api_key_read"


def remember_key(request: Request, prefix: str, api_key: ClientApiKey | None) -> None:
    """The usable key row of ``prefix`` (``USABLE_KEY``), read by the view with what it needs next
    (a call naming a session reads both in one round trip: api.lookup); checked here as if read here."""
    setattr(request, _READ, (prefix, api_key))


def bearer_key(request: Request) -> str:
    """The API key of ``Authorization: Bearer <api key>``; 401 without one."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, raw_key = header.partition(" ")
    if scheme != ApiKeyAuthentication.keyword or not raw_key.strip():
        raise ApiError(401, "unauthenticated", "Send 'Authorization: Bearer <api key>'.")
    return raw_key.strip()


def key_prefix(raw_key: str) -> str | None:
    """The prefix to look the key up by; None for what cannot be one of ours ("<prefix>.<secret>")."""
    if "." not in raw_key or len(raw_key) > 200:
        return None
    return raw_key.partition(".")[0]


def accepted(raw_key: str, api_key: ClientApiKey | None) -> tuple[ApiClient, ClientApiKey]:
    """The client and key that ``raw_key`` authenticates, given the usable key row of its prefix
    (``USABLE_KEY``, the client read with it); 401 for a wrong, revoked or expired key, 403
    for a disabled client."""
    if api_key is None or not api_key.is_valid(raw_key) or api_key.has_expired:
        raise ApiError(401, "unauthenticated", "The API key is unknown, revoked or expired.")
    if not api_key.client.is_active:
        raise ApiError(403, "client_disabled", "This client is disabled; contact the operator.")
    return api_key.client, api_key


def _usable_key(prefix: str) -> QuerySet[ClientApiKey]:
    # The library's get_from_key, with the client fetched in the same query: every request pays
    # this lookup. Prefixes are unique: at most one row, so no ordering is needed for the first.
    return ClientApiKey.objects.get_usable_keys().select_related("client").filter(prefix=prefix)


# Read on every request: compiled once per thread (base.statements).
USABLE_KEY = Statement(_usable_key, Param(ClientApiKey._meta.get_field("prefix"), "moai-statement-sample"))


class IsApiClient(permissions.BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.user, ApiClient)

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        return getattr(obj, "client_id", None) == getattr(request.user, "pk", None)
