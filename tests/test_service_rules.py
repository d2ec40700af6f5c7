"""Input rules live in the services: a caller other than the command (here the test itself) is refused too."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from actions.services import end_selected_sessions, rotate_client_keys, set_client_active
from base.audit import Actor
from base.models import AuditRecord
from base.rules import RuleError
from keys.models import ApiClient
from keys.services import create_client, rotate_api_key
from registry.models import ModelVersion
from registry.services import register_model, retire_model
from sessions.models import KeySession
from sessions.services import lift_suspension

ACTOR = Actor.system("tests")


@pytest.mark.parametrize("name", ["bad name", "../x", "", "naïve"])
def test_create_client_refuses_a_name_that_is_not_a_slug(db, name):
    with pytest.raises(RuleError, match="invalid client name"):
        create_client(name, ACTOR)
    with pytest.raises(CommandError, match="invalid client name"):
        call_command("create_client", name, stdout=io.StringIO())
    assert not ApiClient.objects.exists()
    assert not AuditRecord.objects.filter(action="client.created").exists()


def test_register_model_refuses_a_name_that_is_not_a_slug_before_measuring(db, bundles, tmp_path):
    with pytest.raises(RuleError, match="invalid model name"):
        register_model("bad name", bundles["breast-cancer-logreg"].folder, "", ACTOR)
    assert not ModelVersion.objects.exists()


def _calls(alice: Any, context_id: str) -> dict[str, Callable[[str], object]]:
    sessions = KeySession.objects.filter(pk=context_id)
    session = sessions.get()
    return {
        "rotate_api_key": lambda reason: rotate_api_key(alice.client, ACTOR, reason),
        "rotate_client_keys": lambda reason: rotate_client_keys(alice.client, ACTOR, reason),
        "disable": lambda reason: set_client_active(alice.client, False, ACTOR, reason),
        "enable": lambda reason: set_client_active(alice.client, True, ACTOR, reason),
        "end_selected_sessions": lambda reason: end_selected_sessions(sessions, "test", "invalidated", ACTOR, reason),
        "lift_suspension": lambda reason: lift_suspension(session, ACTOR, reason),
        "retire_model": lambda reason: retire_model(session.model_version, ACTOR, reason),
    }


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_actions_on_record_refuse_a_blank_reason_and_change_nothing(alice, logreg, open_session, reason):
    context_id = open_session(alice, logreg)
    before = AuditRecord.objects.count()
    for name, call in _calls(alice, context_id).items():
        with pytest.raises(RuleError, match="a reason must say why"):
            call(reason)
        assert AuditRecord.objects.count() == before, name
    assert KeySession.objects.get(pk=context_id).status == "active"
    alice.client.refresh_from_db()
    assert alice.client.is_active
    assert alice.client.keys_rotated_at is None
    assert alice.http.get("/api/v1/models").status_code == 200


def test_the_reason_is_recorded_without_surrounding_blanks(alice):
    set_client_active(alice.client, False, ACTOR, "  unpaid invoice \n")
    assert AuditRecord.objects.get(action="client.disabled").reason == "unpaid invoice"


@pytest.mark.parametrize(
    "command",
    [
        ["disable_client", "alice"],
        ["enable_client", "alice"],
        ["rotate_api_key", "alice"],
        ["rotate_client_keys", "alice"],
        ["invalidate_sessions", "--client", "alice"],
        ["retire_model", "breast-cancer-logreg"],
    ],
)
def test_commands_show_the_services_refusal(alice, logreg, command):
    before = AuditRecord.objects.count()
    with pytest.raises(CommandError, match="a reason must say why"):
        call_command(*command, "--reason", "  ", stdout=io.StringIO())
    assert AuditRecord.objects.count() == before
