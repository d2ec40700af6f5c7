"""Configuration from the environment, including *_FILE secrets, and the services under test."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection

from base.env import ConfigError, env_bool, env_int, env_str
from tests import settings as test_settings


def test_file_variant_is_read_and_stripped(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.delenv("MOAI_X", raising=False)
    monkeypatch.setenv("MOAI_X_FILE", str(secret))
    assert env_str("MOAI_X") == "s3cret"
    monkeypatch.setenv("MOAI_X", "direct")
    assert env_str("MOAI_X") == "direct"


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("MOAI_N", "ten")
    with pytest.raises(ConfigError):
        env_int("MOAI_N", 1)
    monkeypatch.setenv("MOAI_N", "0")
    with pytest.raises(ConfigError):
        env_int("MOAI_N", 1, minimum=1)
    monkeypatch.setenv("MOAI_B", "maybe")
    with pytest.raises(ConfigError):
        env_bool("MOAI_B", False)
    monkeypatch.setenv("MOAI_MISSING_FILE", "/nonexistent/file")
    with pytest.raises(ConfigError):
        env_str("MOAI_MISSING")


def test_ci_runs_against_real_postgresql_and_redis(db):
    if not test_settings.REQUIRE:
        pytest.skip("only enforced when CI or MOAI_TEST_REQUIRE_SERVICES is set")
    assert connection.vendor == "postgresql"
    assert settings.REDIS_URL
    assert settings.CELERY_BROKER_URL.startswith("redis://")


def test_the_audit_key_is_required_in_production_and_may_come_from_a_file(tmp_path):
    import os
    import subprocess
    import sys

    key_file = tmp_path / "audit-key"
    key_file.write_text("k" * 64 + "\n")

    def settings_with(**env: str) -> subprocess.CompletedProcess[str]:
        base = {"PATH": os.environ["PATH"], "DEBUG": "0", "SECRET_KEY": "s" * 50, "MOAI_DATA_DIR": str(tmp_path)}
        code = "from moai_site import settings; print(settings.MOAI_AUDIT_KEY, settings.MOAI_AUDIT_PREVIOUS_KEYS)"
        return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True)

    assert "MOAI_AUDIT_KEY must be set when DEBUG is off" in settings_with().stderr
    assert "at least 32 characters" in settings_with(MOAI_AUDIT_KEY="short").stderr
    done = settings_with(MOAI_AUDIT_KEY_FILE=str(key_file), MOAI_AUDIT_PREVIOUS_KEYS="a" * 32 + "," + "b" * 32)
    assert done.stdout.split(" ", 1) == ["k" * 64, f"['{'a' * 32}', '{'b' * 32}']\n"], done.stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "False"),
        ({"MOAI_TLS_CERT": "/any/cert.pem"}, "True"),
        ({"MOAI_TLS_CERT": "/c", "MOAI_HTTPS": "0"}, "False"),
    ],
)
def test_https_hardening_is_on_whenever_gunicorn_serves_tls(tmp_path, extra, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOAI_TLS", "MOAI_HTTPS"))}
    env.update(DEBUG="1", MOAI_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="moai_site.settings", **extra)
    code = "from django.conf import settings; print(settings.MOAI_HTTPS, getattr(settings, 'SECURE_HSTS_SECONDS', 0))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == expected
    assert (int(out[1]) > 0) == (expected == "True")
