"""A pool process's warm-up loop (jobs.warmup), run in this process against PostgreSQL and Redis.

The end-to-end side (a real worker's pool processes warm each new session) is in
tests/test_cores.py; here the loop runs in a thread so that a test can choose the moment
a session opens relative to the loop's own steps.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings

from base import blobs, notify
from base.redis_client import shared_redis, subscriptions_redis
from jobs import runtime, warmup
from sessions.models import KeySession
from tests.helpers import post_bytes

pytestmark = [
    pytest.mark.skipif(not settings.REDIS_URL, reason="warm-up notices travel on Redis"),
    pytest.mark.django_db(transaction=True),  # the loop's thread reads the rows with its own connection
]


@pytest.fixture
def start_loop() -> Iterator[Callable[[], None]]:
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start() -> None:
        thread = threading.Thread(target=warmup.run, args=(stop,), name="warm-up", daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=60)


@pytest.fixture
def warmed_per_session(logreg: Any) -> Any:
    """logreg as registered before versions kept their constant keys: each of its sessions is
    warmed on its own, as any version's whose keys differ per keygen (and it is quick to warm)."""
    logreg.constant_keys = ""
    logreg.save(update_fields=["constant_keys"])
    return logreg


def _warmed_here(context_id: str, timeout: float) -> bool:
    """Whether this process said it holds the session's keys warm (and does), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shared_redis().sismember(notify.WARMED_BY.format(context_id), warmup.process_name()):
            return context_id in runtime.keys.session_ids()
        time.sleep(0.05)
    return False


def test_a_session_opened_while_the_circuits_load_is_warmed_once_they_are(
    warmed_per_session: Any,
    alice: Any,
    open_session: Any,
    start_loop: Callable[[], None],
    settings: Any,
    monkeypatch: Any,
) -> None:
    """A pool process loads every active circuit when it starts (seconds); a session that
    opens meanwhile must still be warmed there, or its opening waits for this process until
    MOAI_SESSION_WARMUP_WAIT_SECONDS runs out."""
    settings.MOAI_SESSION_WARMUP_WAIT_SECONDS = 0  # the opening answers at once: no loop runs yet
    context_id = open_session(alice, warmed_per_session)
    load = warmup.load_active_models

    def load_while_a_session_opens() -> int:
        # The opening's notice, sent as the load begins: what a client opening a session
        # just after a worker (re)start does.
        notify.announce_session(context_id)
        return load()

    monkeypatch.setattr(warmup, "load_active_models", load_while_a_session_opens)
    start_loop()
    assert _warmed_here(context_id, timeout=30)


def _opening_notice(open_session: Callable[..., str], *args: Any) -> tuple[str, dict[str, Any]]:
    """Open a session; its id and the warm-up notice its opening published."""
    pubsub = subscriptions_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(notify.WARMUP_CHANNEL)
    try:
        context_id = open_session(*args)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)
            if message is not None and json.loads(message["data"]).get("session") == context_id:
                return context_id, json.loads(message["data"])
    finally:
        pubsub.close()
    raise AssertionError("the opening published no warm-up notice")


def test_the_opening_notice_warms_the_keys_without_a_database_read(
    warmed_per_session: Any, alice: Any, open_session: Any, settings: Any, django_assert_num_queries: Any
) -> None:
    """Every pool process warms every new session, and the opening waits for all of them: a
    read of the session's row in each (a connection, then a query) was most of that wait."""
    settings.MOAI_SESSION_WARMUP_WAIT_SECONDS = 0  # no pool process runs: answer at once
    assert warmup.load_active_models() == 1
    context_id, notice = _opening_notice(open_session, alice, warmed_per_session)
    with django_assert_num_queries(0):
        assert warmup.warm_session(context_id, notice)
    assert context_id in runtime.keys.session_ids()


def test_a_notice_that_names_no_loaded_version_warms_from_the_sessions_row(
    warmed_per_session: Any, alice: Any, open_session: Any, settings: Any, django_assert_num_queries: Any
) -> None:
    """A version registered after this process's last load, or a notice from a web process of
    the release before (it names the session alone): the row says what to warm."""
    settings.MOAI_SESSION_WARMUP_WAIT_SECONDS = 0
    context_id, notice = _opening_notice(open_session, alice, warmed_per_session)
    for older in ({"session": context_id}, notice):
        runtime.models.clear()  # the notice's version is not loaded here
        runtime.keys.clear()
        with django_assert_num_queries(1):
            assert warmup.warm_session(context_id, older)
        assert context_id in runtime.keys.session_ids()


def test_a_version_whose_keys_are_constant_keeps_them_and_every_pool_process_holds_them_warm(
    logreg: Any, tree: Any, bundles: Any
) -> None:
    """Every keygen makes logreg the same keys: registration keeps them, and a process that
    loads the circuit runs them once, before any session. The iris tree's keys differ per keygen."""
    assert blobs.read_bytes(logreg.constant_keys) == bundles["breast-cancer-logreg"].evaluation_keys
    assert tree.constant_keys == ""
    assert warmup.load_active_models() == 2
    assert runtime.models.get(logreg).constant_keys is not None
    assert runtime.models.get(tree).constant_keys is None


def test_a_session_with_the_constant_keys_opens_without_waiting_and_its_jobs_use_the_warm_copy(
    logreg: Any, alice: Any, bundles: Any, settings: Any
) -> None:
    """The keys a client's own keygen makes (its fixture's), uploaded as any client does."""
    settings.MOAI_SESSION_WARMUP_WAIT_SECONDS = 30
    notify.pool_process_present("elsewhere:1")  # a pool process alive, that an opening would wait for
    pubsub = subscriptions_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(notify.WARMUP_CHANNEL)
    try:
        keys_of_a_client = bundles["breast-cancer-logreg"].evaluation_keys
        response = post_bytes(alice.http, f"/api/v1/models/{logreg.name}/sessions", keys_of_a_client)
        assert response.status_code == 201, response.content
        # Answered without waiting for that process, and nobody was asked to warm anything.
        assert response.json()["keys_warm"] is True
        assert pubsub.get_message(timeout=0.5) is None
    finally:
        pubsub.close()
        notify.pool_process_gone("elsewhere:1")
    session = KeySession.objects.select_related("model_version").get(pk=response.json()["context_id"])
    warmup.load_active_models()
    model = runtime.models.get(logreg)
    keys, loaded = runtime.session_keys(session, session.model_version, model)
    assert keys is model.constant_keys
    assert loaded is False
    assert runtime.keys.session_ids() == []  # the session's own copy was never read


def test_other_keys_of_a_constant_key_version_come_from_the_sessions_own_blob(
    logreg: Any, alice: Any, open_session: Any, settings: Any
) -> None:
    """Only the very bytes the digest names share the warm copy; a session whose fingerprint is
    anything else (keys a later Concrete serializes otherwise, say) runs with its own."""
    settings.MOAI_SESSION_WARMUP_WAIT_SECONDS = 0
    session = KeySession.objects.select_related("model_version").get(pk=open_session(alice, logreg))
    session.key_fingerprint = "0" * 64
    warmup.load_active_models()
    model = runtime.models.get(logreg)
    keys, loaded = runtime.session_keys(session, session.model_version, model)
    assert keys is not model.constant_keys
    assert loaded is True
    assert runtime.keys.session_ids() == [str(session.pk)]


def test_the_iris_tree_as_registration_measured_it_is_warmed_ahead(tree: Any, bundles: Any) -> None:
    """Registration runs the circuit twice with one fresh set of keys and keeps both times; the
    first run's extra is the keys' first use. The iris tree's is about ten warm runs, so its
    sessions' keys are warmed ahead (a first job on cold keys would take several times a warm one)."""
    facts = bundles["iris-tree"].facts
    assert (tree.first_run_ms, tree.warm_run_ms) == (facts.first_run_ms, facts.warm_run_ms)
    assert tree.warm_run_ms > 0
    assert tree.warms_keys_ahead


@pytest.mark.parametrize(
    ("first_run_ms", "warm_run_ms", "ahead"),
    [
        (0.0, 0.0, True),  # registered before the runs were measured: warmed, as before
        (1150.0, 130.0, True),  # the iris tree's: first use costs eight warm runs
        (8250.0, 6050.0, False),  # wine-xgb's: a warm run costs more than the first use adds
        (2000.0, 1000.0, False),  # a run that costs as much as it would save
    ],
)
def test_keys_are_warmed_ahead_only_where_the_run_costs_less_than_the_first_use_it_saves(
    first_run_ms: float, warm_run_ms: float, ahead: bool
) -> None:
    from registry.models import ModelVersion

    assert ModelVersion(first_run_ms=first_run_ms, warm_run_ms=warm_run_ms).warms_keys_ahead is ahead


def test_a_long_circuits_keys_are_deserialized_ahead_not_run_and_its_opening_does_not_wait(
    tree: Any, alice: Any, bundles: Any, settings: Any, start_loop: Callable[[], None], monkeypatch: Any
) -> None:
    """With wine-xgb's registration figures, a warm-up run would cost each pool process a whole
    circuit run: the opening answers at once (``keys_warm`` false) though a pool process is
    present, that process deserializes the keys without running anything, and the first job
    finds them there and decompresses them in its own run."""
    tree.first_run_ms, tree.warm_run_ms = 8250.0, 6050.0
    tree.save(update_fields=["first_run_ms", "warm_run_ms"])
    runs: list[str] = []
    real_run = runtime.LoadedModel.run

    def counted_run(self: runtime.LoadedModel, *args: Any, **kwargs: Any) -> bytes:
        runs.append(threading.current_thread().name)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(runtime.LoadedModel, "run", counted_run)
    waits: list[str] = []
    real_wait = notify.wait_until_warmed
    monkeypatch.setattr(notify, "wait_until_warmed", lambda *args: waits.append(args[0]) or real_wait(*args))
    settings.MOAI_SESSION_WARMUP_WAIT_SECONDS = 30  # would hold the answer until the loop warmed the keys
    start_loop()
    deadline = time.monotonic() + 60
    while tree.pk not in runtime.models and time.monotonic() < deadline:
        time.sleep(0.05)  # the loop's start-up load: a notice is heard once it ends
    bundle = bundles["iris-tree"]
    response = post_bytes(alice.http, f"/api/v1/models/{tree.name}/sessions", bundle.evaluation_keys)
    assert response.status_code == 201, response.content
    assert response.json()["keys_warm"] is False
    assert waits == []
    context_id = response.json()["context_id"]
    while context_id not in runtime.keys.session_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert context_id in runtime.keys.session_ids()
    assert runs == []
    session = KeySession.objects.select_related("model_version").get(pk=context_id)
    model = runtime.models.get(session.model_version)
    keys, loaded = runtime.session_keys(session, session.model_version, model)
    assert loaded is False
    assert bundle.decrypt_label(model.run(bundle.encrypt(3), keys)) == int(bundle.samples["clear_prediction"][3])
