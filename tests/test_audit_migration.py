"""Upgrading an existing deployment: records chained under SECRET_KEY are numbered and re-chained."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from base import audit
from base.models import AuditRecord

BEFORE = [("ops", "0002_admin_permissions")]
AFTER = [("ops", "0005_audit_sequence_unique")]


def migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_schema(transactional_db: None) -> Iterator[Any]:
    yield migrate(BEFORE)
    # Back to the current schema for the tests that follow; a test's records would stop it.
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditRecord._meta.db_table}")
    migrate(executor_leaf_nodes())


def executor_leaf_nodes() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def write_legacy_chain(apps: Any, count: int) -> list[str]:
    """Records as the previous release wrote them: no numbers, HMAC keyed from SECRET_KEY."""
    Record = apps.get_model("ops", "AuditRecord")
    key = hashlib.sha256(b"moai-audit:" + settings.SECRET_KEY.encode()).digest()
    prev, digests = audit.GENESIS, []
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(count):
        fields = {
            "at": start + timedelta(minutes=i),
            "actor_kind": "client",
            "actor": "alice",
            "action": "session.created",
            "target_type": "session",
            "target_id": str(i),
            "reason": "",
            "source": "10.0.0.1",
            "details": {"n": i},
        }
        content = {**fields, "at": fields["at"].isoformat()}
        payload = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        digest = hmac.new(key, (prev + payload).encode(), hashlib.sha256).hexdigest()
        Record.objects.create(**fields, prev_digest=prev, digest=digest)
        prev = digest
        digests.append(digest)
    return digests


def test_existing_records_are_numbered_in_order_and_rechained_under_the_audit_key(old_schema):
    write_legacy_chain(old_schema, 5)
    migrate(AFTER)
    records = list(AuditRecord.objects.order_by("seq"))
    assert [(r.seq, r.target_id) for r in records] == [(i + 1, str(i)) for i in range(5)]
    assert {r.key_id for r in records} == {audit.signing_key().id}
    assert audit.verify_chain(records) is None
    # The next write, by this code on the current schema, continues the chain.
    migrate(executor_leaf_nodes())
    audit.record(audit.Actor.system(), "client.created", "client", "after-upgrade")
    assert audit.verify_chain(AuditRecord.objects.order_by("seq")) is None
    assert AuditRecord.objects.order_by("-seq").first().seq == 6


def test_an_already_broken_chain_is_not_laundered(old_schema):
    write_legacy_chain(old_schema, 4)
    old_schema.get_model("ops", "AuditRecord").objects.filter(target_id="2").update(reason="edited")
    with pytest.raises(RuntimeError, match="already broken at record id"):
        migrate(AFTER)
