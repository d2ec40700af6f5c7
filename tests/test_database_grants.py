"""Least privilege against the real PostgreSQL: the service role appends audit records, never rewrites them.

Roles are cluster-wide, but CREATE ROLE is transactional in PostgreSQL: each test's roles
vanish with the test's transaction. ``SET ROLE`` makes this connection the service role,
as a pod connecting with the service's credentials would be.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from base import audit, audit_checkpoints
from base.audit import Actor
from base.database_roles import ServiceRole, apply_grants
from base.models import AuditRecord
from tests.helpers import post_bytes

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="roles are PostgreSQL's")

ROLE = "moai_h12_test_service"
TABLE = AuditRecord._meta.db_table


def grants(*args: str) -> str:
    out = io.StringIO()
    call_command("apply_database_grants", *args, stdout=out)
    return out.getvalue()


@contextmanager
def as_role(name: str) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{name}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


def refused(statement: str) -> bool:
    """Whether PostgreSQL refuses the statement for want of privilege (other errors propagate)."""
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    return "permission denied" in str(caught.value)


@pytest.fixture
def service_role(db: None) -> str:
    output = grants("--role", ROLE, "--create-role")
    assert f'REVOKE UPDATE, DELETE ON "public"."{TABLE}" FROM "{ROLE}"' in output
    return ROLE


def test_the_service_role_cannot_update_delete_or_truncate_audit_records(service_role):
    audit.record(Actor.system(), "client.created", "client", "before")
    with as_role(service_role):
        written = audit.record(Actor.system(), "client.created", "client", "as-service")
        assert written.seq == 2
        assert refused(f"UPDATE {TABLE} SET reason = 'rewritten'")
        assert refused(f"DELETE FROM {TABLE} WHERE seq = 2")
        assert refused(f"TRUNCATE {TABLE}")
        assert refused("DELETE FROM django_migrations")
    assert AuditRecord.objects.count() == 2


def test_the_service_role_writes_audit_records_where_functions_are_not_public(db):
    """A hardened database where an administrator revoked EXECUTE on functions from PUBLIC: the
    grants name the audit chain's function, so the service role still writes records."""
    with connection.cursor() as cursor:
        cursor.execute("REVOKE EXECUTE ON FUNCTION moai_audit_chain_head(bigint) FROM PUBLIC")
    output = grants("--role", ROLE, "--create-role")
    assert f'GRANT EXECUTE ON FUNCTION "public".moai_audit_chain_head(bigint) TO "{ROLE}"' in output
    with as_role(ROLE):
        assert audit.record(Actor.system(), "client.created", "client", "as-service").seq == 1


def test_the_service_works_end_to_end_as_the_service_role(
    service_role, alice, logreg, bundles, django_capture_on_commit_callbacks
):
    """Open a session, run a job through the worker's code, read the result, end the session, verify."""
    bundle = bundles[logreg.name]
    with as_role(service_role):
        with django_capture_on_commit_callbacks(execute=True):
            opened = post_bytes(alice.http, f"/api/v1/models/{logreg.name}/sessions", bundle.evaluation_keys)
        assert opened.status_code == 201, opened.content
        context_id = opened.json()["context_id"]
        with django_capture_on_commit_callbacks(execute=True):
            submitted = post_bytes(alice.http, f"/api/v1/sessions/{context_id}/jobs", bundle.encrypt(0))
        assert submitted.status_code == 202, submitted.content
        job_id = submitted.json()["job_id"]
        assert alice.http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
        result = alice.http.get(f"/api/v1/jobs/{job_id}/result")
        assert bundle.decrypt_label(b"".join(result.streaming_content)) == int(bundle.samples["clear_prediction"][0])
        with django_capture_on_commit_callbacks(execute=True):
            assert alice.http.delete(f"/api/v1/sessions/{context_id}").status_code in (200, 204)
        out = io.StringIO()
        call_command("verify_audit_log", "--checkpoints", stdout=out)
    assert "audit log intact" in out.getvalue()
    actions = list(AuditRecord.objects.order_by("seq").values_list("action", flat=True))
    assert {"session.created", "job.submitted", "session.invalidated"} <= set(actions), actions


def test_a_role_that_grants_cannot_bind_is_refused(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (owner,) = cursor.fetchone()
        cursor.execute(f'CREATE ROLE "{ROLE}_super" SUPERUSER NOLOGIN')
        cursor.execute(f'CREATE ROLE "{ROLE}_owner" NOLOGIN')
        cursor.execute(f'ALTER TABLE {TABLE} OWNER TO "{ROLE}_owner"')
    with pytest.raises(CommandError, match="the schema's owner"):
        grants("--role", owner)
    with pytest.raises(CommandError, match="is a superuser"):
        grants("--role", f"{ROLE}_super")
    with pytest.raises(CommandError, match=f"owns {TABLE}"):
        grants("--role", f"{ROLE}_owner")
    with pytest.raises(CommandError, match="there is no role"):
        grants("--role", f"{ROLE}_missing")


def test_the_role_and_its_password_come_from_the_service_url(db, settings):
    settings.MOAI_SERVICE_DATABASE_URL = f"postgres://{ROLE}:first%20secret@db.example:5432/moai"
    output = grants("--create-role")
    assert f'CREATE ROLE "{ROLE}" LOGIN PASSWORD ...' in output
    assert "first secret" not in output
    settings.MOAI_SERVICE_DATABASE_URL = f"postgres://{ROLE}:second@db.example:5432/moai"
    assert f'ALTER ROLE "{ROLE}" LOGIN PASSWORD ...' in grants("--create-role")
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [ROLE])
        assert cursor.fetchone() == (True,)


@pytest.fixture
def login_role(transactional_db: None) -> Iterator[str]:
    """A service role that real processes log in as; committed, so dropped again afterwards."""
    name = f"{ROLE}_login"
    apply_grants(ServiceRole(name, password="service-secret"), create=True)
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f'DROP OWNED BY "{name}"')  # its privileges (it owns nothing)
        cursor.execute(f'DROP ROLE "{name}"')


@pytest.mark.e2e
def test_gunicorn_and_a_worker_run_as_the_service_role(login_role, make_tenant, logreg, bundles, tmp_path):
    """The whole service as separate processes connected as the service role: a prediction, then
    the same role refused an UPDATE, DELETE or TRUNCATE of audit records."""
    import psycopg
    from django.conf import settings

    from moai_client import MoaiClient
    from scripts.stack import Stack, free_port

    params = connection.settings_dict
    host = f"{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}"
    url = f"postgres://{login_role}:service-secret@{host}/{params['NAME']}"
    env = {
        "DJANGO_SETTINGS_MODULE": "moai_site.settings",
        "DATABASE_URL": url,
        "REDIS_URL": settings.REDIS_URL or "",
        "MOAI_DATA_DIR": str(settings.MOAI_DATA_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
        "MOAI_AUDIT_KEY": settings.MOAI_AUDIT_KEY,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "MOAI_WORKER_POOL_SIZE": "1",
        "MOAI_WORKER_METRICS_PORT": str(free_port()),
    }
    tenant = make_tenant("service-role-owner")
    samples = bundles[logreg.name].samples
    # The shared data folder may hold checkpoints of earlier tests' databases, flushed since.
    checkpoints = settings.MOAI_DATA_DIR / "blobs" / audit_checkpoints.FOLDER
    shutil.rmtree(checkpoints, ignore_errors=True)
    with Stack(env, tmp_path / "logs", concurrency=1) as stack:
        client = MoaiClient(stack.url, tenant.api_key, tmp_path / "keys", progress=False, timeout=60)
        session = client.open_session(logreg.name)
        prediction = client.predict(session, samples["X"][:2], timeout=180)
        assert prediction.labels.tolist() == samples["clear_prediction"][:2].tolist()
        client.close_session(session.context_id)
    actions = set(AuditRecord.objects.values_list("action", flat=True))
    assert {"session.created", "job.submitted", "session.invalidated"} <= actions, actions
    out = io.StringIO()
    call_command("verify_audit_log", "--checkpoints", stdout=out)
    assert "audit log intact" in out.getvalue()
    with psycopg.connect(url, autocommit=True) as service:
        for statement in (f"UPDATE {TABLE} SET reason = 'x'", f"DELETE FROM {TABLE}", f"TRUNCATE {TABLE}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                service.execute(statement)
    shutil.rmtree(checkpoints, ignore_errors=True)
