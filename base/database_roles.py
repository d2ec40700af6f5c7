"""Least privilege in PostgreSQL: the role the service runs as cannot rewrite the audit log.

Two roles (docs/runbook.md, "Database roles"): the owner, which owns the schema and runs
``migrate``, and the service role, which web, workers and beat connect as. The owner
applies the service role's grants after every migration (:func:`apply_grants`, by
``manage.py apply_database_grants``), so tables added by a migration are covered:

- every table: SELECT, INSERT, UPDATE, DELETE (never TRUNCATE, REFERENCES or TRIGGER);
- the audit log: SELECT and INSERT only, so records can be added but not changed or removed;
- ``django_migrations``: SELECT only;
- every sequence: USAGE and SELECT, for ids from serial columns (identity columns need none);
- the audit chain's head function (``FUNCTIONS``): EXECUTE.

Grants mean nothing to a superuser or to a table's owner, so such a service role is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from psycopg import sql

from base.models import AuditRecord

APPEND_ONLY_TABLES = (AuditRecord._meta.db_table,)
READ_ONLY_TABLES = ("django_migrations",)
# The audit chain's lock and head read (base.audit, migration ops 0006).
FUNCTIONS = ("moai_audit_chain_head(bigint)",)


class GrantsError(Exception):
    """The grants cannot give least privilege to this role: the message says why and what to do."""


@dataclass(frozen=True)
class ServiceRole:
    name: str
    # With a password the role is created (or its password set) as a login role.
    password: str | None = None


def apply_grants(role: ServiceRole, create: bool = False) -> list[str]:
    """Give ``role`` exactly the service's privileges on the current schema; the statements run."""
    if connection.vendor != "postgresql":
        raise GrantsError(f"database roles are a PostgreSQL feature; this database is {connection.vendor}")
    statements: list[sql.Composable] = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_schema()")
        owner, schema = cursor.fetchone()
        if role.name == owner:
            raise GrantsError(
                f"{role.name!r} is the role running this command, the schema's owner: the service must connect "
                "as another role (docs/runbook.md, Database roles)"
            )
        cursor.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", [role.name])
        found = cursor.fetchone()
        statements += _create_or_update(role, exists=found is not None, create=create)
        if found is not None and found[0]:
            raise GrantsError(f"{role.name!r} is a superuser (or bypasses row security): grants do not bind it")
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND tableowner = %s", [schema, role.name])
        owned = sorted(row[0] for row in cursor.fetchall())
        if owned:
            raise GrantsError(
                f"{role.name!r} owns {', '.join(owned)}: an owner may do anything to its tables. "
                f"Give them to the owner role first (ALTER TABLE ... OWNER TO {owner})"
            )
        statements += _grants(role.name, schema)
        texts = [statement.as_string(connection.connection) for statement in statements]
        for text in texts:
            cursor.execute(text)
    return texts


def _create_or_update(role: ServiceRole, exists: bool, create: bool) -> list[sql.Composable]:
    name = sql.Identifier(role.name)
    if not exists and not create:
        raise GrantsError(f"there is no role {role.name!r}: create it (docs/runbook.md) or pass --create-role")
    if not create:
        return []
    if role.password is None:
        return [] if exists else [sql.SQL("CREATE ROLE {} NOLOGIN").format(name)]
    verb = "ALTER" if exists else "CREATE"
    return [sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(role.password))]


def _grants(role: str, schema: str) -> list[sql.Composable]:
    who, where = sql.Identifier(role), sql.Identifier(schema)
    statements: list[sql.Composable] = [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(where, who),
        # From nothing, so a privilege granted by hand earlier does not linger.
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(where, who),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(where, who),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(where, who),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(where, who),
    ]
    for table in APPEND_ONLY_TABLES:
        statements.append(sql.SQL("REVOKE UPDATE, DELETE ON {} FROM {}").format(sql.Identifier(schema, table), who))
    # Every role may run a new function unless an administrator revoked that from PUBLIC: granted
    # by name, so that audit writes work either way. It runs with the caller's rights.
    for function in FUNCTIONS:
        statements.append(sql.SQL("GRANT EXECUTE ON FUNCTION {}.{} TO {}").format(where, sql.SQL(function), who))
    for table in READ_ONLY_TABLES:
        target = sql.Identifier(schema, table)
        statements.append(sql.SQL("REVOKE INSERT, UPDATE, DELETE ON {} FROM {}").format(target, who))
    return statements
