"""OpenAPI descriptions shared by the views: authentication, the error body, binary bodies."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class BearerApiKeyScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "keys.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <api key>"}


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorBody(serializers.Serializer):
    error = ErrorDetail()


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error responses of an endpoint, all in the one error shape (plus 401, 403 and 429 everywhere)."""
    return {status: OpenApiResponse(ErrorBody) for status in sorted({*statuses, 401, 403, 429, 503})}


BINARY = OpenApiTypes.BINARY
