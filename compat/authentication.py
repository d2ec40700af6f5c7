"""The compatibility token in the URL (``/compat/<token>/...``) as the request's credential."""

from __future__ import annotations

from rest_framework import authentication
from rest_framework.request import Request

from base.errors import ApiError
from compat.tokens import client_for
from keys.models import ApiClient


class CompatTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiClient, None]:
        raw = str(request.parser_context.get("kwargs", {}).get("token", ""))
        client = client_for(raw)
        if client is None:
            # The same answer for a token that never existed and one revoked: neither tells anything.
            raise ApiError(401, "unauthenticated", "The compatibility token in the URL is unknown or revoked.")
        if not client.is_active:
            raise ApiError(403, "client_disabled", "This client is disabled; contact the operator.")
        return client, None

    def authenticate_header(self, request: Request) -> str:
        return 'Token realm="moai-compat"'
