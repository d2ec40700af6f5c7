"""The service's Redis clients, all made here: one per process for its small uses (job-end
notices, the metrics lease, recovery's look at the queue), and short-lived ones for probes.
A client's connection pool reconnects by itself, also after a fork."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


def connect(socket_timeout: float = 5.0) -> redis.Redis:
    """A new client of ``settings.REDIS_URL`` (the broker's Redis)."""
    return redis.Redis.from_url(str(settings.REDIS_URL), socket_timeout=socket_timeout, socket_connect_timeout=2)


@functools.cache
def shared_redis() -> redis.Redis:
    return connect()
