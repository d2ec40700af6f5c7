"""The audit log's hash chain."""

from __future__ import annotations

from base import audit
from base.audit import Actor
from base.models import AuditRecord


def test_chain_verifies_and_an_edit_is_found(db):
    for i in range(3):
        audit.record(Actor.client("alice", "10.0.0.1"), "session.created", "session", i, reason="r")
    assert audit.verify_chain(AuditRecord.objects.order_by("id").iterator()) is None
    second = AuditRecord.objects.order_by("id")[1]
    AuditRecord.objects.filter(pk=second.pk).update(reason="edited")
    fault = audit.verify_chain(AuditRecord.objects.order_by("id").iterator())
    assert fault is not None
    assert fault.seq == second.seq


def test_a_deleted_record_is_found(db):
    for i in range(3):
        audit.record(Actor.system(), "session.expired", "session", i)
    AuditRecord.objects.filter(seq=2).delete()
    fault = audit.verify_chain(AuditRecord.objects.order_by("seq").iterator())
    assert fault == audit.ChainFault(2, "is missing (a record was deleted)")


def test_records_cannot_be_changed_or_deleted_through_the_model(db):
    import pytest

    entry = audit.record(Actor.system(), "client.created", "client", "x")
    entry.reason = "changed"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
