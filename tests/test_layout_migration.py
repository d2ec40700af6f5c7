"""Upgrading a deployment from before the apps were layered: its rows survive the move.

A database of its own is migrated to the migration state of main at commit 1e9352d (before
Job left the app labelled ``inference`` for ``jobs``), given a row of every kind, then
migrated forward to today's leaves; the rows must read back through today's models, the
table ``inference_job`` must be the one that holds them (no table rebuilt or renamed), and
the permission staff were given on jobs must still be theirs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

# The leaves of the project's own apps at commit 1e9352d; the vendors' apps are at their
# leaves, which this change does not touch.
LEAVES_AT_1E9352D = [
    ("ops", "0005_audit_sequence_unique"),
    ("keys", "0003_api_client_verbose_name"),
    ("inference", "0008_model_warmup_input"),
    ("key_sessions", "0004_suspension"),
    ("compat", "0001_initial"),
]
OURS = {app for app, _ in LEAVES_AT_1E9352D} | {"jobs"}
ALIAS = "layout_upgrade"
WHEN = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def upgrade_db(django_db_blocker: Any) -> Iterator[Any]:
    """An empty PostgreSQL database next to the test database, as the connection ``ALIAS``."""
    default = connections["default"].settings_dict
    if connections["default"].vendor != "postgresql":
        pytest.skip("the upgrade is checked on PostgreSQL, the production database")
    name = f"{default['NAME']}_layout"[:63]
    admin = {"host": default["HOST"] or "127.0.0.1", "port": default["PORT"] or 5432, "user": default["USER"]}
    if default["PASSWORD"]:
        admin["password"] = default["PASSWORD"]

    def run(statement: str) -> None:
        with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
            conn.execute(statement)

    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run(f'CREATE DATABASE "{name}"')
    connections.settings[ALIAS] = {**connections.settings["default"], "NAME": name}
    try:
        with django_db_blocker.unblock():
            yield connections[ALIAS]
            connections[ALIAS].close()
    finally:
        del connections[ALIAS]
        del connections.settings[ALIAS]
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(connection: Any, targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


def targets_at_1e9352d(connection: Any) -> list[tuple[str, str]]:
    graph = MigrationExecutor(connection).loader.graph
    return LEAVES_AT_1E9352D + [leaf for leaf in graph.leaf_nodes() if leaf[0] not in OURS]


def fill_old_layout(apps: Any) -> dict[str, Any]:
    """One row of each kind, written through the models as they were at 1e9352d."""
    assert "job" in apps.all_models["inference"], "the old state must still have Job in inference"
    client = apps.get_model("keys", "ApiClient").objects.using(ALIAS).create(name="upgrader")
    model = apps.get_model("inference", "ModelVersion").objects.using(ALIAS).create(
        name="logreg", version=1, client_zip="models/logreg/v1/client.zip", server_zip="models/logreg/v1/server.zip",
        server_sha256="a" * 64, evaluation_keys_bytes=984, input_ciphertext_bytes=7000, output_ciphertext_bytes=8000,
        input_features=4,
    )  # fmt: skip
    session = (
        apps.get_model("key_sessions", "KeySession")
        .objects.using(ALIAS)
        .create(
            client=client,
            model_version=model,
            key_fingerprint="b" * 64,
            created_at=WHEN,
            expires_at=WHEN + timedelta(1),
        )
    )
    job = apps.get_model("inference", "Job").objects.using(ALIAS).create(
        id=uuid.uuid4(), session=session, client=client, model_version=model, input_count=2, inputs_sha256="c" * 64,
        idempotency_key="upgrade-1", attempts=1, status="succeeded", result_attempt=1,
    )  # fmt: skip
    record = apps.get_model("ops", "AuditRecord").objects.using(ALIAS).create(
        seq=1, at=WHEN, actor_kind="system", actor="upgrade-test", action="job.submitted", target_type="job",
        target_id=str(job.id), key_id="k1", prev_digest="0" * 64, digest="d" * 64,
    )  # fmt: skip
    # Content types and permissions are made after migrating (post_migrate): here by hand,
    # as an existing deployment has them, with a staff group allowed to cancel jobs.
    content_types = apps.get_model("contenttypes", "ContentType").objects.using(ALIAS)
    content_type = content_types.create(app_label="inference", model="job")
    permission = (
        apps.get_model("auth", "Permission")
        .objects.using(ALIAS)
        .create(codename="cancel_job", name="Can cancel queued jobs", content_type=content_type)
    )
    group = apps.get_model("auth", "Group").objects.using(ALIAS).create(name="on-call")
    group.permissions.add(permission)
    return {"client": client.pk, "model": model.pk, "session": session.pk, "job": job.pk, "record": record.pk}


def test_a_database_of_1e9352d_migrates_to_the_layered_apps_with_its_rows(upgrade_db):
    from django.contrib.auth.models import Group

    from base.models import AuditRecord
    from jobs.models import Job
    from keys.models import ApiClient
    from registry.models import ModelVersion
    from sessions.models import KeySession

    old_apps = migrate(upgrade_db, targets_at_1e9352d(upgrade_db))
    ids = fill_old_layout(old_apps)

    new_apps = migrate(upgrade_db, MigrationExecutor(upgrade_db).loader.graph.leaf_nodes())

    assert "job" not in new_apps.all_models["inference"]
    assert new_apps.get_model("jobs", "Job")._meta.db_table == "inference_job"
    job = Job.objects.using(ALIAS).select_related("session", "client", "model_version").get(pk=ids["job"])
    assert (job.status, job.input_count, job.idempotency_key, job.result_attempt) == ("succeeded", 2, "upgrade-1", 1)
    assert job.client.pk == ids["client"]
    assert job.client.name == "upgrader"
    assert job.session.pk == ids["session"]
    assert job.session.model_version_id == ids["model"]
    assert job.model_version.pk == ids["model"]
    assert str(job.model_version) == "logreg v1"
    assert ModelVersion.objects.using(ALIAS).get(pk=ids["model"]).evaluation_keys_bytes == 984
    assert KeySession.objects.using(ALIAS).get(pk=ids["session"]).jobs.get().pk == ids["job"]
    assert ApiClient.objects.using(ALIAS).get(pk=ids["client"]).jobs.count() == 1
    assert AuditRecord.objects.using(ALIAS).get(pk=ids["record"]).target_id == str(ids["job"])
    # The group's permission followed the model to its new label: the same row, relabelled.
    group = Group.objects.using(ALIAS).get(name="on-call")
    assert [(p.content_type.app_label, p.codename) for p in group.permissions.all()] == [("jobs", "cancel_job")]
    with upgrade_db.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE tablename IN ('inference_job', 'jobs_job')")
        assert [row[0] for row in cursor.fetchall()] == ["inference_job"]
    # A new job is written to the same table the old rows live in.
    Job.objects.using(ALIAS).create(
        session_id=ids["session"], client_id=ids["client"], model_version_id=ids["model"], input_count=1,
        inputs_sha256="e" * 64,
    )  # fmt: skip
    assert Job.objects.using(ALIAS).count() == 2
    # And back, as a rollback of the code does it: the rows stay, the label returns.
    migrate(upgrade_db, targets_at_1e9352d(upgrade_db))
    with upgrade_db.cursor() as cursor:
        cursor.execute("SELECT app_label FROM django_content_type WHERE model = 'job'")
        assert cursor.fetchall() == [("inference",)]
        cursor.execute("SELECT count(*) FROM inference_job")
        assert cursor.fetchone() == (2,)


@pytest.mark.django_db
def test_the_models_and_their_migrations_agree():
    """A state-only move must leave Django's state exactly as the models are: no migration missing."""
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # SystemExit(1) when one is missing
