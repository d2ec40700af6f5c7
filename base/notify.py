"""Notices over Redis: a job has ended (to waiting web requests, so clients need no
polling loop); a session opened or a model version was registered (to every pool
process, which gets ready for their jobs ahead of time: jobs.warmup).

With Redis, the process that ends a job publishes its id and a request waiting in
``GET /jobs/{id}?wait=N`` wakes at once. With the embedded defaults (no Redis) the
waiting request re-reads the job row every few tens of milliseconds instead.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

from django.conf import settings

from base.redis_client import shared_redis

CHANNEL = "moai:job-ended:{}"
WARMUP_CHANNEL = "moai:worker-warmups"  # heard by every pool process (jobs.warmup)
WARMED_KEY = "moai:session-warmed:{}"  # set, and published on, when a process has warmed a session's keys
POLL_SECONDS = 0.025


def job_ended(job_id: str) -> None:
    """Publish that a job ended; a lost message only costs a waiter its timeout, never a result."""
    if not settings.REDIS_URL:
        return
    with contextlib.suppress(Exception):
        shared_redis().publish(CHANNEL.format(job_id), b"1")


def wait_for(job_id: str, finished: Callable[[], bool], timeout: float) -> None:
    """Return once ``finished()`` is true or ``timeout`` seconds have passed."""
    wait_on_channel(CHANNEL.format(job_id), finished, timeout)


def wait_on_channel(channel: str, finished: Callable[[], bool], timeout: float) -> None:
    """Return once ``finished()`` is true or ``timeout`` seconds have passed, re-checking when ``channel`` speaks."""
    deadline = time.monotonic() + timeout
    if settings.REDIS_URL:
        try:
            pubsub = shared_redis().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel)
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


def announce_session(session_id: str) -> None:
    """Tell every pool process that a session opened, so that they warm its keys."""
    _publish_warmup({"session": session_id})


def announce_model(model_version_id: int) -> None:
    """Tell every pool process that a model version was registered, so that they load it."""
    _publish_warmup({"model_version": model_version_id})


def session_warmed(session_id: str, ttl_seconds: int) -> None:
    """Say that a pool process holds a session's keys warm (a mark that lives as long as the session may)."""
    if not settings.REDIS_URL:
        return
    with contextlib.suppress(Exception):
        shared_redis().set(WARMED_KEY.format(session_id), b"1", ex=max(1, ttl_seconds))
        shared_redis().publish(WARMED_KEY.format(session_id), b"1")


def wait_until_warmed(session_id: str, timeout: float) -> bool:
    """Hold until a pool process has warmed the session's keys, or ``timeout`` passes; True if one has."""
    if not settings.REDIS_URL or timeout <= 0:
        return False
    key = WARMED_KEY.format(session_id)

    def warmed() -> bool:
        try:
            return bool(shared_redis().exists(key))
        except Exception:
            return True  # Redis away: stop holding; the first job warms the keys itself

    wait_on_channel(key, warmed, timeout)
    return warmed()


def _publish_warmup(message: dict[str, object]) -> None:
    if not settings.REDIS_URL:
        return
    # A lost notice costs a first job its warm-up (or a model load until the next poll), nothing else.
    with contextlib.suppress(Exception):
        shared_redis().publish(WARMUP_CHANNEL, json.dumps(message))
