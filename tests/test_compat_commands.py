"""Operator commands of the compatibility layer: tokens and hybrid models."""

from __future__ import annotations

import pytest
from django.core.management.base import CommandError
from django.test import Client

from base.models import AuditRecord
from compat.models import HybridModule
from registry.models import ModelVersion
from tests.helpers import run_command


def test_issue_and_revoke_compat_token(alice):
    token = (
        run_command("issue_compat_token", "alice", "--reason", "moving from the example server")
        .strip()
        .splitlines()[-1]
    )
    http = Client()
    assert http.get(f"/compat/{token}/hybrid/list_models").status_code == 200
    again = run_command("issue_compat_token", "alice", "--reason", "rotation").strip().splitlines()[-1]
    assert http.get(f"/compat/{token}/hybrid/list_models").status_code == 401
    assert "revoked 1 compatibility token(s)" in run_command("revoke_compat_token", "alice", "--reason", "leaked")
    assert http.get(f"/compat/{again}/hybrid/list_models").status_code == 401
    assert AuditRecord.objects.filter(action="client.compat_token_issued").count() == 2
    assert AuditRecord.objects.get(action="client.compat_token_revoked").reason == "leaked"
    with pytest.raises(CommandError):
        run_command("issue_compat_token", "nobody", "--reason", "x")


def test_register_and_retire_hybrid_model(db, hybrid_build, tmp_path):
    output = run_command("register_hybrid_model", "mlp", str(hybrid_build.server_folder))
    assert "module seq.0 input (1, 30) as mlp--seq-0--po_1_30_pc" in output
    assert HybridModule.objects.filter(model_name="mlp").count() == 2
    # Registering again adds a version to each module, as register_model does for one model.
    run_command("register_hybrid_model", "mlp", str(hybrid_build.server_folder))
    assert ModelVersion.objects.get(name="mlp--seq-2--po_1_16_pc", version=2).status == "active"
    assert "retired 2 module version(s)" in run_command("retire_hybrid_model", "mlp", "--reason", "superseded")
    assert ModelVersion.objects.filter(name__startswith="mlp--", status="active").count() == 2  # the v1s
    with pytest.raises(CommandError, match="no hybrid model"):
        run_command("retire_hybrid_model", "nothing", "--reason", "x")
    folder = tmp_path / "export"
    folder.mkdir()
    with pytest.raises(CommandError, match="no <module>/<shape> folders"):
        run_command("register_hybrid_model", "empty", str(folder))
    (folder / "seq.0" / "not-a-shape").mkdir(parents=True)
    with pytest.raises(CommandError, match="not an input-shape folder"):
        run_command("register_hybrid_model", "bad", str(folder))
    with pytest.raises(CommandError, match="invalid model name"):
        run_command("register_hybrid_model", "bad name", str(hybrid_build.server_folder))
    assert AuditRecord.objects.filter(action="hybrid_model.registered", target_id="mlp").count() == 2
