"""Per-client rate limits, counted in the shared cache so they hold across web processes.

Two throttles run on every API view (``REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]``):
``ClientRequestThrottle`` counts every call of a client, whatever the endpoint (GETs
included, so a client cannot hold the web tier with cheap requests), and
``ClientRateThrottle`` adds the tighter limit of the view's own scope, where it has one
(``sessions``, ``jobs``). Over either, the answer is 429 ``rate_limited`` with ``Retry-After``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from keys.models import ApiClient

if TYPE_CHECKING:
    from rest_framework.views import APIView


class ClientRateThrottle(SimpleRateThrottle):
    """Limits one API client per view scope (the view's ``throttle_scope``: ``sessions`` or ``jobs``).

    A view without a scope is not limited by this throttle (ClientRequestThrottle still counts it).
    """

    def __init__(self) -> None:
        # The scope, and so the rate, is known only once the view is; see allow_request.
        self.scope = ""

    def scope_of(self, view: APIView) -> str:
        return str(getattr(view, "throttle_scope", "") or "")

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.scope = self.scope_of(view)
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_rate(self) -> str | None:
        return self.THROTTLE_RATES.get(self.scope or "")

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        client = request.user
        if not isinstance(client, ApiClient) or not self.scope:
            return None
        return f"moai:throttle:{self.scope}:{client.pk}"


class ClientRequestThrottle(ClientRateThrottle):
    """Every API call of one client, on any endpoint (``MOAI_RATE_LIMIT_REQUESTS``)."""

    def scope_of(self, view: APIView) -> str:
        return "requests"
