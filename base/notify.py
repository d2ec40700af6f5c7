"""Notices over Redis: a job has ended (to waiting web requests, so clients need no
polling loop); a session opened or a model version was registered (to every pool
process, which gets ready for their jobs ahead of time: jobs.warmup).

With Redis, the process that ends a job publishes its id and a request waiting in
``GET /jobs/{id}?wait=N`` wakes at once. A job that succeeded with small outputs sends
them in the notice too, so that the request answering with them need not read them back
from storage (:func:`job_ended`). With the embedded defaults (no Redis) the waiting request
re-reads the job row every few tens of milliseconds instead, and reads outputs from storage.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.client import PubSub

from base.redis_client import shared_redis, subscriptions_redis

CHANNEL = "moai:job-ended:{}"
# Set as a job's end is announced, for a request that subscribes to the job's channel only after
# that: it reads the job's row once it sees the mark, never before (one query less per held wait).
ENDED_MARK = "moai:job-ended-mark:{}"
# Long past the moment between a request reading a job's row and subscribing to its notices.
ENDED_MARK_SECONDS = 60
WARMUP_CHANNEL = "moai:worker-warmups"  # heard by every pool process (jobs.warmup)
WARMED_KEY = "moai:session-warmed:{}"  # set, and published on, when a process has warmed a session's keys
WARMED_BY = "moai:session-warmed-by:{}"  # the pool processes done warming a session's keys
# The pool processes alive, each scored by when it last said so (jobs.warmup refreshes it).
POOL_PROCESSES = "moai:pool-processes"
PRESENCE_REFRESH_SECONDS = 2.0
# Three refreshes missed: the process is gone (killed, its host lost) and is not waited for.
PRESENCE_SECONDS = 3 * PRESENCE_REFRESH_SECONDS
POLL_SECONDS = 0.025
# A held request re-reads the job at least this often, should its end notice be lost.
RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Outputs:
    """A succeeded job's outputs as its notice carried them: those of attempt ``attempt``, in order."""

    attempt: int
    contents: list[bytes]


def job_ended(job_id: str, outputs: Outputs | None = None) -> None:
    """Publish that a job ended; a lost message only costs a waiter its timeout, never a result.

    ``outputs`` are a copy for the requests waiting: the result is in storage already.
    """
    if not settings.REDIS_URL:
        return
    message = b"1" if outputs is None else _encoded(outputs)
    with contextlib.suppress(Exception):
        # The mark first, the notice second, in one round trip: a request that subscribes after
        # the notice went out finds the mark (wait_for).
        pipe = shared_redis().pipeline(transaction=False)
        pipe.set(ENDED_MARK.format(job_id), b"1", ex=ENDED_MARK_SECONDS)
        pipe.publish(CHANNEL.format(job_id), message)
        pipe.execute()


def _encoded(outputs: Outputs) -> bytes:
    # A JSON line saying how the bytes after it divide, then the outputs themselves: no base64.
    header = {"attempt": outputs.attempt, "sizes": [len(content) for content in outputs.contents]}
    return json.dumps(header).encode() + b"\n" + b"".join(outputs.contents)


def decoded_outputs(message: bytes) -> Outputs | None:
    """The outputs a job-end notice carries; None for a bare notice (b"1") or one that does not add up."""
    header, separator, body = message.partition(b"\n")
    if not separator:
        return None
    try:
        fields = json.loads(header)
        attempt, sizes = int(fields["attempt"]), [int(size) for size in fields["sizes"]]
    except (ValueError, KeyError, TypeError):
        return None
    if sum(sizes) != len(body) or any(size < 0 for size in sizes):
        return None
    contents, start = [], 0
    for size in sizes:
        contents.append(body[start : start + size])
        start += size
    return Outputs(attempt, contents)


def wait_for(
    job_id: str, finished: Callable[[], bool], timeout: float, heard: Callable[[bytes], None] | None = None
) -> None:
    """Return once ``finished()`` is true or ``timeout`` seconds have passed; ``heard`` gets each notice.

    With Redis, ``finished()`` (the caller's read of the job) runs only once a notice came, the
    job's end mark is found, or a second passed without either (should a notice be lost).
    """
    wait_on_channel(CHANNEL.format(job_id), finished, timeout, heard, ENDED_MARK.format(job_id))


def wait_on_channel(
    channel: str,
    finished: Callable[[], bool],
    timeout: float,
    heard: Callable[[bytes], None] | None = None,
    mark: str | None = None,
) -> None:
    """Return once ``finished()`` is true or ``timeout`` seconds have passed, re-checking when ``channel`` speaks.

    ``mark``: a key set before anything is published on ``channel``; while it is absent once
    subscribed, whatever happens later is heard, so ``finished()`` is not asked first.
    """
    deadline = time.monotonic() + timeout
    if settings.REDIS_URL:
        name = channel.encode()
        try:
            pubsub = _subscriber()
            pubsub.subscribe(channel)
            # Redis's reply to the subscription: from then on every notice reaches it, and a look at
            # the mark made after it sees any notice that went out before.
            subscribed = _confirmed(pubsub, name, deadline)
        except Exception:
            _drop_subscriber()
            pubsub = None
        if pubsub is not None:
            try:
                # Subscribed first, checked second: an end published in between is not missed.
                done = (not subscribed or _marked(mark)) and finished()
                checked = time.monotonic()
                while not done and (left := deadline - time.monotonic()) > 0:
                    message = pubsub.get_message(timeout=min(left, RECHECK_SECONDS))
                    if _is_notice(message, name):
                        assert message is not None
                        if heard is not None and isinstance(message.get("data"), bytes):
                            heard(message["data"])
                    elif time.monotonic() - checked < RECHECK_SECONDS and time.monotonic() < deadline:
                        continue  # woken with no notice: read again only every RECHECK_SECONDS, and at the end
                    checked = time.monotonic()
                    done = finished()
            finally:
                _unsubscribe(pubsub, channel)
            return
    while not finished() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)


# Each thread keeps its subscription connection from one wait to the next: opening one per held
# request cost a TCP connect, a SELECT and a disconnect each time. A thread holds one wait at a
# time, so the connection is its own; what an earlier wait left on it (the reply to its
# unsubscription, a notice that crossed it) is told apart by its channel and skipped.
_subscribers = threading.local()


def _subscriber() -> PubSub:
    pubsub: PubSub | None = getattr(_subscribers, "pubsub", None)
    if pubsub is None:
        pubsub = _subscribers.pubsub = subscriptions_redis().pubsub()
    return pubsub


def _drop_subscriber() -> None:
    """Close this thread's subscription connection (it failed): the next wait opens another."""
    pubsub: PubSub | None = getattr(_subscribers, "pubsub", None)
    _subscribers.pubsub = None
    if pubsub is not None:
        with contextlib.suppress(Exception):
            pubsub.close()


def _confirmed(pubsub: PubSub, name: bytes, deadline: float) -> bool:
    """Read until Redis confirms the subscription to ``name`` (skipping an earlier wait's leftovers)."""
    wait_until = min(deadline, time.monotonic() + RECHECK_SECONDS)
    while (left := wait_until - time.monotonic()) > 0:
        reply = pubsub.get_message(timeout=left)
        if reply is not None and reply.get("type") == "subscribe" and reply.get("channel") == name:
            return True
    return False


def _is_notice(message: dict[str, Any] | None, name: bytes) -> bool:
    return message is not None and message.get("type") == "message" and message.get("channel") == name


def _unsubscribe(pubsub: PubSub, channel: str) -> None:
    """End this wait's subscription without waiting for Redis's reply, which the next wait skips."""
    try:
        pubsub.unsubscribe(channel)
    except Exception:
        _drop_subscriber()


def _marked(mark: str | None) -> bool:
    """Whether ``mark`` is set; True when there is none to look at or Redis cannot say (then ask the caller)."""
    if mark is None:
        return True
    try:
        return bool(shared_redis().exists(mark))
    except Exception:
        return True


def announce_session(session_id: str, keys_blob: str = "", model_version_id: int = 0, expires_at: float = 0.0) -> None:
    """Tell every pool process that a session opened, so that they warm its keys.

    With its keys' blob, model version and end (epoch seconds), a process that has the
    version loaded warms the keys without reading the session's row: the opening waits for
    every process's warm-up, and a database connection and query were most of it (10-25 ms
    of a 64-byte key upload's 40).
    """
    notice: dict[str, object] = {"session": session_id}
    if keys_blob and model_version_id:
        notice.update(keys=keys_blob, version=model_version_id, expires=expires_at)
    _publish_warmup(notice)


def announce_model(model_version_id: int) -> None:
    """Tell every pool process that a model version was registered, so that they load it."""
    _publish_warmup({"model_version": model_version_id})


def pool_process_present(process: str) -> None:
    """Say that a pool process is alive (``process``: its host and pid); refreshed every
    PRESENCE_REFRESH_SECONDS, it counts as present for PRESENCE_SECONDS after each."""
    if not settings.REDIS_URL:
        return
    with contextlib.suppress(Exception):
        shared_redis().eval(_PRESENT, 1, POOL_PROCESSES, process, PRESENCE_SECONDS)


# On Redis's clock, so that hosts whose clocks differ agree on who is present; a process long
# silent is dropped from the registry as well as not counted.
_PRESENT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * tonumber(ARGV[2]))
return 1
"""
# Warm somewhere, and done (warm or given up) on at least as many processes as are present.
_WARMED = """
local now = tonumber(redis.call('TIME')[1])
local present = redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[1]), '+inf')
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('SCARD', KEYS[2]) >= present then
  return 1
end
return 0
"""


def pool_process_gone(process: str) -> None:
    if not settings.REDIS_URL:
        return
    with contextlib.suppress(Exception):
        shared_redis().zrem(POOL_PROCESSES, process)


def session_warmed(session_id: str, ttl_seconds: int, process: str, warm: bool = True) -> None:
    """Say that pool process ``process`` is done with a session's keys: warm, or (``warm`` False)
    given up on them; marks that live ``ttl_seconds`` (as long as the session may)."""
    if not settings.REDIS_URL:
        return
    ttl = max(1, ttl_seconds)
    with contextlib.suppress(Exception):
        pipe = shared_redis().pipeline(transaction=False)
        if warm:
            pipe.set(WARMED_KEY.format(session_id), b"1", ex=ttl)
        pipe.sadd(WARMED_BY.format(session_id), process)
        pipe.expire(WARMED_BY.format(session_id), ttl)
        pipe.publish(WARMED_KEY.format(session_id), b"1")
        pipe.execute()


def wait_until_warmed(session_id: str, timeout: float) -> bool:
    """Hold until every present pool process has warmed the session's keys (at least one), or
    ``timeout`` passes; True if one has.

    Every process, not the first: a session's first job goes to whichever process is free, and
    one still warming the keys makes the job wait for its warm-up (seen: first iris-tree jobs of
    210-490 ms against 195 ms warm when only the first warm-up was waited for).
    """
    if not settings.REDIS_URL or timeout <= 0:
        return False
    key = WARMED_KEY.format(session_id)

    def warmed() -> bool:
        try:
            keys = (key, WARMED_BY.format(session_id), POOL_PROCESSES)
            return bool(shared_redis().eval(_WARMED, len(keys), *keys, PRESENCE_SECONDS))
        except Exception:
            return True  # Redis away: stop holding; the first job warms the keys itself

    wait_on_channel(key, warmed, timeout)
    try:
        return bool(shared_redis().exists(key))
    except Exception:
        return False


def _publish_warmup(message: dict[str, object]) -> None:
    if not settings.REDIS_URL:
        return
    # A lost notice costs a first job its warm-up (or a model load until the next poll), nothing else.
    with contextlib.suppress(Exception):
        shared_redis().publish(WARMUP_CHANNEL, json.dumps(message))
