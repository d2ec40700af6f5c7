"""Content-Security-Policy for every response (Django 5.2 has none built in).

The pages this service serves (the admin console and Swagger UI at /api/docs) load
every script, style, image and font from the service itself: the admin's from the
apps, Swagger UI's from drf-spectacular-sidecar, all through WhiteNoise. So pages may
run scripts from this origin only, and nothing else: no inline script, no eval, no
CDN, no plugin, no framing, and forms post back to this origin. Inline styles stay
allowed (the admin's change list and Swagger UI's page carry a small <style> block);
a style cannot run code. Everything else (the JSON API, files) gets a policy that
allows nothing at all, since no browser should ever render it as a page.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        # Swagger UI draws its icons from data: URIs.
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
NOTHING_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            html = response.get("Content-Type", "").startswith("text/html")
            response["Content-Security-Policy"] = PAGE_POLICY if html else NOTHING_POLICY
        return response


class ProxyAddressMiddleware:
    """Behind the service's own proxy (``MOAI_BEHIND_PROXY``), the client's address is the one
    nginx saw, passed in ``X-Real-IP`` (nginx replaces whatever a client sent there); without
    it every audit record and admin lockout would name the proxy. gunicorn then listens on
    loopback only, so nothing but the proxy can set the header. Off otherwise: a client
    talking to gunicorn directly could write any address there."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.enabled = bool(settings.MOAI_BEHIND_PROXY)

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if self.enabled:
            address = request.META.get("HTTP_X_REAL_IP", "").strip()
            if address:
                request.META["REMOTE_ADDR"] = address
        return self.get_response(request)
