"""Per-client rate limits, counted in the shared cache so they hold across web processes.

Every API view (``REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]``) counts each call of a client
under two limits: ``requests``, every call whatever the endpoint (GETs included, so a client
cannot hold the web tier with cheap requests), and the tighter limit of the view's own scope,
where it has one (``sessions``, ``jobs``). Over either, the answer is 429 ``rate_limited`` with
``Retry-After``.

With Redis, each limit is a sliding window kept in a sorted set, and one script on Redis's
clock checks every limit of a call and counts it in all of them, or in none when one refuses:
one round trip per call, and exact however many web processes and hosts a client's
concurrent requests land on. (DRF's own throttle reads the window from the cache and writes
it back, two round trips per limit, and concurrent requests that read the same window all
pass.) With the embedded defaults (no Redis) DRF's throttle counts each limit in the file
cache, for the one host there is.
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


# Each limit's window: drop the calls older than it, and if the rest fill it, note how long until
# the oldest leaves it. Refused by any limit: answer the longest of those waits and count nothing.
# Else count the call in every window. One script for all of a call's limits: one round trip, and
# atomic in Redis, so two requests cannot both take the last call of a window.
_WINDOWS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local longest = nil
for i, key in ipairs(KEYS) do
  local window, limit = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local wait = window
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #oldest > 0 then
      wait = window - (now - tonumber(oldest[2]))
    end
    if longest == nil or wait > longest then
      longest = wait
    end
  end
end
if longest ~= nil then
  return tostring(longest)
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[#ARGV])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[2 * i - 1])))
end
return false
"""

# Every call of a client counts under this scope, whatever the endpoint.
EVERY_CALL = "requests"


class ClientRateThrottle(SimpleRateThrottle):
    """Every limit of one API client's call: all its calls (``requests``) and, on top, the view's
    own scope (its ``throttle_scope``: ``sessions`` or ``jobs``) where it has one and a rate."""

    def __init__(self) -> None:
        # The scopes, and so the rates, are known only once the view is; see allow_request.
        self.refused_for: float | None = None  # with Redis: seconds until every window has room
        self._refusing: list[SimpleRateThrottle] = []  # without Redis: the scopes that refused

    def allow_request(self, request: Request, view: APIView) -> bool:
        client = request.user
        limits = self._limits(view)
        if not isinstance(client, ApiClient) or not limits:
            return True
        if not settings.REDIS_URL:
            return self._allow_in_cache(request, view, limits)
        keys = [_key(scope, client) for scope, _, _ in limits]
        windows = [number for _, limit, window in limits for number in (window, limit)]
        # Sorted sets under the keys the cache would use, which prefixes its own keys: no clash.
        refused = shared_redis().eval(_WINDOWS, len(keys), *keys, *windows, uuid.uuid4().hex)
        self.refused_for = None if refused is None else float(refused)
        return refused is None

    def wait(self) -> float | None:
        """Seconds until every window that refused has room (Redis), else DRF's estimate."""
        if self.refused_for is not None:
            return self.refused_for
        waits = [wait for throttle in self._refusing if (wait := throttle.wait()) is not None]
        return max(waits, default=None)

    def _limits(self, view: APIView) -> list[tuple[str, int, int]]:
        """(scope, calls, seconds) of each limit that applies to the view and has a rate."""
        scopes = [EVERY_CALL, str(getattr(view, "throttle_scope", "") or "")]
        limits = []
        for scope in dict.fromkeys(filter(None, scopes)):
            calls, seconds = self.parse_rate(self.THROTTLE_RATES.get(scope))
            if calls is not None and seconds is not None:
                limits.append((scope, calls, seconds))
        return limits

    def _allow_in_cache(self, request: Request, view: APIView, limits: list[tuple[str, int, int]]) -> bool:
        """The embedded defaults (one host, no Redis): DRF's throttle per scope, in the file cache."""
        self._refusing = []
        for scope, _, _ in limits:
            throttle = _ScopeThrottle(scope, self.THROTTLE_RATES.get(scope))
            if not throttle.allow_request(request, view):
                self._refusing.append(throttle)
        return not self._refusing


class _ScopeThrottle(SimpleRateThrottle):
    def __init__(self, scope: str, rate: str | None) -> None:
        self.scope = scope
        self.rate = rate
        self.num_requests, self.duration = self.parse_rate(rate)

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        client = request.user
        return _key(self.scope, client) if isinstance(client, ApiClient) else None


def _key(scope: str, client: ApiClient) -> str:
    """A client's window for one limit: the same key in Redis and in the file cache."""
    return f"moai:throttle:{scope}:{client.pk}"
