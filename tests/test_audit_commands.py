"""verify_audit_log and export_audit_log against real histories and each kind of tampering."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from base.models import AuditRecord
from tests.helpers import run_command


@pytest.fixture
def history(alice, logreg, open_session):
    context_id = open_session(alice, logreg)
    alice.http.delete(f"/api/v1/sessions/{context_id}")
    records = list(AuditRecord.objects.order_by("seq"))
    assert len(records) >= 4
    return records


def test_a_fresh_history_verifies(history):
    assert f"audit log intact: {len(history)} record(s)" in run_command("verify_audit_log")


def test_an_edited_record_is_named(history):
    AuditRecord.objects.filter(pk=history[2].pk).update(reason="nothing happened")
    with pytest.raises(CommandError, match=f"sequence number {history[2].seq}: record #{history[2].seq} content"):
        run_command("verify_audit_log")


def test_a_deleted_record_is_named_by_its_missing_number(history):
    AuditRecord.objects.filter(pk=history[2].pk).delete()
    with pytest.raises(CommandError, match=f"sequence number {history[2].seq}: record #{history[2].seq} is missing"):
        run_command("verify_audit_log")


def test_an_inserted_record_is_found(history):
    forged = AuditRecord.objects.create(
        seq=history[-1].seq + 1,
        key_id=history[-1].key_id,
        at=timezone.now(),
        actor_kind="system",
        actor="x",
        action="session.created",
        target_type="session",
        target_id="forged",
        prev_digest=history[-1].digest,
        digest="f" * 64,
    )
    with pytest.raises(CommandError, match=f"sequence number {forged.seq}: record #{forged.seq} content"):
        run_command("verify_audit_log")


def test_reordered_records_are_found(history):
    first, second = history[1], history[2]
    with connection.cursor() as cursor:
        table = AuditRecord._meta.db_table
        cursor.execute(f"UPDATE {table} SET seq = 0 WHERE seq = %s", [first.seq])
        cursor.execute(f"UPDATE {table} SET seq = %s WHERE seq = %s", [first.seq, second.seq])
        cursor.execute(f"UPDATE {table} SET seq = %s WHERE seq = 0", [second.seq])
    with pytest.raises(CommandError, match=f"sequence number {first.seq}: record #{first.seq}"):
        run_command("verify_audit_log")


def test_export_jsonl_csv_and_since(history):
    lines = [json.loads(line) for line in run_command("export_audit_log").splitlines()]
    assert [line["seq"] for line in lines] == [r.seq for r in history] == list(range(1, len(history) + 1))
    assert {"actor", "action", "target_id", "reason", "source", "at", "key_id", "digest"} <= set(lines[0])
    rows = list(csv.DictReader(io.StringIO(run_command("export_audit_log", "--format", "csv"))))
    assert [int(row["id"]) for row in rows] == [r.pk for r in history]
    AuditRecord.objects.filter(pk=history[0].pk).update(at=timezone.now() - timedelta(days=2))
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert len(run_command("export_audit_log", "--since", since).splitlines()) == len(history) - 1
    with pytest.raises(CommandError, match="ISO 8601"):
        run_command("export_audit_log", "--since", "yesterday")
