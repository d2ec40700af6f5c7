"""Telling waiting web requests that a job has ended, so clients need no polling loop.

With Redis, the process that ends a job publishes its id and a request waiting in
``GET /jobs/{id}?wait=N`` wakes at once. With the embedded defaults (no Redis) the
waiting request re-reads the job row every few tens of milliseconds instead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from django.conf import settings

from ops.redis_client import shared_redis

CHANNEL = "moai:job-ended:{}"
POLL_SECONDS = 0.025


def job_ended(job_id: str) -> None:
    """Publish that a job ended; a lost message only costs a waiter its timeout, never a result."""
    if not settings.REDIS_URL:
        return
    with contextlib.suppress(Exception):
        shared_redis().publish(CHANNEL.format(job_id), b"1")


def wait_for(job_id: str, finished: Callable[[], bool], timeout: float) -> None:
    """Return once ``finished()`` is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    if settings.REDIS_URL:
        try:
            pubsub = shared_redis().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL.format(job_id))
        except Exception:
            pubsub = None
        if pubsub is not None:
            try:
                # Subscribed first, checked second: an end published in between is not missed.
                while not finished() and (left := deadline - time.monotonic()) > 0:
                    pubsub.get_message(timeout=min(left, 1.0))
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
            return
    while not finished() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
