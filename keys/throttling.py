"""Per-client rate limits, counted in the shared cache so they hold across web processes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from keys.models import ApiClient

if TYPE_CHECKING:
    from rest_framework.views import APIView


class ClientRateThrottle(SimpleRateThrottle):
    """Limits one API client per view scope (the view's ``throttle_scope``: ``sessions`` or ``jobs``)."""

    def __init__(self) -> None:
        # The scope, and so the rate, is known only once the view is; see allow_request.
        self.scope = ""

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.scope = str(getattr(view, "throttle_scope", ""))
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_rate(self) -> str | None:
        return self.THROTTLE_RATES.get(self.scope or "")

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        client = request.user
        if not isinstance(client, ApiClient):
            return None
        return f"moai:throttle:{self.scope}:{client.pk}"
