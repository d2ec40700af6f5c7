"""One Redis client per process for the service's own small uses (job-end notices, the
metrics lease). Its connection pool reconnects by itself, also after a fork."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def shared_redis() -> redis.Redis:
    return redis.Redis.from_url(str(settings.REDIS_URL), socket_timeout=5, socket_connect_timeout=2)
