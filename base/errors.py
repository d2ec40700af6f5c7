"""The one error format of the API: ``{"error": {"code", "message", ...details}}``.

Views raise :class:`ApiError`; DRF's own exceptions (authentication, throttling,
unknown methods) are mapped to the same shape by :func:`api_exception_handler`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponseBase, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error a client caused, with its contract code and optional details."""

    def __init__(self, status_code: int, code: str, message: str, **details: Any) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.retry_after: int | None = None


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


_DRF_CODES: list[tuple[type[exceptions.APIException], int, str]] = [
    (exceptions.NotAuthenticated, status.HTTP_401_UNAUTHORIZED, "unauthenticated"),
    (exceptions.AuthenticationFailed, status.HTTP_401_UNAUTHORIZED, "unauthenticated"),
    (exceptions.Throttled, status.HTTP_429_TOO_MANY_REQUESTS, "rate_limited"),
    (exceptions.MethodNotAllowed, status.HTTP_405_METHOD_NOT_ALLOWED, "method_not_allowed"),
    (exceptions.UnsupportedMediaType, status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    (exceptions.NotAcceptable, status.HTTP_406_NOT_ACCEPTABLE, "not_acceptable"),
    (exceptions.ParseError, status.HTTP_400_BAD_REQUEST, "invalid_request"),
    (exceptions.ValidationError, status.HTTP_400_BAD_REQUEST, "invalid_request"),
    (exceptions.NotFound, status.HTTP_404_NOT_FOUND, "not_found"),
    (exceptions.PermissionDenied, status.HTTP_403_FORBIDDEN, "forbidden"),
]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = _error_response(exc)
    if response is not None:
        request = context.get("request")
        # DRF keeps the authenticated client in ``_user``; reading ``user`` would authenticate again.
        client = getattr(getattr(request, "_user", None), "name", None)
        code = response.data["error"]["code"]
        log_refusal(response, code, request.path if request is not None else "", client)
    return response


def log_refusal(response: HttpResponseBase, code: str, path: str, client: str | None = None) -> None:
    """Log an error response once, with its code, so that the runbook's causes can be found by code.

    Django would log it again as "Not Found: /path" (no code); the mark tells it not to.
    No body, key or ciphertext is logged: only status, code, client name and path.
    """
    fields = {"status": response.status_code, "error_code": code, "client": client, "path": path}
    level = logging.ERROR if response.status_code >= 500 else logging.WARNING
    logger.log(level, f"request refused: {code}", extra=fields)
    response._has_been_logged = True  # type: ignore[attr-defined]


def _error_response(exc: Exception) -> Response | None:
    if isinstance(exc, ApiError):
        response = Response(error_body(exc.code, exc.message, **exc.details), status=exc.status_code)
        if exc.status_code == 401:
            response["WWW-Authenticate"] = 'Bearer realm="moai"'
        if exc.retry_after is not None:
            response["Retry-After"] = str(exc.retry_after)
        return response
    unavailable = _dependency_down(exc)
    if unavailable:
        logger.warning("dependency unavailable", extra={"dependency": unavailable, "error": str(exc)[:200]})
        response = Response(
            error_body(
                "service_unavailable", f"The {unavailable} is unreachable; try again shortly.", dependency=unavailable
            ),
            status=503,
        )
        response["Retry-After"] = "5"
        return response
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "No such resource."), status=404)
    for exc_type, status_code, code in _DRF_CODES:
        if isinstance(exc, exc_type):
            response = Response(error_body(code, _message(exc)), status=status_code)
            wait = getattr(exc, "wait", None)
            if isinstance(exc, exceptions.Throttled) and wait is not None:
                response["Retry-After"] = str(max(1, int(wait + 0.999)))
            if status_code == 401:
                response["WWW-Authenticate"] = 'Bearer realm="moai"'
            return response
    return None


def _dependency_down(exc: Exception) -> str | None:
    """Which backing service an exception says is down: "database", "broker", "blob storage", or None."""
    from django.db import InterfaceError, OperationalError
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from base.blobs import StoreUnavailable

    if isinstance(exc, (OperationalError, InterfaceError)):
        return "database"
    if isinstance(exc, (BrokerError, RedisConnectionError, RedisTimeoutError)):
        return "broker"
    if isinstance(exc, StoreUnavailable):
        return "blob storage"
    return None


def _message(exc: exceptions.APIException) -> str:
    detail = exc.detail
    if isinstance(detail, (list, dict)):
        return str(detail)
    return str(detail)


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    response = JsonResponse(error_body("not_found", "No such resource."), status=404)
    log_refusal(response, "not_found", request.path)
    return response


def json_server_error(request: HttpRequest) -> JsonResponse:
    logger.error("unhandled server error", extra={"path": request.path})
    return JsonResponse(error_body("internal_error", "The service failed; this is a defect."), status=500)


def json_bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("invalid_request", "The request is malformed."), status=400)
