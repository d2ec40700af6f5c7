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
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, raw_key = header.partition(" ")
        if scheme != self.keyword or not raw_key.strip():
            raise ApiError(401, "unauthenticated", "Send 'Authorization: Bearer <api key>'.")
        api_key = _find_key(raw_key.strip())
        if api_key is None:
            raise ApiError(401, "unauthenticated", "The API key is unknown, revoked or expired.")
        if not api_key.client.is_active:
            raise ApiError(403, "client_disabled", "This client is disabled; contact the operator.")
        return api_key.client, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="moai"'


def _find_key(raw_key: str) -> ClientApiKey | None:
    # Keys are "<prefix>.<secret>"; anything else cannot be one of ours.
    if "." not in raw_key or len(raw_key) > 200:
        return None
    prefix, _, _ = raw_key.partition(".")
    # The library's get_from_key, with the client fetched in the same query: every
    # request pays this lookup, so one round trip less matters.
    api_key = _USABLE_KEY.first(prefix)
    if api_key is None or not api_key.is_valid(raw_key):
        return None
    return None if api_key.has_expired else api_key


def _usable_key(prefix: str) -> QuerySet[ClientApiKey]:
    # Prefixes are unique: at most one row, so no ordering is needed for the first.
    return ClientApiKey.objects.get_usable_keys().select_related("client").filter(prefix=prefix)


# Read on every request: compiled once per thread (base.statements).
_USABLE_KEY = Statement(_usable_key, Param(ClientApiKey._meta.get_field("prefix"), "moai-statement-sample"))


class IsApiClient(permissions.BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.user, ApiClient)

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        return getattr(obj, "client_id", None) == getattr(request.user, "pk", None)
