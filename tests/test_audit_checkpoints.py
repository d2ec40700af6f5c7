"""The audit log tried as an insider would: records deleted, a gap, the table replaced or emptied.

Every test writes its records as the service does, one committed transaction each, so each
write publishes its checkpoint; then it tampers with the table by SQL, as someone holding
the database's credentials could, and runs ``verify_audit_log --checkpoints``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from base import audit, audit_checkpoints, blobs
from base.audit import Actor
from base.models import AuditRecord
from base.tasks import checkpoint_audit_log, thin_audit_checkpoints

RECORDS = 16


def verify(*flags: str) -> str:
    out = io.StringIO()
    call_command("verify_audit_log", *flags, stdout=out)
    return out.getvalue()


def delete_by_sql(where: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditRecord._meta.db_table} WHERE {where}", params)


@pytest.fixture
def history(db: None, django_capture_on_commit_callbacks: Any) -> list[AuditRecord]:
    """Sixteen records, each written and committed on its own, as sixteen requests would."""
    return write_records(RECORDS, django_capture_on_commit_callbacks)


def write_records(count: int, capture: Any) -> list[AuditRecord]:
    for i in range(count):
        with capture(execute=True):
            audit.record(Actor.client("alice", "10.0.0.1"), "session.created", "session", i)
        # Requests apart from each other: each head written before the next commits (none coalesced).
        assert audit_checkpoints.flush()
    return list(AuditRecord.objects.order_by("seq"))


def test_records_are_numbered_one_by_one_and_every_write_is_checkpointed(history):
    assert [r.seq for r in history] == list(range(1, RECORDS + 1))
    assert [c.seq for c in audit_checkpoints.load_all()] == list(range(1, RECORDS + 1))
    assert verify("--checkpoints") == (
        f"audit log intact: {RECORDS} record(s), {RECORDS} checkpoint(s) agree (latest #{RECORDS} of "
        f"{history[-1].at.isoformat()})\n"
    )


@pytest.mark.parametrize("deleted", [1, 3])
def test_a_deleted_tail_is_found(history, deleted):
    first_gone = RECORDS - deleted + 1
    delete_by_sql("seq >= %s", first_gone)
    # The shorter chain is still whole: only the checkpoints show what is missing.
    assert verify() == f"audit log intact: {first_gone - 1} record(s)\n"
    expected = (
        rf"number {first_gone}: record #{first_gone} is missing: the table ends at #{first_gone - 1}, but checkpoint"
    )
    with pytest.raises(CommandError, match=rf"{expected} .*{RECORDS:020d}\.json"):
        verify("--checkpoints")


def test_a_deleted_tail_refilled_by_new_writes_is_found(history, django_capture_on_commit_callbacks, caplog):
    delete_by_sql("seq >= %s", RECORDS - 1)
    with caplog.at_level(logging.ERROR, logger="moai.audit"), django_capture_on_commit_callbacks(execute=True):
        audit.record(Actor.system(), "session.expired", "session", "new")
    assert audit_checkpoints.flush()
    # The new record took number 15 again: its checkpoint cannot replace the old one, and says so.
    assert "audit record #15 disagrees with its checkpoint" in caplog.text
    with pytest.raises(CommandError, match=r"sequence number 15: record #15 disagrees with checkpoint"):
        verify("--checkpoints")


def test_a_gap_in_the_middle_is_named(history):
    delete_by_sql("seq = 7")
    for flags in ([], ["--checkpoints"]):
        with pytest.raises(CommandError, match=r"sequence number 7: record #7 is missing \(a record was deleted\)"):
            verify(*flags)


def _legacy_key() -> bytes:
    from django.conf import settings

    return hashlib.sha256(b"moai-audit:" + settings.SECRET_KEY.encode()).digest()


def test_a_table_replaced_by_a_forgery_chained_with_secret_key_is_found(history):
    """Whoever holds SECRET_KEY (every pod) could rebuild the whole chain before; not any more."""
    forged, prev = [], audit.GENESIS
    for original in history:
        row = AuditRecord(
            **{f.name: getattr(original, f.name) for f in AuditRecord._meta.fields if f.name != "id"},
        )
        row.actor = "nobody"  # the forger rewrites who did what
        row.prev_digest = prev
        payload = json.dumps(row.content(), sort_keys=True, separators=(",", ":"), default=str)
        row.digest = prev = hmac.new(_legacy_key(), (row.prev_digest + payload).encode(), hashlib.sha256).hexdigest()
        forged.append(row)
    delete_by_sql("TRUE")
    AuditRecord.objects.bulk_create(forged)
    for flags in ([], ["--checkpoints"]):
        with pytest.raises(CommandError, match=r"sequence number 1: record #1 "):
            verify(*flags)


def test_an_emptied_table_is_found_after_a_checkpoint(history):
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {AuditRecord._meta.db_table}")
    assert verify() == "audit log intact: 0 record(s)\n"
    expected = r"sequence number 1: record #1 is missing: the table ends at #0, but checkpoint"
    with pytest.raises(CommandError, match=rf"{expected} .*{RECORDS:020d}\.json"):
        verify("--checkpoints")


def test_an_altered_or_unsigned_checkpoint_is_not_trusted(history):
    name = audit_checkpoints.checkpoint_name(RECORDS)
    body = json.loads(blobs.read_bytes(name))
    blobs.delete(name)
    blobs.save_bytes(name, json.dumps({**body, "seq": RECORDS - 1}).encode())
    with pytest.raises(CommandError, match=r"checkpoint not genuine: .*does not match its signature"):
        verify("--checkpoints")


def test_records_without_any_checkpoint_are_not_called_intact(db):
    audit.record(Actor.system(), "client.created", "client", "x")  # rolled back with the test: no checkpoint
    with pytest.raises(CommandError, match="no audit checkpoints in blob storage"):
        verify("--checkpoints")
    assert checkpoint_audit_log() == 1  # beat's checkpoint covers it
    assert "1 checkpoint(s) agree" in verify("--checkpoints")


def test_a_rolled_back_write_leaves_no_gap(db):
    audit.record(Actor.system(), "client.created", "client", "a")

    def failing_change() -> None:
        with transaction.atomic():
            audit.record(Actor.system(), "client.created", "client", "b")
            raise RuntimeError("the state change failed after its record was written")

    with pytest.raises(RuntimeError):
        failing_change()
    audit.record(Actor.system(), "client.created", "client", "c")
    assert list(AuditRecord.objects.values_list("seq", "target_id")) == [(1, "a"), (2, "c")]
    assert audit.verify_chain(AuditRecord.objects.order_by("seq")) is None


def test_bulk_writes_are_numbered_in_order(db):
    audit.record(Actor.system(), "client.created", "client", "first")
    entries = [audit.Entry(Actor.system(), "session.expired", "session", i) for i in range(5)]
    written = audit.record_many(entries)
    assert [r.seq for r in written] == [2, 3, 4, 5, 6]
    assert list(AuditRecord.objects.order_by("seq").values_list("target_id", flat=True)) == ["first", *"01234"]
    assert audit.verify_chain(AuditRecord.objects.order_by("seq")) is None


def test_old_records_verify_after_the_key_is_rotated(history, settings, django_capture_on_commit_callbacks):
    old_key = settings.MOAI_AUDIT_KEY
    settings.MOAI_AUDIT_KEY = "a-new-audit-key-after-rotation-0123456789abcdef"
    settings.MOAI_AUDIT_PREVIOUS_KEYS = [old_key]
    with django_capture_on_commit_callbacks(execute=True):
        newest = audit.record(Actor.system(), "client.created", "client", "after-rotation")
    assert newest.key_id != history[0].key_id
    assert f"{RECORDS + 1} checkpoint(s) agree" in verify("--checkpoints")
    # Without the old key the first record it signed is named.
    settings.MOAI_AUDIT_PREVIOUS_KEYS = []
    with pytest.raises(CommandError, match=r"sequence number 1: record #1 is signed with an unknown audit key"):
        verify()


def test_the_head_gauge_reads_the_table(history):
    from prometheus_client import CollectorRegistry, generate_latest

    from dashboards.collectors import SharedStateCollector

    def head() -> float:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SharedStateCollector())
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("moai_audit_head_sequence "):
                return float(line.split()[1])
        raise AssertionError("moai_audit_head_sequence is not exported")

    assert head() == RECORDS
    delete_by_sql("seq > 10")
    assert head() == 10


def test_concurrent_writers_leave_no_gap_and_one_chain(transactional_db):
    """Eight writers at once, every third write rolled back, as gunicorn threads would write."""
    import threading

    errors: list[BaseException] = []

    def writer(slot: int) -> None:
        try:
            for i in range(12):
                try:
                    with transaction.atomic():
                        audit.record(Actor.system(f"writer-{slot}"), "client.created", "client", f"{slot}-{i}")
                        if i % 3 == 2:
                            raise LookupError("rolled back")
                except LookupError:
                    pass
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(AuditRecord.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 8 * 8 + 1))
    assert audit.verify_chain(AuditRecord.objects.order_by("seq")) is None


@pytest.fixture
def slow_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """A store that holds every checkpoint write until the test lets it go (or 5 s pass).

    The store is the system's edge: a slow object store is what this guards against, and it
    cannot be made slow for real. Writes of other blobs go through untouched.
    """
    release = threading.Event()
    saved = blobs.save_bytes
    written: list[str] = []

    def held(name: str, data: bytes) -> str:
        if name.startswith(audit_checkpoints.FOLDER):
            release.wait(5)
            written.append(name)
        return saved(name, data)

    monkeypatch.setattr(audit_checkpoints.blobs, "save_bytes", held)
    release.written = written  # type: ignore[attr-defined]
    yield release
    release.set()
    assert audit_checkpoints.flush()


def test_a_commit_does_not_wait_for_its_checkpoint(transactional_db, slow_store):
    started = time.monotonic()
    audit.record(Actor.system(), "client.created", "client", "a")  # committed at once (autocommit)
    assert time.monotonic() - started < 2  # not the 5 s the store holds the write
    assert audit_checkpoints.names() == []
    slow_store.set()
    assert audit_checkpoints.flush()
    assert [c.seq for c in audit_checkpoints.load_all()] == [1]


def test_heads_committed_while_a_checkpoint_is_written_are_covered_by_the_newest(transactional_db, slow_store):
    audit.record(Actor.system(), "client.created", "client", "first")
    time.sleep(0.2)  # the writer has taken #1 and is held in the store
    for i in range(2, 6):
        audit.record(Actor.system(), "client.created", "client", str(i))
    slow_store.set()
    assert audit_checkpoints.flush()
    # #2 to #4 were overtaken while they waited: #5 covers them.
    assert [c.seq for c in audit_checkpoints.load_all()] == [1, 5]
    assert "5 record(s), 2 checkpoint(s) agree" in verify("--checkpoints")
    delete_by_sql("seq >= 4")
    with pytest.raises(CommandError, match=r"number 4: record #4 is missing: the table ends at #3, but checkpoint"):
        verify("--checkpoints")


def test_a_forked_child_writes_its_own_checkpoints():
    """gunicorn and Celery fork their workers from a parent that may have a writer thread already."""
    audit_checkpoints.publish(audit_checkpoints.Head(1, "a" * 64, timezone.now()))
    assert audit_checkpoints.flush()
    pid = os.fork()
    if pid == 0:  # the child: no writer thread came along, a new one must be started for it
        code = 1
        try:
            audit_checkpoints.publish(audit_checkpoints.Head(2, "b" * 64, timezone.now()))
            code = 0 if audit_checkpoints.flush(10) and blobs.exists(audit_checkpoints.checkpoint_name(2)) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_fork_waits_for_a_checkpoint_being_written(monkeypatch):
    """A fork copies locks as they are: one the writer holds in the store's client must not be
    copied held, or the child's first request to the store hangs (seen: a Celery pool process
    forked while the parent wrote the checkpoint of a failed job, on S3)."""
    saved = blobs.save_bytes
    writing = threading.Event()

    def in_the_client(name: str, data: bytes) -> str:
        with blobs._client_lock:  # as while the S3 client is made: a lock of the store's client held
            writing.set()
            time.sleep(0.5)
        return saved(name, data)  # which may take that lock itself (S3)

    monkeypatch.setattr(audit_checkpoints.blobs, "save_bytes", in_the_client)
    audit_checkpoints.publish(audit_checkpoints.Head(1, "a" * 64, timezone.now()))
    assert writing.wait(5)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if blobs._client_lock.acquire(timeout=3) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert audit_checkpoints.flush()


@pytest.fixture
def sharded(db: None, monkeypatch: Any, django_capture_on_commit_callbacks: Any) -> list[AuditRecord]:
    """Eighteen records in shards of four checkpoints: 1-3, 4-7, 8-11, 12-15, and 16-18 (the newest)."""
    monkeypatch.setattr(audit_checkpoints, "_SHARD", 4)
    return write_records(18, django_capture_on_commit_callbacks)


def checkpointed() -> list[int]:
    assert audit_checkpoints.flush()
    return [c.seq for c in audit_checkpoints.load_all()]


def test_old_shards_keep_their_newest_checkpoint_and_still_find_a_deleted_tail(
    sharded, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        thinned = audit_checkpoints.thin(older_than=timezone.now() + timedelta(minutes=1))
    assert thinned == audit_checkpoints.Thinned(shards=4, removed=2 + 3 + 3 + 3)
    # The newest shard, where heads are written, keeps every checkpoint, whatever its age.
    kept = checkpointed()
    assert kept[:7] == [3, 7, 11, 15, 16, 17, 18]
    # The thinning's own records are checkpointed as any other write.
    assert kept[-1] == AuditRecord.objects.order_by("-seq").values_list("seq", flat=True)[0]
    records = AuditRecord.objects.filter(action="audit.checkpoints_thinned").order_by("seq")
    assert [(r.target_id, r.details["kept_seq"], r.details["removed"]) for r in records] == [
        ("0000000000", 3, 2),
        ("0000000001", 7, 3),
        ("0000000002", 11, 3),
        ("0000000003", 15, 3),
    ]
    assert records[0].actor == "beat"
    assert "agree" in verify("--checkpoints")
    # What every checkpoint found, the ones kept still find: a rewritten middle, a deleted tail.
    delete_by_sql("seq >= %s", 14)
    with pytest.raises(CommandError, match=r"sequence number 14: record #14 is missing"):
        verify("--checkpoints")


def test_shards_newer_than_the_cutoff_keep_every_checkpoint(sharded):
    assert audit_checkpoints.thin(older_than=timezone.now() - timedelta(days=1)) == audit_checkpoints.Thinned(0, 0)
    assert checkpointed() == list(range(1, 19))
    assert not AuditRecord.objects.filter(action="audit.checkpoints_thinned").exists()


def test_a_shard_whose_newest_checkpoint_is_not_genuine_is_kept_whole(sharded, caplog):
    name = audit_checkpoints.checkpoint_name(7)
    body = json.loads(blobs.read_bytes(name))
    blobs.delete(name)
    blobs.save_bytes(name, json.dumps({**body, "digest": "0" * 64}).encode())
    with caplog.at_level(logging.ERROR, logger="moai.audit"):
        thinned = audit_checkpoints.thin(older_than=timezone.now() + timedelta(minutes=1), max_shards=2)
    assert "shard 0000000001 not thinned" in caplog.text
    # Evidence of tampering stays whole; two shards at most a call are thinned, the third is left.
    assert thinned == audit_checkpoints.Thinned(shards=2, removed=2 + 3)
    assert [name.rsplit("/", 1)[1] for name in audit_checkpoints.names()][:10] == [
        f"{seq:020d}.json" for seq in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
    ]


def test_a_shard_whose_newest_checkpoint_the_table_disagrees_with_is_kept_whole(sharded, caplog):
    delete_by_sql("seq = 11")
    with caplog.at_level(logging.ERROR, logger="moai.audit"):
        thinned = audit_checkpoints.thin(older_than=timezone.now() + timedelta(minutes=1))
    assert f"shard 0000000002 not thinned: the table disagrees with {audit_checkpoints.checkpoint_name(11)}" in (
        caplog.text
    )
    assert thinned == audit_checkpoints.Thinned(shards=3, removed=2 + 3 + 3)
    assert checkpointed()[:8] == [3, 7, 8, 9, 10, 11, 15, 16]
    with pytest.raises(CommandError, match=r"sequence number 11: record #11 is missing"):
        verify("--checkpoints")


def test_beat_thins_checkpoints_older_than_the_setting_and_not_at_zero(sharded, settings, monkeypatch):
    settings.MOAI_AUDIT_CHECKPOINT_DAYS = 0
    assert thin_audit_checkpoints() == 0
    settings.MOAI_AUDIT_CHECKPOINT_DAYS = 7
    assert thin_audit_checkpoints() == 0  # written moments ago
    # Eight days on (the clock is the one thing stood in for: these records cannot be made old).
    later = timezone.now() + timedelta(days=8)
    monkeypatch.setattr("base.tasks.timezone.now", lambda: later)
    assert thin_audit_checkpoints() == 11
    assert checkpointed()[:5] == [3, 7, 11, 15, 16]
    assert "ops.tasks.thin_audit_checkpoints" in {e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
