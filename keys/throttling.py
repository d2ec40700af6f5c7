"""Per-client rate limits, counted in the shared cache so they hold across web processes.

Two throttles run on every API view (``REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]``):
``ClientRequestThrottle`` counts every call of a client, whatever the endpoint (GETs
included, so a client cannot hold the web tier with cheap requests), and
``ClientRateThrottle`` adds the tighter limit of the view's own scope, where it has one
(``sessions``, ``jobs``). Over either, the answer is 429 ``rate_limited`` with ``Retry-After``.

With Redis, each limit is a sliding window kept in a sorted set and checked and counted by
one script, on Redis's clock: one round trip per limit, and exact however many web
processes and hosts a client's concurrent requests land on. (DRF's own throttle reads the
window from the cache and writes it back, two round trips, and concurrent requests that read
the same window all pass.) With the embedded defaults (no Redis) DRF's throttle counts in
the file cache, for the one host there is.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from base.redis_client import shared_redis
from keys.models import ApiClient

if TYPE_CHECKING:
    from rest_framework.views import APIView


# Drop the calls older than the window, refuse if the rest fill it (answering how long until the
# oldest leaves it), else count this one. Atomic in Redis: two requests cannot both take the last call.
_WINDOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #oldest == 0 then
    return tostring(window)
  end
  return tostring(window - (now - tonumber(oldest[2])))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(window))
return false
"""


class ClientRateThrottle(SimpleRateThrottle):
    """Limits one API client per view scope (the view's ``throttle_scope``: ``sessions`` or ``jobs``).

    A view without a scope is not limited by this throttle (ClientRequestThrottle still counts it).
    """

    def __init__(self) -> None:
        # The scope, and so the rate, is known only once the view is; see allow_request.
        self.scope = ""
        self.refused_for: float | None = None  # with Redis: seconds until the window has room

    def scope_of(self, view: APIView) -> str:
        return str(getattr(view, "throttle_scope", "") or "")

    def allow_request(self, request: Request, view: APIView) -> bool:
        self.scope = self.scope_of(view)
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if not settings.REDIS_URL or self.num_requests is None or self.duration is None:
            return super().allow_request(request, view)
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        window, limit = self.duration, self.num_requests
        # A sorted set under the key the cache would use, which prefixes its own keys: no clash.
        refused = shared_redis().eval(_WINDOW, 1, key, window, limit, uuid.uuid4().hex)
        self.refused_for = None if refused is None else float(refused)
        return refused is None

    def wait(self) -> float | None:
        """Seconds until the oldest call counted leaves the window (Redis), else DRF's estimate."""
        if self.refused_for is not None:
            return self.refused_for
        return super().wait()

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
