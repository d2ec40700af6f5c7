"""Reads compiled once per thread with values bound per run (base.statements): each must answer
as the queryset it stands for would, for every value, in one query with its related rows."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from base.statements import Param, Statement
from jobs.models import Job
from sessions.models import KeySession


@pytest.fixture
def sessions(alice, mallory, logreg, open_session):
    return {"alice": open_session(alice, logreg), "mallory": open_session(mallory, logreg)}


def test_a_session_read_binds_each_runs_own_values(alice, mallory, sessions, django_assert_num_queries):
    from api.lookup import _OWN_SESSION

    for tenant, name in ((alice, "alice"), (mallory, "mallory")):
        with django_assert_num_queries(1):
            found = _OWN_SESSION.first(uuid.UUID(sessions[name]), tenant.client.pk)
            assert found is not None
            # The related rows came with it: reading them costs no query.
            related = (found.model_version.name, found.client.name)
        assert str(found.pk) == sessions[name]
        assert related == ("breast-cancer-logreg", name)
    # Another client's session, and one that does not exist, are not found.
    assert _OWN_SESSION.first(uuid.UUID(sessions["mallory"]), alice.client.pk) is None
    assert _OWN_SESSION.first(uuid.uuid4(), alice.client.pk) is None


def test_an_api_key_read_finds_the_keys_prefix_only_while_usable(alice, mallory):
    from keys.authentication import _USABLE_KEY
    from keys.models import ClientApiKey

    for tenant in (alice, mallory):
        prefix = tenant.api_key.partition(".")[0]
        found = _USABLE_KEY.first(prefix)
        assert found is not None
        assert found.client.name == tenant.client.name
    assert _USABLE_KEY.first("nosuchky") is None
    ClientApiKey.objects.filter(client=alice.client).update(revoked=True)
    assert _USABLE_KEY.first(alice.api_key.partition(".")[0]) is None
    assert _USABLE_KEY.first(mallory.api_key.partition(".")[0]) is not None


def test_a_locking_existence_check_answers_per_session(sessions):
    from django.db import transaction

    from jobs.services import _ACTIVE_SESSION_LOCKED

    with transaction.atomic():
        assert _ACTIVE_SESSION_LOCKED.exists(uuid.UUID(sessions["alice"]))
        assert not _ACTIVE_SESSION_LOCKED.exists(uuid.uuid4())
    KeySession.objects.filter(pk=sessions["alice"]).update(status=KeySession.Status.EXPIRED)
    with transaction.atomic():
        assert not _ACTIVE_SESSION_LOCKED.exists(uuid.UUID(sessions["alice"]))
        assert _ACTIVE_SESSION_LOCKED.exists(uuid.UUID(sessions["mallory"]))


def test_refresh_loads_a_rows_fields_and_leaves_the_instance_alone_without_one(sessions):
    statement = Statement(lambda pk: KeySession.objects.filter(pk=pk), Param(KeySession._meta.pk, uuid.UUID(int=1)))
    session = KeySession.objects.get(pk=sessions["alice"])
    KeySession.objects.filter(pk=session.pk).update(status=KeySession.Status.SUSPENDED)
    assert statement.refresh(session, session.pk)
    assert session.status == KeySession.Status.SUSPENDED
    other = KeySession.objects.get(pk=sessions["mallory"])
    assert not statement.refresh(other, uuid.uuid4())
    assert other.status == KeySession.Status.ACTIVE


@pytest.mark.django_db
def test_a_sample_that_cannot_mark_one_place_is_refused():
    attempts = Job._meta.get_field("attempts")
    twice = Statement(lambda n: Job.objects.filter(attempts=n, result_attempt=n), Param(attempts, 2_000_000_001))
    with pytest.raises(ValueError, match="2 times"):
        twice.first(1)
    # Out of the field's range: Django leaves the comparison out of the SQL altogether.
    negative = Statement(lambda n: Job.objects.filter(attempts=n), Param(attempts, -5))
    with pytest.raises(ValueError, match="out of its field's range"):
        negative.first(1)
    with pytest.raises(TypeError):
        Statement(lambda n: Job.objects.filter(attempts=n), Param(attempts, 2_000_000_001)).first()


def test_the_claim_and_finish_updates_set_each_value_where_it_belongs(
    alice, sessions, bundles, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.services import _CLAIM, _FINISH
    from tests.helpers import post_bytes

    with django_capture_on_commit_callbacks(execute=False):  # queued, not run
        response = post_bytes(
            alice.http, f"/api/v1/sessions/{sessions['alice']}/jobs", bundles["breast-cancer-logreg"].encrypt(0)
        )
    job = Job.objects.get(pk=response.json()["job_id"])
    started = timezone.now()
    beat = started + timedelta(seconds=7)  # unlike ``started``: a swapped parameter would show
    assert _CLAIM.run(job.pk, job.attempts + 1, started, beat, "token-a") == 0  # not the attempts read
    assert _CLAIM.run(job.pk, job.attempts, started, beat, "token-a") == 1
    claimed = Job.objects.get(pk=job.pk)
    assert (claimed.status, claimed.attempts, claimed.claim_token) == (Job.Status.RUNNING, job.attempts + 1, "token-a")
    assert (claimed.started_at, claimed.heartbeat_at) == (started, beat)
    assert _CLAIM.run(job.pk, claimed.attempts, started, beat, "token-b") == 0  # running: not claimable

    finished = started + timedelta(seconds=3)
    assert _FINISH.run(job.pk, claimed.attempts + 1, finished, claimed.attempts) == 0  # another attempt's
    assert _FINISH.run(job.pk, claimed.attempts, finished, 5) == 1
    done = Job.objects.get(pk=job.pk)
    assert (done.status, done.finished_at, done.result_attempt, done.attempts) == (
        Job.Status.SUCCEEDED, finished, 5, claimed.attempts,
    )  # fmt: skip


@pytest.mark.skipif(
    "prepare_threshold" not in settings.DATABASES["default"].get("OPTIONS", {}),
    reason="PostgreSQL with prepared statements on (MOAI_DATABASE_PREPARED_STATEMENTS)",
)
def test_reads_and_updates_are_prepared_on_the_server_once_they_repeat(alice, sessions):
    """Each compiled statement is planned once per connection, not on every run (moai_site.postgresql)."""
    from django.db import connection

    from api.lookup import _OWN_SESSION
    from jobs.services import _FINISH

    def prepared() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in cursor.fetchall()]

    session_id = uuid.UUID(sessions["alice"])
    for _ in range(6):
        assert _OWN_SESSION.first(session_id, alice.client.pk) is not None
        assert _FINISH.run(uuid.uuid4(), 1, timezone.now(), 1) == 0
    statements = prepared()
    assert [s for s in statements if "key_sessions_keysession" in s and "$1" in s]
    assert [s for s in statements if s.startswith("UPDATE") and "inference_job" in s]
    # The answers are those of the queryset, prepared or not.
    assert _OWN_SESSION.first(session_id, alice.client.pk + 1000) is None
    assert str(_OWN_SESSION.first(session_id, alice.client.pk).pk) == sessions["alice"]


def _job(session: KeySession, key: str | None = None) -> Job:
    return Job(
        id=uuid.uuid4(), session=session, client=session.client, model_version=session.model_version,
        input_count=1, inputs_sha256="ab" * 32, enqueued_at=timezone.now(), idempotency_key=key,
    )  # fmt: skip


def test_an_insert_writes_the_row_save_would_and_only_while_its_condition_holds(sessions):
    from base.statements import Insert
    from jobs.services import _ACTIVE_SESSION_LOCKED

    insert = Insert(Job)
    session = KeySession.objects.select_related("client", "model_version").get(pk=sessions["alice"])
    job = _job(session, key="k-1")
    assert insert.one_if(job, _ACTIVE_SESSION_LOCKED, session.pk)
    assert job.submitted_at is not None  # auto_now_add, as save() sets it
    assert not job._state.adding
    stored = Job.objects.get(pk=job.pk)
    for field in Job._meta.concrete_fields:
        assert getattr(stored, field.attname) == getattr(job, field.attname), field.name
    # What save() writes, field for field (but the key and the times of the call).
    twin = _job(session, key="k-2")
    twin.save(force_insert=True)
    saved = Job.objects.get(pk=twin.pk)
    differ = {"id", "idempotency_key", "enqueued_at", "submitted_at"}
    for field in Job._meta.concrete_fields:
        if field.name not in differ:
            assert getattr(saved, field.attname) == getattr(stored, field.attname), field.name
    # The unique key is the database's to enforce, as for save().
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        insert.one_if(_job(session, key="k-1"), _ACTIVE_SESSION_LOCKED, session.pk)
    KeySession.objects.filter(pk=session.pk).update(status=KeySession.Status.EXPIRED)
    refused = _job(session)
    assert not insert.one_if(refused, _ACTIVE_SESSION_LOCKED, session.pk)
    assert refused._state.adding
    assert not Job.objects.filter(pk=refused.pk).exists()


def test_rows_with_an_auto_key_get_the_keys_the_database_gave_them(db):
    from base import audit
    from base.audit import Actor
    from base.models import AuditRecord

    written = audit.record_many([audit.Entry(Actor.system(), "client.created", "client", n) for n in "abc"])
    assert [row.pk for row in written] == list(
        AuditRecord.objects.filter(target_id__in="abc").order_by("seq").values_list("pk", flat=True)
    )
    assert all(row.pk is not None and not row._state.adding for row in written)
    assert audit.verify_chain(AuditRecord.objects.order_by("seq")) is None


def test_a_submission_waits_for_a_session_end_under_way_and_is_then_refused(transactional_db, sessions, tmp_path):
    """The job's insert locks the session's row: an end that holds it is waited for, and then wins."""
    import threading
    import time

    from django.db import connection, transaction

    from base.audit import Actor
    from jobs import services

    context_id = sessions["alice"]
    session = KeySession.objects.select_related("client", "model_version").get(pk=context_id)
    ending, release = threading.Event(), threading.Event()

    def end_it() -> None:
        try:
            with transaction.atomic():
                KeySession.objects.select_for_update().get(pk=context_id)
                KeySession.objects.filter(pk=context_id).update(status=KeySession.Status.EXPIRED)
                ending.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=end_it)
    thread.start()
    assert ending.wait(10)
    threading.Timer(0.5, release.set).start()
    spooled = tmp_path / "input.bin"
    spooled.write_bytes(b"ciphertext")
    started = time.monotonic()
    with pytest.raises(services.SessionEndedError):
        services.submit_job(session, services.JobInputs([spooled]), None, Actor.client("alice"))
    waited = time.monotonic() - started
    thread.join()
    assert waited >= 0.4  # it waited for the end's lock instead of reading the row as it was before
    assert not Job.objects.filter(session_id=context_id).exists()
