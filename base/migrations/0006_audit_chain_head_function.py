"""A PostgreSQL function that takes the audit chain's lock and reads its head, in one round trip.

Every audited state change did both as two statements. One statement alone could not: in
READ COMMITTED a statement reads the snapshot taken as it started, before it waited for the
lock, and would miss the record of the writer it waited for. A VOLATILE PL/pgSQL function
takes a fresh snapshot for each statement inside it, so its read comes after the lock.
Other databases (SQLite, which writes one transaction at a time) keep the two steps.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION moai_audit_chain_head(lock_id bigint)
RETURNS TABLE (seq bigint, digest varchar) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_id);
    RETURN QUERY SELECT r.seq, r.digest FROM ops_auditrecord AS r ORDER BY r.seq DESC LIMIT 1;
END
$$
"""
DROP = "DROP FUNCTION IF EXISTS moai_audit_chain_head(bigint)"


def _on_postgresql(statement: str) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("ops", "0005_audit_sequence_unique")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP))]
