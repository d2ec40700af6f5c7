"""The compatibility layer in the admin: issuing and revoking tokens, retiring hybrid models."""

from __future__ import annotations

import re

from django.test import Client

from base.audit import Actor
from base.models import AuditRecord
from compat.models import CompatToken
from compat.services import issue_token, register_hybrid_model
from registry.models import ModelVersion

TESTS = Actor.system("tests")


def test_issue_compat_token_action_shows_it_once_and_revokes_the_old(staff_client, alice):
    old = issue_token(alice.client, TESTS, "tests")
    data = {"action": "issue_compat_token", "_selected_action": [alice.client.pk], "index": "0", "confirm": "yes"}
    page = staff_client.post("/admin/keys/apiclient/", {**data, "reason": "URL in a ticket"})
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    new = re.search(rb'<span id="new-compat-token">([^<]+)</span>', page.content).group(1).decode()
    http = Client()
    assert http.get(f"/compat/{new}/hybrid/list_models").status_code == 200
    assert http.get(f"/compat/{old}/hybrid/list_models").status_code == 401
    assert AuditRecord.objects.get(action="client.compat_token_issued", reason="URL in a ticket").actor == "sam"


def test_revoke_action_and_token_list_show_no_secret(staff_client, alice):
    raw = issue_token(alice.client, TESTS, "tests")
    listing = staff_client.get("/admin/compat/compattoken/")
    assert listing.status_code == 200
    assert raw.encode() not in listing.content
    token = CompatToken.objects.get()
    data = {"action": "revoke", "_selected_action": [token.pk], "index": "0", "confirm": "yes", "reason": "leaked"}
    staff_client.post("/admin/compat/compattoken/", data)
    assert Client().get(f"/compat/{raw}/hybrid/list_models").status_code == 401


def test_retire_action_retires_every_module(staff_client, hybrid_build):
    rows = register_hybrid_model("mlp", hybrid_build.server_folder, "", TESTS)
    data = {"action": "retire", "_selected_action": [rows[0].pk], "index": "0", "confirm": "yes", "reason": "old"}
    staff_client.post("/admin/compat/hybridmodule/", data)
    assert set(ModelVersion.objects.filter(name__startswith="mlp--").values_list("status", flat=True)) == {"retired"}
    assert staff_client.get("/admin/compat/hybridmodule/").status_code == 200
