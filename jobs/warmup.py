"""Making a pool process ready before a job needs it: circuits loaded, session keys warm.

Loading a model's ``server.zip`` compiles its circuit, and the first run with freshly
deserialized evaluation keys decompresses them (1.2 s for the iris tree's 34 MB keys,
where a warm run takes 0.13 s). Neither should fall on a user's job. So each pool
process, from its start:

- loads every active model version's circuit, and again whenever a version is
  registered (a notice on Redis; a poll every ``MOAI_MODEL_PRELOAD_SECONDS`` catches
  a lost notice and serves the embedded defaults, which have no Redis);
- warms every new session's keys when it opens (a notice on Redis): it deserializes
  them and runs the model's warm-up input through the circuit once with them,
  discarding the output. The warm-up input is a ciphertext of zeros made at
  registration under a throwaway key that was deleted at once: a circuit does not
  check which key encrypted its input, and a run with this session's evaluation keys
  decompresses them all the same. Nobody can decrypt its output, and nobody reads it.
  That run is made only where it costs less than the first use it moves off the first
  job (``ModelVersion.warms_keys_ahead``, measured at registration): a long circuit's
  keys are only deserialized ahead.

Every pool process warms every session, so a session's first job finds warm keys
wherever it runs; the key cache's bound (``MOAI_KEY_CACHE_BYTES``) still applies, least
recently used first out. A job that arrives while its session's warm-up runs waits for
it rather than decompressing a second copy (``runtime.KeyCache``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from base import blobs, notify
from base.redis_client import subscriptions_redis
from jobs import cores, runtime
from registry.models import ModelVersion
from sessions.models import KeySession

logger = logging.getLogger(__name__)


def load_active_models() -> int:
    """Load the circuit of every active model version not loaded yet; returns how many were loaded."""
    loaded = 0
    for model in ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE):
        if model.pk not in runtime.models:
            loaded_model = runtime.models.get(model)
            try:
                _warm_constant_keys(model, loaded_model)
            except Exception:  # a lost blob: this version's sessions warm their own keys, as before
                logger.exception("constant keys not warmed", extra={"model": model.name})
            loaded += 1
    if loaded:
        logger.info("models loaded ahead of jobs", extra={"models": loaded})
    return loaded


def _warm_constant_keys(version: ModelVersion, model: runtime.LoadedModel) -> None:
    """Hold a constant-key version's keys warm: deserialized, and run once with its warm-up
    input, which also pays the circuit's first run in this process (15-40 ms more than the
    next ones on logreg) before any session needs it."""
    if not version.constant_keys or not version.warmup_input:
        return
    from concrete import fhe

    keys = fhe.EvaluationKeys.deserialize(blobs.read_bytes(version.constant_keys))
    model.run(_warmup_input(version), keys)
    model.constant_keys = keys


def _warmup_input(version: ModelVersion) -> bytes:
    if version.pk not in _warmup_inputs:
        _warmup_inputs[version.pk] = blobs.read_bytes(version.warmup_input)
    return _warmup_inputs[version.pk]


_warmup_inputs: dict[int, bytes] = {}
# Long enough for any opening still waiting on this process to hear that it gave up.
GAVE_UP_MARK_SECONDS = 3600


def process_name() -> str:
    """This pool process, as the warm-up marks and the presence registry name it (read when
    called: pool processes are forked from a parent that imported this module)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def warm_session(session_id: str, notice: dict[str, Any] | None = None) -> bool:
    """Deserialize a session's keys and run its model's warm-up input with them (where that run
    costs less than the first use it saves); False when there is nothing to warm (ended
    session, a model registered without a warm-up input).
    ``notice`` is the opening's (notify.announce_session): what it says of the session
    spares a database read.

    Either way, or when it fails, the process says it is done: a session's opening waits for
    every present process (notify.wait_until_warmed), and must not wait for one that gave up.
    """
    done: tuple[int, bool] | None = None
    try:
        done = _warm_session(session_id, notice or {})
    finally:
        if done is None:
            notify.session_warmed(session_id, GAVE_UP_MARK_SECONDS, process_name(), warm=False)
        else:
            notify.session_warmed(session_id, done[0], process_name(), warm=done[1])
    return done is not None


def _warm_session(session_id: str, notice: dict[str, Any]) -> tuple[int, bool] | None:
    """The session's seconds left once its keys are ready here, and whether they are warm (not
    only deserialized: ModelVersion.warms_keys_ahead); None when there is nothing to warm."""
    announced = _announced(notice)
    if announced is not None:
        # Sent once the opening committed, so the session was active a moment ago; should it
        # end meanwhile, its jobs are refused (jobs.tasks) and the worker's sweep drops its keys.
        keys_blob, version, expires_at = announced
    else:
        session = (
            KeySession.objects.select_related("model_version")
            .filter(pk=session_id, status=KeySession.Status.ACTIVE)
            .first()
        )
        if session is None or not session.keys_blob:
            return None
        keys_blob, version, expires_at = session.keys_blob, session.model_version, session.expires_at.timestamp()
    if not version.warmup_input:
        return None
    left = int(expires_at - time.time())
    if not version.warms_keys_ahead:
        # A run here would cost more than the first use it saves, and the first job would wait
        # for it: the keys are only deserialized, and that job decompresses them.
        runtime.keys.get(session_id, keys_blob)
        logger.info("session keys loaded", extra={"context_id": session_id, "model": version.name})
        return left, False
    model = runtime.models.get(version)
    warmup = _warmup_input(version)
    # The session's first job waits for this run: it takes the cores no job is using.
    cores.set_openmp_threads(cores.share_now())
    runtime.keys.get(session_id, keys_blob, warm=lambda keys: model.run(warmup, keys))
    logger.info("session keys warmed", extra={"context_id": session_id, "model": version.name})
    return left, True


def _announced(notice: dict[str, Any]) -> tuple[str, ModelVersion, float] | None:
    """The keys' blob, model version and end (epoch seconds) an opening's notice gives, where
    this process has the version loaded; None sends the warm-up to the session's row."""
    keys_blob, version_id, expires_at = notice.get("keys"), notice.get("version"), notice.get("expires")
    if not isinstance(keys_blob, str) or not keys_blob or not isinstance(expires_at, int | float):
        return None
    version = runtime.models.loaded_version(version_id) if isinstance(version_id, int) else None
    return None if version is None else (keys_blob, version, float(expires_at))


# When this process had first loaded the active circuits (time.time()), for its status file.
models_loaded_at: float | None = None


def run(stop: threading.Event, loaded: Callable[[], None] | None = None) -> None:
    """The warm-up loop of one pool process, until ``stop`` is set; ``loaded`` is called after the first load."""
    global models_loaded_at
    notify.pool_process_present(process_name())
    # Subscribed before the load: a session that opens while the circuits load (seconds, after
    # every worker start) is warmed once the load ends. Heard only after the load, its notice
    # was lost, and its opening waited its whole MOAI_SESSION_WARMUP_WAIT_SECONDS for this
    # process (seen: 15 s on a fresh stack).
    pubsub = _subscribe()
    if _round(load_active_models):
        models_loaded_at = time.time()
        if loaded is not None:
            _round(loaded)
    polled = time.monotonic()
    try:
        while not stop.is_set():
            message = _next_message(pubsub, stop)
            notify.pool_process_present(process_name())
            if message is None:
                if time.monotonic() - polled >= settings.MOAI_MODEL_PRELOAD_SECONDS:
                    _round(load_active_models)  # the poll: a lost notice, or no Redis
                    polled = time.monotonic()
            elif "session" in message:
                _round(warm_session, str(message["session"]), message)
            elif "model_version" in message:
                _round(load_active_models)
    finally:
        notify.pool_process_gone(process_name())


def _round(action: Any, *args: Any) -> bool:
    """Run one round of the loop; False when it failed (and was logged)."""
    try:
        close_old_connections()
        action(*args)
    except Exception:  # a database blip or a bad blob must not end the loop: jobs load what they need
        logger.exception("warm-up round failed")
        return False
    finally:
        connection.close()  # this thread keeps no connection between rounds
    return True


def _subscribe() -> Any:
    if not settings.REDIS_URL:
        return None
    try:
        pubsub = subscriptions_redis().pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(notify.WARMUP_CHANNEL)
        return pubsub
    except Exception:
        logger.warning("warm-up notices unavailable; models are polled, sessions warm on their first job")
        return None


def _next_message(pubsub: Any, stop: threading.Event) -> dict[str, Any] | None:
    """The next notice, or None once a while has passed without one (the poll interval, or
    less: the process's presence is refreshed in between)."""
    interval = min(settings.MOAI_MODEL_PRELOAD_SECONDS, notify.PRESENCE_REFRESH_SECONDS)
    if pubsub is None:
        stop.wait(interval)
        return None
    try:
        raw = pubsub.get_message(timeout=interval)
    except Exception:
        stop.wait(interval)  # Redis away: poll meanwhile; redis-py reconnects on the next call
        return None
    if raw is None or raw.get("type") != "message":
        return None
    try:
        message = json.loads(raw["data"])
    except (TypeError, ValueError):
        return None
    return message if isinstance(message, dict) else None
