"""Operator commands of this issue: create_client, register_model, build_demo_models, expire_sessions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from base.models import AuditRecord
from keys.models import ApiClient
from registry.models import ModelVersion
from sessions.models import KeySession
from tests.helpers import run_command


def test_create_client_prints_a_working_key_once_on_the_last_line(db, logreg):
    output = run_command("create_client", "acme")
    raw_key = output.strip().splitlines()[-1]
    client = ApiClient.objects.get(name="acme")
    assert client.api_keys.get().is_valid(raw_key)
    from rest_framework.test import APIClient

    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert http.get("/api/v1/models").status_code == 200
    assert AuditRecord.objects.filter(action="client.created", target_id="acme").count() == 1


@pytest.mark.parametrize("name", ["acme", "bad name", "../x"])
def test_create_client_refuses_duplicates_and_bad_names(db, name):
    ApiClient.objects.create(name="acme")
    with pytest.raises(CommandError):
        run_command("create_client", name)


def test_register_model_measures_sizes_and_adds_versions(db, bundles):
    folder = bundles["breast-cancer-logreg"].folder
    first = run_command("register_model", "lr", str(folder), "--description", "first")
    second = run_command("register_model", "lr", str(folder))
    assert "registered lr v1" in first
    assert "registered lr v2" in second
    versions = list(ModelVersion.objects.filter(name="lr").order_by("version"))
    assert [v.version for v in versions] == [1, 2]
    # Real sizes from a throwaway keygen, equal to what a data owner's keygen produces.
    assert versions[0].evaluation_keys_bytes == len(bundles["breast-cancer-logreg"].evaluation_keys)
    assert versions[0].input_ciphertext_bytes == len(bundles["breast-cancer-logreg"].encrypt(0))
    assert versions[0].description == "first"


def test_register_model_rejects_a_folder_without_a_bundle(db, tmp_path):
    with pytest.raises(CommandError, match=r"client\.zip"):
        run_command("register_model", "lr", str(tmp_path))
    with pytest.raises(CommandError, match="invalid model name"):
        run_command("register_model", "no/slashes", str(tmp_path))
    assert not ModelVersion.objects.exists()


def test_build_demo_models_builds_and_registers(db, tmp_path):
    output = run_command("build_demo_models", "--only", "breast-cancer-logreg", "--output", str(tmp_path))
    assert "breast-cancer-logreg v1" in output
    model = ModelVersion.objects.get(name="breast-cancer-logreg")
    assert model.input_features == 30
    assert (tmp_path / "breast-cancer-logreg" / "samples.npz").exists()
    # Registered with its scaler and the data set's feature names: data owners send raw rows.
    assert model.preprocessing
    assert model.feature_names[:2] == ["mean radius", "mean texture"]
    assert len(model.feature_names) == 30
    with pytest.raises(CommandError, match="unknown demo model"):
        run_command("build_demo_models", "--only", "nope")


def test_expire_sessions_ends_only_lapsed_ones(alice, logreg, open_session):
    lapsed, current = open_session(alice, logreg), open_session(alice, logreg)
    KeySession.objects.filter(pk=lapsed).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "expired 1 session(s)" in run_command("expire_sessions")
    assert KeySession.objects.get(pk=lapsed).status == "expired"
    assert KeySession.objects.get(pk=current).status == "active"
    assert "expired 0 session(s)" in run_command("expire_sessions")


def test_every_management_command_of_the_project_has_a_test():
    """A command added without a test that runs it fails here (netbox's coverage test, in spirit)."""
    import pathlib

    from django.core.management import get_commands

    ours = sorted(
        name
        for name, app in get_commands().items()
        if app in {"base", "keys", "registry", "sessions", "jobs", "actions", "compat", "dashboards"}
    )
    assert {"create_client", "register_model", "build_demo_models", "expire_sessions"} <= set(ours)
    test_sources = "".join(path.read_text() for path in pathlib.Path(__file__).parent.glob("test_*.py"))
    untested = [
        name
        for name in ours
        if f'run_command("{name}"' not in test_sources and f'call_command("{name}"' not in test_sources
    ]
    assert untested == []


def test_retire_model_falls_back_to_the_previous_version(alice, logreg, register):
    second = register("breast-cancer-logreg")
    assert "v2 retired" in run_command("retire_model", "breast-cancer-logreg", "--reason", "regression found")
    assert alice.http.get("/api/v1/models/breast-cancer-logreg").json()["version"] == 1
    assert "already retired" in run_command(
        "retire_model", "breast-cancer-logreg", "--model-version", "2", "--reason", "again"
    )
    second.refresh_from_db()
    assert second.status == "retired"
    assert AuditRecord.objects.filter(action="model.retired", reason="regression found").count() == 1
    with pytest.raises(CommandError):
        run_command("retire_model", "nothing", "--reason", "x")
