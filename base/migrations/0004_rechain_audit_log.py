"""Records written before sequence numbers and MOAI_AUDIT_KEY: numbered and re-chained.

They were chained with a key derived from SECRET_KEY, which every pod holds, so that
chain is checked first and then replaced by one under MOAI_AUDIT_KEY, numbered 1, 2, 3,
... in id order (the order they were chained in). A broken old chain stops the
migration: re-chaining it would make tampering look whole. The old head digest is
logged, so the re-chain itself can be matched against earlier exports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.db import migrations

logger = logging.getLogger("moai.audit")
GENESIS = "0" * 64


def _content(row: Any) -> dict[str, Any]:
    # The fields AuditRecord.content() covered before sequence numbers.
    return {
        "at": row.at.isoformat(),
        "actor_kind": row.actor_kind,
        "actor": row.actor,
        "action": row.action,
        "target_type": row.target_type,
        "target_id": row.target_id,
        "reason": row.reason,
        "source": row.source,
        "details": row.details,
    }


def _hmac(secret: bytes, prev: str, content: dict[str, Any]) -> str:
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(secret, (prev + payload).encode(), hashlib.sha256).hexdigest()


def rechain(apps: Any, schema_editor: Any) -> None:
    from base.audit import compute_digest, signing_key

    # The database being migrated, which is not always "default" (migrate --database, tests).
    records = apps.get_model("ops", "AuditRecord").objects.using(schema_editor.connection.alias)
    legacy_key = hashlib.sha256(b"moai-audit:" + settings.SECRET_KEY.encode()).digest()
    key = signing_key()
    old_prev = new_prev = GENESIS
    batch = []
    seq = 0
    for row in records.order_by("id").iterator(chunk_size=2000):
        seq += 1
        content = _content(row)
        if row.prev_digest != old_prev or not hmac.compare_digest(row.digest, _hmac(legacy_key, old_prev, content)):
            raise RuntimeError(
                f"the audit log was already broken at record id {row.id} before this upgrade (checked with the "
                "SECRET_KEY it was written with): it is not re-chained under MOAI_AUDIT_KEY. Export it with the "
                "previous release (export_audit_log), keep the export as evidence, and see docs/runbook.md"
            )
        old_prev = row.digest
        row.seq, row.key_id, row.prev_digest = seq, key.id, new_prev
        row.digest = new_prev = compute_digest(key, new_prev, {"seq": seq, **content})
        batch.append(row)
        if len(batch) == 1000:
            records.bulk_update(batch, ["seq", "key_id", "prev_digest", "digest"])
            batch = []
    records.bulk_update(batch, ["seq", "key_id", "prev_digest", "digest"])
    if seq:
        logger.warning(
            "audit log re-chained under MOAI_AUDIT_KEY",
            extra={"audit_records": seq, "legacy_head_digest": old_prev, "audit_digest": new_prev, "audit_seq": seq},
        )


class Migration(migrations.Migration):

    dependencies = [
        ('ops', '0003_audit_sequence_and_key_id'),
    ]

    operations = [
        migrations.RunPython(rechain, migrations.RunPython.noop, elidable=False),
    ]
